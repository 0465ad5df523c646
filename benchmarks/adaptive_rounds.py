"""docs/results/cpu/adaptive: adaptive rounds against fixed rounds, per case.

Adaptive rounds against fixed rounds: rounds used, time spent and precision reached per case.

Sessions of the built-in suite take turns: ``--mlx-rounds auto`` (until the 95% interval of the
median of Speed, Decode and TTFT is within ``--precision`` of it) and ``--mlx-rounds 5``. For
each case the table gives the rounds, the seconds of measuring (warmup included) and the
relative half-width of each median's 95% interval that the samples allow (5 samples allow
none: the binomial rule needs 6 for 95%). Every session's JSON report is kept in ``--workdir``,
and a session already there is read instead of run again, so a run resumes. ``--time-limit``
starts no session after that many seconds (the table then holds the sessions done), so a GPU
run ends within one device call; ``--case-budget`` is ``--mlx-case-budget`` of the auto sessions.

    python -m benchmarks.adaptive_rounds --model synthetic:tiny --resolutions 224x224,448x448 \\
        --pairs 2 --workdir docs/results/cpu/adaptive
    bash benchmarks/gpu.sh adaptive synthetic:qwen3-vl-8b-4bit   # the H200's table (docs/ab.md)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from pytest_mlxvlm.common.stats import relative_half_width

from ._common import BUILTIN_SUITE, ModelCache, parser, run_session, workdir

METRICS = {"end_to_end_tps": "Speed", "generation_tps": "Decode", "ttft_s": "TTFT"}


def _row(mode: str, session: int, case: dict[str, Any]) -> list[str]:
    samples = case["samples"]
    seconds = sum(s["time_s"] for s in samples + case.get("warmup_samples", []))
    widths = []
    for metric, label in METRICS.items():
        width = relative_half_width([s[metric] for s in samples])
        widths.append(f"{label} ±{width * 100:.1f}%" if width != float("inf") else f"{label} none*")
    stopped = (case["workload"].get("adaptive") or {}).get("stopped", "fixed")
    return [mode, str(session), case["resolution"], str(len(samples)), f"{seconds:.1f}", ", ".join(widths),
            stopped]


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--model", default="synthetic:tiny")
    cli.add_argument("--resolutions", default="224x224,448x448")
    cli.add_argument("--max-tokens", default="32")
    cli.add_argument("--precision", default="3")
    cli.add_argument("--pairs", type=int, default=2, help="sessions of each mode, taking turns")
    cli.add_argument("--workdir", default=None)
    cli.add_argument("--case-budget", default="120", help="--mlx-case-budget of the auto sessions (s)")
    cli.add_argument("--time-limit", type=float, default=float("inf"),
                     help="start no session after this many seconds (the table holds those done)")
    args = cli.parse_args()
    began = time.perf_counter()
    work = workdir(args.workdir, "adaptive")
    common = [*BUILTIN_SUITE, "--mlx-model", args.model, "--mlx-resolutions", args.resolutions,
              "--mlx-max-tokens", args.max_tokens, "--mlx-baseline-dir=" + str(work / "baselines")]
    modes = {"auto": ["--mlx-rounds", "auto", "--mlx-precision", args.precision, "--mlx-case-budget",
                      args.case_budget], "fixed 5": ["--mlx-rounds", "5"]}
    cache = ModelCache()
    paths = {(i, mode): work / f"{mode.replace(' ', '')}-{i}.json" for i in range(args.pairs) for mode in modes}
    if not all(path.exists() for path in paths.values()):  # kernels compiled before anything counts
        run_session(common, cache, work / "warm.partial")
    rows = []
    skipped = 0
    for i in range(args.pairs):
        for mode, extra in modes.items():
            path = paths[i, mode]
            if not path.exists() and time.perf_counter() - began > args.time_limit:
                skipped += 1
                continue
            doc = json.loads(path.read_text()) if path.exists() else run_session([*common, *extra], cache, path)["doc"]
            rows += [_row(mode, i + 1, case) for case in doc["results"]]
    header = ["rounds mode", "session", "case", "rounds", "seconds", "95% interval of the median (half-width)",
              "stopped"]
    lines = [f"model {args.model}, max tokens {args.max_tokens}, target ±{args.precision}%", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    by_mode: dict[str, list[float]] = {}
    for r in rows:
        by_mode.setdefault(r[0], []).append(float(r[4]))
    lines.append("")
    lines += [f"{mode}: median {statistics.median(v):.1f} s a case" for mode, v in by_mode.items()]
    if any("none*" in r[5] for r in rows):
        lines.append("*none: so few rounds allow no 95% interval of the median (the binomial rule needs 6)")
    if skipped:
        lines.append(f"{skipped} session(s) not run: --time-limit {args.time_limit:g} s reached (run again to add them)")
    text = "\n".join(lines) + "\n"
    (Path(work) / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
