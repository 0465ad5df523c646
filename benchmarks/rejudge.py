"""docs/benchmarks.md "Sensitivity of the gate": recorded sessions judged again by the current rules.

Judge recorded sensitivity sessions again with the gate's current rules, without the GPU.

Reads a ``benchmarks/sensitivity.py`` work folder (or its tarball): the baseline sessions'
reports, stored as the plugin stores them (each session added to the case), and every level's
gated sessions. Each gated session's first measurement (``--rounds`` samples per case, before
any confirming re-measurement) is judged by the plugin's own ``gate.evaluate`` at the levels
the plugin uses now: Mann-Whitney at ``--alpha``, the drift allowance at alpha / (cases x
gated metrics). Prints per level how many sessions would fail. No confirming re-measurement is
possible here, so this is an upper bound on the failures the plugin would report.

``--condense OUT`` writes instead what the judging reads (gated and token-count metrics, the
first ``--rounds`` samples of each gated session, values to 6 significant digits) as one small
JSON file (gzipped when OUT ends in ``.gz``), which this script reads like a folder: the test
fixtures in ``tests/data/`` are made so from the published tarballs.

    python -m benchmarks.rejudge docs/results/h200/sensitivity-2-sessions.tgz
    python -m benchmarks.rejudge docs/results/h200/sensitivity-3-sessions.tgz \\
        --condense tests/data/rejudge-h200-sensitivity-3.json.gz
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from pytest_mlxvlm.common.stats import per_comparison_alpha
from pytest_mlxvlm.config.tolerances import DEFAULT_TOLERANCES
from pytest_mlxvlm.gate.baselines import BaselineCase, case_from_result
from pytest_mlxvlm.gate.compare import WORKLOAD_KEYS
from pytest_mlxvlm.gate.decision import evaluate
from pytest_mlxvlm.results import EXACT_METRICS, METRICS, CaseResult

from ._common import parser

CONDENSED = "pytest-mlxvlm-rejudge/1"
# What judging reads: the gated metrics, and the token counts (a changed count is a new workload).
KEPT = (*DEFAULT_TOLERANCES, *EXACT_METRICS)

Case = dict[str, Any]  # case_key, resolution, workload, samples: {metric: [value per round]}
Session = list[Case]


def _by_number(paths: Any) -> list[Path]:
    return sorted(paths, key=lambda p: int(p.stem.rpartition("-")[2]))


def _workload(workload: dict[str, Any]) -> dict[str, Any]:
    return {k: workload[k] for k in WORKLOAD_KEYS if k in workload}


def load_folder(folder: Path) -> tuple[dict[str, BaselineCase], dict[str, list[Session]]]:
    """The baseline cases built from the baseline sessions, and each level's gated sessions."""
    stored: dict[str, BaselineCase] = {}
    for path in _by_number(folder.glob("baseline-*.json")):
        for raw in json.loads(path.read_text())["results"]:
            case = case_from_result(CaseResult.from_dict(raw), {})
            key = raw["case_key"]
            stored[key] = stored[key].added(case) if key in stored else case
    levels: dict[str, list[Session]] = defaultdict(list)
    for path in _by_number(folder.glob("level*-*.json")):
        doc = json.loads(path.read_text())
        levels[re.sub(r"^level|-\d+$", "", path.stem)].append([
            {"case_key": r["case_key"], "resolution": r["resolution"], "workload": r["workload"],
             "samples": {m: [s[m] for s in r["samples"]] for m in METRICS}}
            for r in doc["results"]])
    return stored, dict(levels)


def load(source: Path) -> tuple[dict[str, BaselineCase], dict[str, list[Session]], int | None]:
    """A work folder, its tarball or a condensed file; the last item is the samples a condensed
    file kept per gated case (None: all of them)."""
    if source.is_dir():
        return (*load_folder(source), None)
    if source.name.endswith(".json.gz"):
        return load_condensed(json.loads(gzip.decompress(source.read_bytes())))
    if source.suffix == ".json":
        return load_condensed(json.loads(source.read_text()))
    folder = Path(tempfile.mkdtemp(prefix="mlxvlm-rejudge-"))
    with tarfile.open(source) as tar:
        tar.extractall(folder, filter="data")
    return (*load_folder(folder), None)


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(f"{value:.6g}")


def condense(stored: dict[str, BaselineCase], levels: dict[str, list[Session]], rounds: int,
             source: str) -> dict[str, Any]:
    """What judging reads, as a small JSON document (``load_condensed`` reads it back).

    Each gated session maps a case key to one list of values per metric of ``metrics``; a case
    whose workload differs from its baseline's also appears under the session's ``workload``."""
    def columns(samples: dict[str, list[float]], n: int | None) -> list[list[float | int]]:
        return [[_round(v) for v in samples[m][:n]] for m in KEPT]

    def gated(session: Session) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": {c["case_key"]: columns(c["samples"], rounds) for c in session}}
        changed = {c["case_key"]: _workload(c["workload"]) for c in session
                   if _workload(c["workload"]) != _workload(stored[c["case_key"]].workload)}
        if changed:
            out["workload"] = changed
        return out

    return {
        "format": CONDENSED, "source": source, "rounds": rounds, "metrics": list(KEPT),
        "baseline": {key: {"test": case.test, "resolution": case.resolution,
                           "workload": _workload(case.workload),
                           "sessions": {m: [[_round(v) for v in s] for s in case.sessions[m]]
                                        for m in KEPT}}
                     for key, case in stored.items()},
        "levels": {level: [gated(s) for s in sessions] for level, sessions in levels.items()},
    }


def dump_condensed(doc: dict[str, Any], gz: bool) -> bytes:
    """A condensed document as compact JSON; gzipped with no time stamp (same data, same bytes)."""
    text = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    return gzip.compress(text, 9, mtime=0) if gz else text


def load_condensed(doc: dict[str, Any]) -> tuple[dict[str, BaselineCase], dict[str, list[Session]], int]:
    """The baseline cases and gated sessions of a ``condense``d document, and its rounds."""
    if doc.get("format") != CONDENSED:
        raise SystemExit(f"not a condensed rejudge file (format {doc.get('format')!r})")
    stored = {key: BaselineCase(c["test"], c["resolution"], c["sessions"], {}, c["workload"])
              for key, c in doc["baseline"].items()}

    def session(raw: dict[str, Any]) -> Session:
        return [{"case_key": key, "resolution": stored[key].resolution,
                 "workload": raw.get("workload", {}).get(key, stored[key].workload),
                 "samples": dict(zip(doc["metrics"], cols))}
                for key, cols in raw["samples"].items()]

    levels = {level: [session(s) for s in sessions] for level, sessions in doc["levels"].items()}
    return stored, levels, int(doc["rounds"])


def judge(stored: dict[str, BaselineCase], session: Session, rounds: int, alpha: float) -> list[str]:
    """The regressed (case, metric) pairs of one session under the current rules."""
    drift_alpha = per_comparison_alpha(alpha, len(session) * len(DEFAULT_TOLERANCES))
    found = []
    for case in session:
        current = {m: values[:rounds] for m, values in case["samples"].items()}
        verdict = evaluate(case["case_key"], current, case["workload"], stored[case["case_key"]],
                           tolerances=DEFAULT_TOLERANCES, alpha=alpha, libraries={},
                           drift_alpha=drift_alpha)
        found += [f"{case['resolution']} {m.metric} {m.change * 100:+.0f}% "
                  f"(allowed {m.allowed * 100:.0f}%)" for m in verdict.regressed]
    return found


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("source", type=Path,
                     help="a sensitivity work folder, its .tgz, or a condensed .json[.gz]")
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--alpha", type=float, default=0.05)
    cli.add_argument("--condense", type=Path, metavar="OUT",
                     help="write the condensed sessions to OUT instead of judging them")
    args = cli.parse_args()
    stored, levels, kept = load(args.source)
    if kept is not None and args.rounds > kept:
        raise SystemExit(f"{args.source} keeps the first {kept} samples per case: use --rounds {kept} "
                         "or less, or the work folder")
    if args.condense:
        doc = condense(stored, levels, args.rounds, args.source.as_posix())
        args.condense.write_bytes(dump_condensed(doc, gz=args.condense.name.endswith(".gz")))
        print(f"wrote {args.condense} ({args.condense.stat().st_size} bytes)")
        return
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
