"""docs/results/h200/ab-duet-probe/ab-noise.md: the spread of the per-pair ratios of an A/A-A/B recording.

How noisy are the pairs of an A/A-A/B recording (``benchmarks.ab_jobs record``)?

    python -m benchmarks.ab_noise OUT [OUT ...]

Per size and metric: the mean and the spread (sd, and 1.4826 x MAD) of the per-pair log ratios,
A against A' (unchanged code) and A against B (the slowdown), and how strongly the two sides of
a pair move together (correlation of their log values). Triples hold A, A' and B; a recording
of pairs of two workers (the orders at once) holds A/A' lines and A/B lines. A recording whose pairs move together
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
            cells, corr, counts = [], [], []
            for other in ("a2", "b"):  # triples hold both; pairs of two workers one of them
                held = [r for r in rows if other in r]
                a, x = (np.log([r[s][metric] for r in held]) for s in ("a", other))
                d = x - a
                mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
                cells += [f"{d.mean() * 100:+.1f}%", f"{d.std(ddof=1):.3f} ({mad:.3f})"]
                corr.append(f"{np.corrcoef(a, x)[0, 1]:.2f}")
                counts.append(len(held))
            pairs = str(counts[0]) if counts[0] == counts[1] else f"{counts[0]} / {counts[1]}"
            lines.append(f"| {size} | {metric} | {pairs} | " + " | ".join(cells + corr) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    for name in (argv if argv is not None else sys.argv[1:]):
        print(describe(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
