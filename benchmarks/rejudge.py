"""Judge recorded sensitivity sessions again with the gate's current rules, without the GPU.

Reads a ``benchmarks/sensitivity.py`` work folder (or its tarball): the baseline sessions'
reports, stored as the plugin stores them (each session added to the case), and every level's
gated sessions. Each gated session's first
measurement (``--rounds`` samples per case, before any confirming re-measurement) is judged by
the plugin's own ``gate.evaluate`` at the levels the plugin uses now: Mann-Whitney at
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

from pytest_mlxvlm.baselines import BaselineCase, case_from_result
from pytest_mlxvlm.compare import DEFAULT_TOLERANCES
from pytest_mlxvlm.stats import per_comparison_alpha
from pytest_mlxvlm.gate import evaluate
from pytest_mlxvlm.results import METRICS, CaseResult


def _by_number(paths: Any) -> list[Path]:
    return sorted(paths, key=lambda p: int(p.stem.rpartition("-")[2]))


def load(folder: Path) -> tuple[dict[str, BaselineCase], dict[str, list[dict[str, Any]]]]:
    """The baseline cases built from the baseline sessions, and each level's gated sessions."""
    stored: dict[str, BaselineCase] = {}
    for path in _by_number(folder.glob("baseline-*.json")):
        for raw in json.loads(path.read_text())["results"]:
            case = case_from_result(CaseResult.from_dict(raw), {})
            key = raw["case_key"]
            stored[key] = stored[key].added(case) if key in stored else case
    levels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in _by_number(folder.glob("level*-*.json")):
        levels[re.sub(r"^level|-\d+$", "", path.stem)].append(json.loads(path.read_text()))
    return stored, dict(levels)


def judge(stored: dict[str, BaselineCase], doc: dict[str, Any], rounds: int, alpha: float) -> list[str]:
    """The regressed (case, metric) pairs of one session under the current rules."""
    drift_alpha = per_comparison_alpha(alpha, len(doc["results"]) * len(DEFAULT_TOLERANCES))
    found = []
    for result in doc["results"]:
        current = {m: [s[m] for s in result["samples"][:rounds]] for m in METRICS}
        verdict = evaluate(result["case_key"], current, result["workload"],
                           stored[result["case_key"]], tolerances=DEFAULT_TOLERANCES,
                           alpha=alpha, libraries={}, drift_alpha=drift_alpha)
        found += [f"{result['resolution']} {m.metric} {m.change * 100:+.0f}% "
                  f"(allowed {m.allowed * 100:.0f}%)" for m in verdict.regressed]
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
    stored, levels = load(folder)
    sessions = max(c.n_sessions for c in stored.values())
    print(f"{sessions} baseline sessions; alpha {args.alpha}, first {args.rounds} samples per case")
    print("| level | sessions failing under the current rules | metrics that failed |")
    print("|---|---|---|")
    for level, docs in levels.items():
        verdicts = [judge(stored, doc, args.rounds, args.alpha) for doc in docs]
        failed = [v for v in verdicts if v]
        metrics = sorted({f.split(" (")[0].rsplit(" ", 1)[0] for v in failed for f in v})
        print(f"| {level} | {len(failed)}/{len(docs)} | {', '.join(metrics) or '-'} |")


if __name__ == "__main__":
    main()
