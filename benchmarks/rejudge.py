"""Judge recorded sensitivity sessions again with the gate's current rules, without the GPU.

Reads the JSON reports of a ``benchmarks/sensitivity.py`` work folder (or its tarball): the
baseline sessions and every level's gated sessions. Each gated session's first measurement
(``--rounds`` samples per case, before any confirming re-measurement) is compared with the
baseline sessions by ``compare_metric`` at the levels the plugin uses now: Mann-Whitney at
``--alpha``, the drift allowance at alpha / (cases x gated metrics). Prints per level how many
sessions would fail. No confirming re-measurement is possible here, so this is an upper bound
on the failures the plugin would report.

    python benchmarks/rejudge.py docs/results/h200/sensitivity-2-sessions.tgz
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from pytest_mlxvlm.compare import DEFAULT_TOLERANCES, compare_metric, per_comparison_alpha


def load(folder: Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Baseline sessions, and the gated sessions of each level, in session order."""
    def number(path: Path) -> int:
        return int(path.stem.rpartition("-")[2])

    base = [json.loads(p.read_text()) for p in sorted(folder.glob("baseline-*.json"), key=number)]
    levels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("level*-*.json"), key=number):
        level = re.sub(r"^level|-\d+$", "", path.stem)
        levels[level].append(json.loads(path.read_text()))
    return base, dict(levels)


def judge(base: list[dict[str, Any]], doc: dict[str, Any], rounds: int, alpha: float) -> list[str]:
    """The regressed (case, metric) pairs of one session under the current rules."""
    cases = {r["case_key"]: r for r in doc["results"]}
    drift_alpha = per_comparison_alpha(alpha, len(cases) * len(DEFAULT_TOLERANCES))
    found = []
    for key, result in cases.items():
        for metric, tolerance in DEFAULT_TOLERANCES.items():
            sessions = [[s[metric] for s in next(r for r in b["results"] if r["case_key"] == key)["samples"]]
                        for b in base]
            current = [s[metric] for s in result["samples"][:rounds]]
            c = compare_metric(metric, sessions, current, tolerance, alpha, drift_alpha=drift_alpha)
            if c.verdict == "regressed":
                found.append(f"{result['resolution']} {metric} {c.change * 100:+.0f}% "
                             f"(allowed {c.allowed * 100:.0f}%)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a sensitivity work folder or its .tgz")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    folder = args.source
    if folder.is_file():
        folder = Path(tempfile.mkdtemp(prefix="mlxvlm-rejudge-"))
        with tarfile.open(args.source) as tar:
            tar.extractall(folder, filter="data")
    base, levels = load(folder)
    print(f"{len(base)} baseline sessions; alpha {args.alpha}, first {args.rounds} samples per case")
    print("| level | sessions failing under the current rules | metrics that failed |")
    print("|---|---|---|")
    for level, docs in levels.items():
        verdicts = [judge(base, doc, args.rounds, args.alpha) for doc in docs]
        failed = [v for v in verdicts if v]
        metrics = sorted({f.split(" (")[0].rsplit(" ", 1)[0] for v in failed for f in v})
        print(f"| {level} | {len(failed)}/{len(docs)} | {', '.join(metrics) or '-'} |")


if __name__ == "__main__":
    main()
