"""Regenerates the scaling table of docs/report.md (sessions x cases -> seconds, peak memory).

`pytest-mlxvlm report` on histories of N sessions of C cases. Each history is written from one real session of synthetic:tiny (a line of
docs/results/history/history.jsonl: every metric's samples kept, as the plugin writes them),
one session a night with its own commit, each case's figures scaled by a level that steps
down by 30% and back up at two places, and by 3% session noise; then `pytest-mlxvlm report`
runs on it in its own process, with its PNGs, and its time (wall clock), the stages of its
progress line, its CPU time and its peak resident memory (wait4) are recorded, with the
machine's load average just before (the machine is shared: wall time grows with the load, CPU
time does not). Run it from the repository
root under the timing lock:

    flock /tmp/timing.lock python -m benchmarks.report_scaling --out docs/results/cpu/report-scaling
    python -m benchmarks.report_scaling --table docs/results/cpu/report-scaling/results.json
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ._common import parser

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "docs" / "results" / "history" / "history.jsonl"
# (sessions, cases): one case over ever longer histories, then a year of nightly sessions of 20 cases
SIZES = ((1000, 1), (2500, 1), (5000, 1), (10_000, 1), (30_000, 1), (365, 20))
SCALED = {"end_to_end_tps": 1, "generation_tps": 1, "prompt_tps": 1, "time_s": -1, "ttft_s": -1,
          "preprocess_s": -1, "prefill_s": -1}  # +1: a speed (scaled by the level), -1: a time


def history(sessions: int, cases: int, seed: int = 0) -> list[str]:
    """The JSON lines of a synthetic history built from a real session."""
    rng = random.Random(seed)
    template = json.loads(TEMPLATE.read_text().splitlines()[0])
    case = template["cases"][0]
    start = datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc)
    lines = []
    for i in range(sessions):
        level = 0.7 if sessions // 3 <= i < 2 * sessions // 3 else 1.0  # a regression, then its fix
        record = {**template, "date": (start + timedelta(days=i)).isoformat(timespec="seconds"),
                  "commit": hashlib.sha1(f"{seed}:{i}".encode()).hexdigest(), "cases": []}
        for c in range(cases):
            noise = level * rng.gauss(1.0, 0.03)
            samples = {m: [v * noise ** SCALED[m] * rng.gauss(1.0, 0.02) if m in SCALED else v for v in values]
                       for m, values in case["samples"].items()}
            medians = {m: sorted(values)[len(values) // 2] for m, values in samples.items()}
            record["cases"].append({**case, "case_key": f"tests/test_speed.py::test_case[{c:02d}]",
                                    "resolution": f"{224 + 32 * c}x{224 + 32 * c}",
                                    "medians": medians, "samples": samples})
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
    return lines


STAGE = re.compile(r"^report: (\w[\w ]*?)[:\s].*\((\d+\.\d+) s\)$")


def measure(path: Path, out: Path) -> dict[str, Any]:
    """One ``pytest-mlxvlm report`` in its own process: seconds, peak memory, stage ends."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pytest_mlxvlm", "report", str(path), "--out", str(out),
                                 "--progress"],
                                stdout=stdout, stderr=stderr, text=True, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # its own peak resident memory
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        printed, progress = stdout.read(), stderr.read()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"report failed on {path}:\n{progress}")
    stages: dict[str, float] = {}
    for line in progress.splitlines():
        match = STAGE.match(line)
        if match:
            stages[match.group(1)] = float(match.group(2))
    return {"seconds": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "exit_code": proc.returncode, "stages_end_s": stages,
            "stdout_first_line": printed.splitlines()[0] if printed else ""}


def run(out: Path) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory(prefix="mlxvlm-report-scaling-") as tmp:
        for sessions, cases in SIZES:
            path = Path(tmp) / f"history-{sessions}x{cases}.jsonl"
            path.write_text("\n".join(history(sessions, cases)) + "\n")
            load = os.getloadavg()[0]
            found = measure(path, Path(tmp) / f"site-{sessions}x{cases}")
            results.append({"sessions": sessions, "cases": cases, "series": 3 * cases,
                            "history_mb": round(path.stat().st_size / 1e6, 1), "load_before": round(load, 2),
                            **found})
            print(f"{sessions} sessions x {cases} case(s): {found['seconds']:.1f} s, "
                  f"{found['peak_rss_mb']:.0f} MB", flush=True)
    from importlib import metadata

    doc = {"what": "pytest-mlxvlm report on synthetic histories (benchmarks/report_scaling.py)",
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "versions": {name: metadata.version(name) for name in ("ruptures", "scipy", "numpy", "matplotlib")},
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def table(doc: dict[str, Any]) -> str:
    """The Markdown table of docs/report.md."""
    lines = ["| sessions | cases | series | history | seconds | of which PNGs | CPU seconds | load before "
             "| peak memory |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["results"]:
        stages = r["stages_end_s"]
        png = stages.get("plots", 0.0) - stages.get("pages", 0.0) if "plots" in stages else 0.0
        lines.append(f"| {r['sessions']:,} | {r['cases']} | {r['series']} | {r['history_mb']} MB | "
                     f"{r['seconds']:.1f} | {png:.1f} | {r['cpu_s']:.1f} | {r['load_before']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--out", type=Path, help="folder for results.json (measures)")
    cli.add_argument("--table", type=Path, help="print the table of a results.json (measures nothing)")
    args = cli.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    if not args.out:
        cli.error("give --out to measure or --table to print")
    print(table(run(args.out)))


if __name__ == "__main__":
    main()
