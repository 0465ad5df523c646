"""How noisy are the pairs of an A/A-A/B recording (``benchmarks.ab_jobs record``)?

    python -m benchmarks.ab_noise OUT [OUT ...]

Per size and metric: the mean and the spread (sd, and 1.4826 x MAD) of the per-pair log ratios,
A against A' (unchanged code) and A against B (the slowdown), and how strongly the two sides of
a pair move together (correlation of their log values). A recording whose pairs move together
needs few pairs; one whose pairs are independent needs many.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("generation_tps", "end_to_end_tps", "ttft_s")


def describe(out: Path) -> str:
    import numpy as np

    lines = [f"## {out}", "",
             "| size | metric | pairs | A/A mean | A/A sd (robust) | A/B mean | A/B sd (robust) | corr(A, A') | corr(A, B) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("rounds-*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        size = path.stem.removeprefix("rounds-")
        for metric in METRICS:
            a, a2, b = (np.log([r[s][metric] for r in rows]) for s in ("a", "a2", "b"))
            cells = []
            for other in (a2, b):
                d = other - a
                mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
                cells += [f"{d.mean() * 100:+.1f}%", f"{d.std(ddof=1):.3f} ({mad:.3f})"]
            corr = [f"{np.corrcoef(a, x)[0, 1]:.2f}" for x in (a2, b)]
            lines.append(f"| {size} | {metric} | {len(rows)} | " + " | ".join(cells + corr) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    for name in (argv if argv is not None else sys.argv[1:]):
        print(describe(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
