"""docs/benchmarks.md "Sensitivity of the gate": gated sessions against injected slowdowns.

Does the gate catch a real slowdown, and never fail on noise? Real pytest sessions.

1. ``--baseline-sessions`` sessions write baselines with the unchanged model (the first with
   ``--mlx-update-baselines``, the others with ``=add``), so the baseline holds the
   session-to-session drift of the machine.
2. For each slowdown level (extra work in every forward pass, see slowdown.py; 0 is the
   unchanged model), ``--sessions`` gated sessions run against those baselines.
Every session is a real pytest session of the built-in suite with the plugin's gate; the
model is loaded once for all of them (a memoizing plugin), so only the measurement repeats.
Prints per level: the slowdown actually measured, how many sessions failed, and the
smallest detectable regression the plugin reported. With ``--interleave`` the levels take
turns session by session. Sessions already in ``--workdir`` are kept, so a run stopped by
``--time-limit`` resumes where it stopped. ``--baseline-burst N`` records N more baseline
sessions into the work folder and stops: run it again an hour or more later, so that the
baseline holds sessions at different times (a stored baseline gates only then), and then
without it for the gated sessions.

    python -m benchmarks.sensitivity --model synthetic:tiny --levels 0,cols:45000 --sessions 20
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from ._common import BUILTIN_SUITE, ModelCache, parser, run_session, workdir
from .slowdown import inject


def level_file(work: Path, level: str, i: int | str) -> Path:
    """A level's session report (``i`` may be ``*``, a glob of all of them)."""
    return work / f"level{level.replace(':', '-')}-{i}.json"


def summarize(work: Path, level: str) -> dict[str, Any] | None:
    """What the finished sessions of one level (their JSON files) show."""
    docs = [json.loads(p.read_text()) for p in sorted(work.glob(level_file(work, level, "*").name))]
    if not docs:
        return None
    failed = regressed = 0
    medians: dict[tuple[str, str], list[float]] = {}
    detectable, allowed = [], []
    for doc in docs:
        results = doc["results"]
        failed += any(r["outcome"] != "passed" for r in results)
        regressed += any((r["comparison"] or {}).get("status") == "regressed" for r in results)
        for r in results:
            for metric in ("end_to_end_tps", "generation_tps"):
                medians.setdefault((r["case_key"], metric), []).append(r["summary"][metric]["median"])
            for m in (r["comparison"] or {}).get("metrics", []):
                if m["metric"] == "end_to_end_tps" and m["detectable"] is not None:
                    detectable.append(m["detectable"])
                    allowed.append(m["allowed"])
    return {"sessions": len(docs), "failed": failed, "regressed": regressed,
            "per_case": {key: statistics.median(v) for key, v in medians.items()},
            "detectable": statistics.median(detectable) if detectable else None,
            "allowed": statistics.median(allowed) if allowed else None}


def record_baselines(common: list[str], cache: ModelCache, work: Path, numbers: range) -> dict[str, Any]:
    """Baseline sessions ``numbers`` (the first of all replaces, the others add); the last one's
    report marks the baseline as written. Returns that session."""
    base: dict[str, Any] = {}
    for i in numbers:
        mode = "--mlx-update-baselines" + ("=add" if i else "")
        base = run_session([*common, mode], cache, work / f"baseline-{i}.json")
        if base["exit"] != 0:
            raise SystemExit(f"baseline session {i + 1} failed (exit {base['exit']})")
    (work / "baseline.json").write_text(json.dumps(base["doc"]))
    return base


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--model", default="synthetic:tiny")
    cli.add_argument("--resolutions", default="224x224,448x448")
    cli.add_argument("--rounds", default="5")
    cli.add_argument("--max-tokens", default="32")
    cli.add_argument("--levels", default="0,cols:45000",
                     help="slowdown levels, see benchmarks/slowdown.py")
    cli.add_argument("--sessions", type=int, default=20)
    cli.add_argument("--baseline-sessions", type=int, default=5)
    cli.add_argument("--baseline-burst", type=int, default=0,
                     help="record this many more baseline sessions now, then stop")
    cli.add_argument("--warm-sessions", type=int, default=1,
                     help="discarded sessions at each start (kernel compilation, caches)")
    cli.add_argument("--interleave", action="store_true",
                     help="alternate the levels session by session, so drift hits all alike")
    cli.add_argument("--time-limit", type=float, default=None,
                     help="start no session after this many seconds; run again to resume")
    cli.add_argument("--workdir", default=None)
    cli.add_argument("--extra", default="", help="more pytest arguments, space-separated")
    args = cli.parse_args()

    began = time.perf_counter()
    work = workdir(args.workdir, "sensitivity")
    common = [*BUILTIN_SUITE, "--mlx-model", args.model,
              "--mlx-resolutions", args.resolutions, "--mlx-rounds", args.rounds,
              "--mlx-max-tokens", args.max_tokens, "--mlx-chip", "sensitivity",
              "--mlx-baseline-dir=" + str(work / "baselines"), *args.extra.split()]
    cache = ModelCache()
    for i in range(args.warm_sessions):  # every start: this process compiles its kernels
        run_session(common, cache, work / f"warm-{i}.partial")
    if args.baseline_burst:
        done = len(list(work.glob("baseline-*.json")))
        record_baselines(common, cache, work, range(done, done + args.baseline_burst))
        print(f"baseline holds {done + args.baseline_burst} sessions; run again later to add "
              "more, or without --baseline-burst for the gated sessions", flush=True)
        return
    if (work / "baseline.json").exists():  # a later call on the same work folder
        base = {"doc": json.loads((work / "baseline.json").read_text()), "seconds": 0.0}
    else:
        base = record_baselines(common, cache, work, range(args.baseline_sessions))
    print(f"baseline written: {len(base['doc']['results'])} cases over "
          f"{len(list(work.glob('baseline-*.json')))} sessions", flush=True)

    levels = args.levels.split(",")
    order = ([(i, level) for i in range(args.sessions) for level in levels] if args.interleave
             else [(i, level) for level in levels for i in range(args.sessions)])
    for i, level in order:
        path = level_file(work, level, i)
        if path.exists():  # done by an earlier call
            continue
        if args.time_limit is not None and time.perf_counter() - began > args.time_limit:
            print("time limit reached: run again with the same --workdir to resume", flush=True)
            break
        undo = inject(cache.get(args.model).model, level)
        try:
            out = run_session(common, cache, path.with_suffix(".partial"))
        finally:
            undo()
        path.with_suffix(".partial").replace(path)
        session_failed = any(r["outcome"] != "passed" for r in out["doc"]["results"])
        print(f"level {level}: session {i + 1}/{args.sessions} "
              f"{'FAILED' if session_failed else 'passed'} ({out['seconds']:.0f}s)", flush=True)

    rows = [(level, summary) for level in levels if (summary := summarize(work, level))]
    # Slowdowns are measured against the unchanged sessions (level 0) when they ran, else
    # against the median of the baseline sessions' medians.
    baseline_medians: dict[tuple[str, str], list[float]] = {}
    for path in work.glob("baseline-*.json"):
        for r in json.loads(path.read_text())["results"]:
            for m in ("end_to_end_tps", "generation_tps"):
                baseline_medians.setdefault((r["case_key"], m), []).append(r["summary"][m]["median"])
    reference = next((r[1]["per_case"] for r in rows if r[0] == "0"), None) or {
        key: statistics.median(v) for key, v in baseline_medians.items()}

    def slower(per_case: dict[tuple[str, str], float], metric: str) -> str:
        return ", ".join(f"{key[0].rpartition('[')[2].rstrip(']')} {(1 - v / reference[key]) * 100:.1f}%"
                         for key, v in per_case.items() if key[1] == metric and key in reference)

    lines = [
        f"model {args.model}, resolutions {args.resolutions}, rounds {args.rounds}, "
        f"max tokens {args.max_tokens}, {'interleaved' if args.interleave else 'level by level'}",
        "| slowdown level | Speed slower by, per case | Decode slower by, per case | sessions failed | "
        "sessions with a regression verdict | detectable Speed regression (plugin) | "
        "Speed drift allowance (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for level, sm in rows:
        det = sm["detectable"]
        det_text = f"{det * 100:.0f}%" if det is not None else "-"
        lines.append(f"| {level} | {slower(sm['per_case'], 'end_to_end_tps')} | "
                     f"{slower(sm['per_case'], 'generation_tps')} | {sm['failed']}/{sm['sessions']} | "
                     f"{sm['regressed']}/{sm['sessions']} | {det_text} | "
                     f"{(sm['allowed'] or 0) * 100:.0f}% |")
    (work / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
