"""Where does session-to-session drift come from? Probes around real pytest sessions.

In one process (the model loaded once), repeatedly: time a launch-bound probe (many tiny MLX
kernels, each evaluated: host and driver cost) and a compute-bound probe (large matmuls: the
device itself), then run one real session of the built-in suite. If the sessions' speeds
follow the launch probe, the drift is the host's, not the accelerator's.

    python -m benchmarks.probes.drift --model synthetic:qwen3-vl-8b-4bit --sessions 20 --out drift.jsonl
    python -m benchmarks.probes.drift --resolutions 224x224 --sessions 3 --matmul-size 512   # CPU
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .._common import BUILTIN_SUITE, ModelCache, append_jsonl, compute_probe, launch_probe, parser, run_session, workdir


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--model", default="synthetic:tiny")
    cli.add_argument("--resolutions", default="224x224,448x448,768x768,1024x1024")
    cli.add_argument("--sessions", type=int, default=10)
    cli.add_argument("--time-limit", type=float, default=None)
    cli.add_argument("--out", type=Path, default=Path("drift.jsonl"))
    cli.add_argument("--matmul-size", type=int, default=4096, help="use ~512 on a CPU")
    cli.add_argument("--workdir", default=None, help="session reports (default: a temporary folder)")
    args = cli.parse_args()
    began = time.perf_counter()
    cache = ModelCache()
    work = workdir(args.workdir, "drift")
    for i in range(args.sessions):
        if args.time_limit is not None and time.perf_counter() - began > args.time_limit:
            break
        before = launch_probe(), compute_probe(args.matmul_size)
        report = work / f"s{i}.json"
        doc = run_session([*BUILTIN_SUITE, "--mlx-model", args.model, "--mlx-resolutions",
                           args.resolutions, "--mlx-baseline-dir", str(work / "none")],
                          cache, report)["doc"]
        after = launch_probe(), compute_probe(args.matmul_size)
        row = {"session": i, "launch_us": [before[0] * 1e6, after[0] * 1e6],
               "matmul_ms": [before[1] * 1e3, after[1] * 1e3],
               "speed": {r["resolution"]: r["summary"]["end_to_end_tps"]["median"] for r in doc["results"]},
               "decode": {r["resolution"]: r["summary"]["generation_tps"]["median"] for r in doc["results"]}}
        append_jsonl(args.out, row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
