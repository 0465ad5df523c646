"""Summary statistics of repeated measurements."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Summary:
    """Median and spread of one metric's samples."""

    n: int
    median: float
    mean: float
    stdev: float
    minimum: float
    maximum: float
    iqr: float

    @property
    def cv(self) -> float:
        """Coefficient of variation (stdev / mean); 0 when the mean is 0."""
        return self.stdev / self.mean if self.mean else 0.0

    @property
    def spread(self) -> float:
        """Robust relative spread: interquartile range / median; 0 when the median is 0."""
        return self.iqr / self.median if self.median else 0.0

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "cv": self.cv}


def summarize(values: Sequence[float]) -> Summary:
    """Summarize samples; needs at least one."""
    if not values:
        raise ValueError("no samples to summarize")
    data = np.asarray(values, dtype=float)
    return Summary(
        n=int(data.size),
        median=float(np.median(data)),
        mean=float(data.mean()),
        stdev=float(data.std(ddof=1)) if data.size > 1 else 0.0,
        minimum=float(data.min()),
        maximum=float(data.max()),
        iqr=float(sps.iqr(data)),
    )
