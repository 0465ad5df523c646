"""docs/results/h200/ab-duet-probe/ab-noise.md: the spread of the per-pair ratios of an A/A-A/B recording.

How noisy are the pairs of an A/A-A/B recording (``benchmarks.ab_jobs record``)?

    python -m benchmarks.ab_noise OUT [OUT ...]

Per size and metric: the mean and the spread (sd, and 1.4826 x MAD) of the per-pair log ratios,
A against A' (unchanged code) and A against B (the slowdown), and how strongly the two sides of
a pair move together (correlation of their log values). Triples hold A, A' and B; a recording
of pairs of two workers (the orders at once) holds A/A' lines and A/B lines (A3 against B where
four workers recorded). A recording whose pairs move together needs few pairs; one whose pairs
are independent needs many.

Then, for the orders at once, each worker's median in its own pairs, and B against A' (the
median of B's log values less that of A', with a bootstrap 95% interval): both generate beside
a worker of the base code, so this is the head's change with the partner's part taken out. The
paired A/B figure adds the partner's part: in a barrier the base side decodes faster beside a
slower head, so the paired change reads larger than the code's own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .ab_judge import _base_of, _lines

METRICS = ("generation_tps", "end_to_end_tps", "ttft_s")


def describe(out: Path) -> str:
    import numpy as np

    lines = [f"## {out}", "",
             "| size | metric | pairs | A/A mean | A/A sd (robust) | A/B mean | A/B sd (robust) | corr(A, A') | corr(A, B) |",
             "|---|---|---|---|---|---|---|---|---|"]
    recorded = {path.stem.removeprefix("rounds-"): _lines(path) for path in sorted(out.glob("rounds-*.jsonl"))}
    for size, rows in recorded.items():
        for metric in METRICS:
            cells, corr, counts = [], [], []
            for other in ("a2", "b"):  # triples hold both; pairs of two workers one of them
                held = [r for r in rows if other in r]
                a = np.log([r[_base_of(r, other)][metric] for r in held])
                x = np.log([r[other][metric] for r in held])
                d = x - a
                mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
                cells += [f"{d.mean() * 100:+.1f}%", f"{d.std(ddof=1):.3f} ({mad:.3f})"]
                with np.errstate(invalid="ignore", divide="ignore"):  # nan where a side never varies
                    corr.append(f"{np.corrcoef(a, x)[0, 1]:.2f}")
                counts.append(len(held))
            pairs = str(counts[0]) if counts[0] == counts[1] else f"{counts[0]} / {counts[1]}"
            lines.append(f"| {size} | {metric} | {pairs} | " + " | ".join(cells + corr) + " |")
    return "\n".join(lines + partners(recorded)) + "\n"


def partners(recorded: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each worker's median in its own pairs, and B against A' (unpaired): the orders at once."""
    import numpy as np
    from scipy.stats import bootstrap

    lines: list[str] = []
    for size, rows in recorded.items():
        aa, ab = [r for r in rows if "b" not in r], [r for r in rows if "a2" not in r]
        if not aa or not ab or any("a2" in r for r in ab):
            return []  # triples (turns): every line holds all three
        if not lines:
            lines = ["", "Each worker's median in its own pairs; B against A' (unpaired, medians of logs, "
                     "bootstrap 95%):", "",
                     "| size | metric | A beside A' | A' | A (A3) beside B | B | B against A' |",
                     "|---|---|---|---|---|---|---|"]
        base = _base_of(ab[0], "b")
        for metric in METRICS:
            a2, b = (np.log([r[s][metric] for r in rs]) for s, rs in (("a2", aa), ("b", ab)))
            shift = float(np.median(b) - np.median(a2))
            ci = bootstrap((b, a2), lambda x, y, axis=-1: np.median(x, axis=axis) - np.median(y, axis=axis),
                           n_resamples=2000, method="percentile", random_state=0).confidence_interval
            cells = [np.median([r[s][metric] for r in rs]) for s, rs in (("a", aa), ("a2", aa), (base, ab), ("b", ab))]
            scale = 1000 if metric == "ttft_s" else 1
            lines.append(f"| {size} | {metric} | " +
                         " | ".join(f"{c * scale:.1f}" for c in cells) +
                         f" | {np.expm1(shift) * 100:+.1f}% [{np.expm1(ci.low) * 100:+.1f}%, {np.expm1(ci.high) * 100:+.1f}%] |")
    return lines


def main(argv: list[str] | None = None) -> int:
    for name in (argv if argv is not None else sys.argv[1:]):
        print(describe(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
