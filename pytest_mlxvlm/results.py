"""The data vocabulary: metrics, samples, case results, comparisons and cache steps.

Every other module imports its words from here; this module imports nothing of the package
(and nothing heavy), so it is safe to import anywhere, including at pytest start-up.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Callable

# One schema version per file kind.
REPORT_SCHEMA = 1  # --mlx-json reports
BASELINE_SCHEMA = 1  # baselines/<chip>/<model>.json
HISTORY_SCHEMA = 1  # --mlx-history lines
MERGED_SCHEMA = "pytest-mlxvlm-merged/1"  # pytest-mlxvlm merge --json
SERVER_SIDE = "server"  # CaseResult.side of every case measured through a server


@dataclass(frozen=True)
class Metric:
    """A measured quantity and which way is better.

    One vocabulary: ``name`` is the JSON field (mlx-lm's and mlx-vlm's own names), ``label``
    what tables and messages call it, ``column`` the results table's heading where it is
    shorter than the label; a person may name a metric by any of the three (``metric_name``).
    """

    name: str
    label: str
    unit: str
    better: str  # "higher", "lower" or "exact" (token counts: any change is a new workload)
    column: str = ""  # the results table's heading, where it differs from the label

    @property
    def heading(self) -> str:
        """The metric's column heading in the results table."""
        return self.column or self.label


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("end_to_end_tps", "Speed", "tok/s", "higher"),
        Metric("generation_tps", "Decode", "tok/s", "higher"),
        Metric("prompt_tps", "Prefill", "tok/s", "higher"),
        Metric("time_s", "Time", "s", "lower"),
        Metric("ttft_s", "TTFT", "s", "lower"),
        Metric("preprocess_s", "Preprocess", "s", "lower"),
        Metric("prefill_s", "Prefill time", "s", "lower"),
        Metric("peak_memory", "Peak memory", "GB", "lower", column="Peak mem"),
        Metric("prompt_tokens", "Prompt tokens", "tokens", "exact"),
        Metric("image_tokens", "Image tokens", "tokens", "exact", column="Image tok"),
        Metric("generation_tokens", "Tokens", "tokens", "exact"),
    )
}
EXACT_METRICS: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.better == "exact")
GATED_METRICS: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.better != "exact")


def _fold(text: str) -> str:
    """A metric's name folded for lookup: lower case, letters and digits only."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


_BY_FOLDED: dict[str, str] = {
    _fold(spelling): m.name for m in METRICS.values() for spelling in (m.name, m.label, m.heading)
}


def metric_name(text: str) -> str | None:
    """The JSON field of a metric named by its field, label or table heading, in any case and
    with any spacing: ``Speed``, ``decode``, ``Peak mem``, ``peak-memory``, ``ttft_s``.
    None when no metric has that name."""
    return _BY_FOLDED.get(_fold(text))


def metric_names(gated_only: bool = False) -> str:
    """The metrics as a person may name them: ``Speed (end_to_end_tps), Decode (...)``."""
    names = GATED_METRICS if gated_only else tuple(METRICS)
    return ", ".join(f"{METRICS[n].label} ({n})" for n in names)


# -- serialisation: one helper for every record ------------------------------------------------

def _key(f: Any) -> str:
    return f.metadata.get("key", f.name)


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if hasattr(value, "to_dict") else record_dict(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def record_dict(record: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict: fields under their ``key`` metadata, ``skip`` ones left out."""
    return {_key(f): _encode(getattr(record, f.name))
            for f in fields(record) if not f.metadata.get("skip")}


def from_record(cls: Any, data: dict[str, Any]) -> Any:
    """The dataclass ``cls`` from a dict as ``record_dict`` wrote it; extra keys are ignored,
    fields with a ``decode`` metadata function are rebuilt with it."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = _key(f)
        if f.metadata.get("skip") or key not in data:
            continue
        value = data[key]
        decode: Callable[[Any], Any] | None = f.metadata.get("decode")
        kwargs[f.name] = decode(value) if decode is not None and value is not None else value
    return cls(**kwargs)


def _list_of(cls: Any) -> Callable[[Any], list[Any]]:
    return lambda items: [cls.from_dict(i) for i in items]


def _pairs(data: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: tuple(v) for k, v in data.items()}


class Record:
    """``to_dict`` / ``from_dict`` for a dataclass through the one helper."""

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return from_record(cls, data)


# -- summaries ----------------------------------------------------------------------------------

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


def summarize(values: Any) -> Summary:
    """Summarize samples (linear-interpolation quartiles, as numpy's); needs at least one."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("no samples to summarize")
    if len(data) > 1:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
        stdev = statistics.stdev(data)
    else:
        q1 = q3 = data[0]
        stdev = 0.0
    return Summary(
        n=len(data),
        median=float(statistics.median(data)),
        mean=math.fsum(data) / len(data),
        stdev=stdev,
        minimum=min(data),
        maximum=max(data),
        iqr=q3 - q1,
    )


# -- what is measured ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInput(Record):
    """A clip and how mlx-vlm samples it: at ``fps`` frames a second, at most ``max_frames``."""

    path: str
    fps: float
    max_frames: int

    @property
    def id(self) -> str:
        """``16f@2fps``: the case's label and test id."""
        return f"{self.max_frames}f@{self.fps:g}fps"


@dataclass(frozen=True)
class GenerationRequest:
    """One generation to measure."""

    image: Any  # a path, a PIL image, a list of them, or None for text only
    prompt: str
    max_tokens: int
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    capture_logprobs: bool = False  # keep the first token's log-probabilities (cache checks)
    video: VideoInput | None = None  # a clip instead of (or beside) the image

    @property
    def images(self) -> list[Any]:
        """``image`` as a list: [] for text only, the items of a list or tuple, else [image]."""
        return image_list(self.image)


def image_list(image: Any) -> list[Any]:
    """A request's image field as a list: [] for None, the items of a list or tuple, else [image]."""
    if image is None:
        return []
    return list(image) if isinstance(image, (list, tuple)) else [image]


_NOT_SAVED = {"skip": True}


@dataclass
class Sample(Record):
    """Everything measured in one generation."""

    time_s: float  # wall time: preprocessing, vision encoder, prefill and decode
    ttft_s: float  # from the call to the first generated token
    preprocess_s: float  # image load and processor (resize, patchify, tokenize)
    prefill_s: float  # vision encoder and prompt prefill, as timed by mlx-vlm
    prompt_tokens: int  # all prompt tokens, cached ones included
    cached_tokens: int  # prompt tokens answered from a prefix cache
    image_tokens: int  # image placeholder tokens (a video's, for a clip)
    generation_tokens: int
    prompt_tps: float  # computed (uncached) prompt tokens / prefill_s
    generation_tps: float  # (tokens - 1) / (time of last token - time of first token)
    end_to_end_tps: float  # generation_tokens / time_s: the "Speed" column
    peak_memory: float  # GB, as mlx-vlm reports it; reset before the run
    token_ids: list[int] = field(default_factory=list, repr=False, metadata=_NOT_SAVED)
    input_ids: list[int] = field(default_factory=list, repr=False, metadata=_NOT_SAVED)
    first_logprobs: Any = field(default=None, repr=False, metadata=_NOT_SAVED)


SAMPLE_FIGURES = frozenset(f.name for f in fields(Sample) if f.type in ("float", "int"))  # summary()'s names


@dataclass
class MetricComparison(Record):
    """One metric of one case against its baseline (or the base side of an A/B run)."""

    metric: str
    baseline: float
    current: float
    change: float  # (current - baseline) / baseline, signed
    tolerance: float
    p_value: float | None
    verdict: str  # "ok", "regressed", "improved", "undecidable" (too few samples to ever be significant);
    # A/B: "inconclusive" (a tok/s interval too wide to say)
    n_baseline: int
    n_current: int
    detectable: float | None  # smallest regression these sample sizes and spread can detect
    sessions: int = 1  # sessions behind the baseline
    drift: float | None = None  # session-to-session spread of the baseline (log sd)
    allowed: float = 0.0  # the change the baseline's own drift allows (prediction interval)
    drift_alpha: float | None = None  # the level of the drift allowance (family-wise share)
    interval: list[float] | None = None  # confidence interval of the change (A/B runs)
    method: str = ""  # the test behind p_value, when not the default

    @property
    def worse_by(self) -> float:
        """The change in the bad direction (positive = worse)."""
        return -self.change if METRICS[self.metric].better == "higher" else self.change


@dataclass
class CaseComparison(Record):
    """All metrics of one case against its baseline, and the verdict."""

    key: str
    status: str  # "pass", "regressed", "improved", "inconclusive", "undecidable", "workload-changed", "not-comparable", "new"
    confirmed: bool | None = None  # for a regression: did the re-measurement confirm it?
    note: str = ""
    workload_changes: dict[str, tuple[Any, Any]] = field(
        default_factory=dict, metadata={"decode": _pairs})
    library_changes: dict[str, tuple[Any, Any]] = field(
        default_factory=dict, metadata={"decode": _pairs})
    metrics: list[MetricComparison] = field(
        default_factory=list, metadata={"decode": _list_of(MetricComparison)})
    gated: bool = True  # False: compared and reported, but not allowed to fail the test
    # an inconclusive A/B case: the pairs (and seconds) more that would likely settle it, None
    # when more pairs are unlikely to (its change sits near the tolerance)
    more_pairs: int | None = None
    more_seconds: float | None = None

    @property
    def regressed(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "regressed"]


def _comparison(data: dict[str, Any]) -> CaseComparison:
    return CaseComparison.from_dict(data)


# Verdicts of a work comparison (gate/work.py): exact, no statistics.
WORK_VERDICTS = ("same", "added", "removed", "views", "not comparable", "unavailable", "new")
WORK_MODES = ("off", "report", "gate")  # --mlx-work


@dataclass
class WorkCheck(Record):
    """A case's work profile against its stored baseline's or the A/B base's."""

    verdict: str  # one of WORK_VERDICTS; "added" is a regression
    against: str  # "baseline" or "base"
    description: str  # "+60 Multiply, +1 eval per decode step", "not comparable: mlx 0.32.4 → 0.33.0"
    outputs: str = ""  # "outputs identical", "outputs differ from token 17"; "" when not compared
    outputs_differ_at: int | None = None  # the first token that differs, when they differ
    gated: bool = True  # False: reported only (--mlx-work report)
    diff: dict[str, Any] = field(default_factory=dict)  # WorkDiff.to_dict()

    @property
    def failed(self) -> bool:
        """Added work where the work is gated."""
        return self.gated and self.verdict == "added"


def _work_check(data: dict[str, Any]) -> WorkCheck:
    return WorkCheck.from_dict(data)


@dataclass
class CaseResult(Record):
    """The samples of one (model, resolution) case after warmup."""

    model: str
    resolution: str
    samples: list[Sample] = field(metadata={"decode": _list_of(Sample)})
    warmup: list[Sample] = field(
        default_factory=list, metadata={"key": "warmup_samples", "decode": _list_of(Sample)})
    workload: dict[str, Any] = field(default_factory=dict)
    load_time_s: float = 0.0
    test_id: str = ""
    outcome: str | None = None  # the test's outcome, once known
    case_key: str = ""  # the test's id without the model: the key of its baseline
    comparison: CaseComparison | None = field(default=None, metadata={"decode": _comparison})
    bandwidth: dict[str, float] | None = None  # decode's bandwidth limit, when known
    side: str = ""  # "" in-process or single-sided; "base" / "head" in an A/B run; SERVER_SIDE
    work: dict[str, Any] | None = None  # the work profile (measure/work.py) and its token_ids
    work_check: WorkCheck | None = field(default=None, metadata={"decode": _work_check})

    def values(self, metric: str) -> list[float]:
        """One metric's value in each sample; ValueError naming the metrics for a name that is none."""
        if metric not in SAMPLE_FIGURES:
            raise ValueError(f"no metric {metric!r} in a sample; use one of {', '.join(sorted(SAMPLE_FIGURES))}")
        return [float(getattr(s, metric)) for s in self.samples]

    def summary(self, metric: str) -> Summary:
        return summarize(self.values(metric))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels; (0, 0) for a text-only case."""
        width, _, height = self.resolution.partition("x")
        return (int(width), int(height)) if width.isdigit() and height.isdigit() else (0, 0)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def rounds(self) -> int:
        """Measured rounds asked for (the workload's), or the samples kept."""
        return int(self.workload.get("rounds") or len(self.samples))

    @property
    def test_name(self) -> str:
        """The test function's name, without module and parameters."""
        return self.test_id.rpartition("::")[2].partition("[")[0]

    def to_dict(self) -> dict[str, Any]:
        data = record_dict(self)
        data.update(width=self.width, height=self.height,
                    summary={m: self.summary(m).to_dict() for m in METRICS})
        order = ("test_id", "outcome", "case_key", "model", "resolution", "width", "height",
                 "workload", "load_time_s", "summary", "samples", "warmup_samples", "comparison",
                 "bandwidth")
        return {**{k: data[k] for k in order}, **{k: v for k, v in data.items() if k not in order}}


# -- prefix-cache steps -------------------------------------------------------------------------

OUTCOMES = ("HIT", "PARTIAL", "MISS")


@dataclass
class StepResult(Record):
    """One cache step: what was expected, what the engine did, and the evidence."""

    step: str
    description: str
    expected: str
    outcome: str = "ERROR"
    cached_tokens: int = 0
    prompt_tokens: int = 0
    ttft_s: float = 0.0
    cold_ttft_s: float = 0.0
    correct: bool | None = None  # output equal to a cold run of the same input
    difference: str = ""
    error: str = ""
    passed: bool = False

    @property
    def speedup(self) -> float:
        return self.cold_ttft_s / self.ttft_s if self.ttft_s else 0.0

    @property
    def actual(self) -> str:
        if self.error:
            return "ERROR"
        return f"PARTIAL ({self.cached_tokens})" if self.outcome == "PARTIAL" else self.outcome

    def message(self) -> str:
        """Why the step failed, naming the step, the expected and actual outcome and the evidence."""
        if self.error:
            return f"step {self.step!r} ({self.description}): {self.error}"
        parts = [f"step {self.step!r} ({self.description}): expected {self.expected}, got {self.actual}"
                 f" - engine reported {self.cached_tokens} of {self.prompt_tokens} prompt tokens cached,"
                 f" TTFT {self.ttft_s * 1000:.1f} ms vs {self.cold_ttft_s * 1000:.1f} ms cold"]
        if self.correct is False:
            parts.append(f"WRONG OUTPUT: differs from a cold run of the same input ({self.difference})")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**record_dict(self), "actual": self.actual, "speedup": self.speedup}
