"""Regenerates the continuous-against-synchronized table of docs/serving.md: both concurrency modes on one server, block by block.

For each repeat and each concurrency, the suite's two load generators run back to back on one
``mlx_vlm.server`` (the order alternating by repeat): continuous (N requests kept in flight,
aggregate = tokens / the first request sent to the last one's end) and synchronized rounds (N
released together per round, aggregate = a round's tokens / its wall time, averaged). Both send
the same requests (the synthetic image with a distinct corner stamp each, the fixed length).
On a shared machine the load drifts over minutes; back-to-back blocks keep the two modes'
comparison within seconds of each other. The ratio synchronized / continuous of the aggregate is
the median over repeats.

    python -m benchmarks.concurrency_modes --concurrency 1,2,4,8 --rounds 4 --repeats 3
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from pytest_mlxvlm.config.settings import DEFAULT_PROMPT, parse_resolution
from pytest_mlxvlm.measure.images import image_file
from pytest_mlxvlm.models.loading import resolve_path
from pytest_mlxvlm.suites.server.bench import MlxServer
from pytest_mlxvlm.suites.server.client import eos_token_ids
from pytest_mlxvlm.suites.server.load import run_continuous, run_rounds
from pytest_mlxvlm.suites.server.loadstats import summarize_run
from pytest_mlxvlm.suites.server.process import ServerProcess
from pytest_mlxvlm.suites.server.workload import one_image_jobs

from ._common import parser, workdir


def block(server: MlxServer, folder: Path, mode: str, clients: int, rounds: int, max_tokens: int,
          image: Path) -> dict[str, Any]:
    jobs = one_image_jobs(str(folder), DEFAULT_PROMPT, image, max_tokens, server.eos_ids, "-")
    if mode == "continuous":
        run = run_continuous(server.request, jobs, clients, requests=rounds * clients, abort=server.pool.abort)
    else:
        run = run_rounds(server.request, jobs, clients, rounds, abort=server.pool.abort)
    info = summarize_run(run, max_tokens)
    return {"mode": mode, "clients": clients, "requests": info["requests"], "aggregate_tps": info["aggregate_tps"],
            "ttft_p50_ms": info["ttft_ms"]["p50"], "itl_p50_ms": info["itl_ms"]["p50"],
            "tokens": sorted({t.completion_tokens for t in run.timings})}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="synthetic:tiny")
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=4, help="rounds (requests per client) per block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--size", default="224x224")
    ap.add_argument("--out", help="folder for modes.json and modes.md")
    args = ap.parse_args()
    folder = resolve_path(args.model)
    levels = [int(x) for x in args.concurrency.split(",")]
    image = image_file(parse_resolution(args.size), Path(tempfile.mkdtemp(prefix="mlxvlm-modes-")))
    process = ServerProcess(model=str(folder), timeout_s=300)
    process.start()
    server = MlxServer(spec=args.model, url=process.url, request_model=str(folder), eos_ids=eos_token_ids(folder),
                       process=process, timeout_s=600)
    rows: list[dict[str, Any]] = []
    try:
        for clients in levels:  # warm-up: one round each way, unmeasured
            for mode in ("continuous", "synchronized-rounds"):
                block(server, folder, mode, clients, 1, args.max_tokens, image)
        for repeat in range(args.repeats):
            for clients in levels:
                modes = ["continuous", "synchronized-rounds"][:: 1 if repeat % 2 == 0 else -1]
                for mode in modes:
                    rows.append({**block(server, folder, mode, clients, args.rounds, args.max_tokens, image),
                                 "repeat": repeat})
    finally:
        server.stop()
    lines = ["| clients | continuous aggregate | synchronized aggregate | synchronized / continuous | "
             "TTFT p50 continuous / synchronized |", "|---|---|---|---|---|"]
    for clients in levels:
        cont = [r for r in rows if r["clients"] == clients and r["mode"] == "continuous"]
        sync = [r for r in rows if r["clients"] == clients and r["mode"] == "synchronized-rounds"]
        ratio = statistics.median(s["aggregate_tps"] / c["aggregate_tps"] for c, s in zip(cont, sync))
        lines.append(f"| {clients} | {statistics.median(r['aggregate_tps'] for r in cont):.1f} tok/s | "
                     f"{statistics.median(r['aggregate_tps'] for r in sync):.1f} tok/s | {ratio:.3f} | "
                     f"{statistics.median(r['ttft_p50_ms'] for r in cont):.0f} / "
                     f"{statistics.median(r['ttft_p50_ms'] for r in sync):.0f} ms |")
    short = sorted({t for r in rows for t in r["tokens"] if t != args.max_tokens})
    text = "\n".join(lines) + f"\n\nmedians over {args.repeats} repeats of {args.rounds} requests per client, " \
                              f"{args.max_tokens} tokens, {args.size}" + \
        (f"; NOT fixed length: some requests ended with {short} tokens\n" if short else "; every request fixed length\n")
    print(text)
    if args.out:
        out = workdir(args.out, "modes")
        (out / "modes.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
        (out / "modes.md").write_text(text)


if __name__ == "__main__":
    main()
