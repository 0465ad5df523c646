"""docs/reliability.md, the cost of request deadlines: the server client with and without them.

A local server replays one streamed 64-token chat completion (SSE, keep-alive); the client
(``stream_chat`` through one kept-alive connection) sends REQUESTS requests with its deadlines
(``Watch`` registered with the monitor thread) and as many with ``Watch`` replaced by one that
does nothing, taking turns (which goes first alternates pair by pair), RUNS times. Printed per
run: the median and the 25-75% range of each, in ms; every request's time is one JSON line in
``--out``. Hold the timing lock:

    flock /tmp/timing.lock python -m benchmarks.deadline_cost --out docs/results/cpu/deadline-cost.jsonl
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pytest_mlxvlm.suites.server import client
from pytest_mlxvlm.suites.server.pool import ConnectionPool

from ._common import append_jsonl, parser


def replay_body(tokens: int) -> bytes:
    """One SSE stream of ``tokens`` content chunks, the usage chunk and ``[DONE]``."""
    lines = [{"choices": [{"index": 0, "delta": {"content": f" t{i}"}, "finish_reason": None}]}
             for i in range(tokens)]
    lines.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                  "usage": {"prompt_tokens": 80, "completion_tokens": tokens, "total_tokens": 80 + tokens}})
    return b"".join(b"data: " + json.dumps(line).encode() + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


def replay_server(tokens: int) -> ThreadingHTTPServer:
    """A server on a free local port that answers every POST with the same stream."""
    body = replay_body(tokens)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as uvicorn: no 40 ms delayed-ACK wait between header and body

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class NoWatch:
    """A ``Watch`` that watches nothing: the client as it would be without deadlines."""

    def __init__(self, deadlines: Any, max_tokens: int) -> None:
        self.expired: str | None = None
        self.sock: Any = None

    def begin(self, start: float) -> None:
        pass

    def progress(self, now: float) -> None:
        pass

    def next(self) -> tuple[float, str]:
        return float("inf"), ""

    def end(self) -> None:
        pass


def one(url: str, body: bytes, pool: ConnectionPool, deadlines: bool) -> float:
    """Seconds of one request, with the client's deadlines or without them."""
    watch = client.Watch
    if not deadlines:
        client.Watch = NoWatch  # type: ignore[assignment,misc]
    try:
        start = time.perf_counter()
        timing = client.stream_chat(url, body, timeout_s=30.0, pool=pool)
        elapsed = time.perf_counter() - start
    finally:
        client.Watch = watch  # type: ignore[misc]
    assert timing.completion_tokens > 0 and len(timing.chunk_times) > 0
    return elapsed


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, default=300, help="requests of each kind a run [300]")
    cli.add_argument("--runs", type=int, default=3, help="runs [3]")
    cli.add_argument("--tokens", type=int, default=64, help="content chunks of the replayed stream [64]")
    cli.add_argument("--out", type=Path, default=None, help="append one JSON line per request here")
    args = cli.parse_args()
    server = replay_server(args.tokens)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    body = json.dumps({"model": "replay", "stream": True, "max_tokens": args.tokens,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    pool = ConnectionPool(url, 30.0)
    try:
        for _ in range(20):  # warm-up: the connection, the monitor's thread, the imports
            one(url, body, pool, True)
            one(url, body, pool, False)
        for run in range(1, args.runs + 1):
            times: dict[bool, list[float]] = {True: [], False: []}
            for i in range(args.requests):
                for deadlines in ((True, False) if i % 2 == 0 else (False, True)):
                    seconds = one(url, body, pool, deadlines)
                    times[deadlines].append(seconds)
                    if args.out:
                        append_jsonl(args.out, {"run": run, "pair": i, "deadlines": deadlines,
                                                "tokens": args.tokens, "seconds": seconds})
            parts = []
            for deadlines in (True, False):
                q1, q2, q3 = statistics.quantiles(times[deadlines], n=4)
                parts.append(f"{'with' if deadlines else 'without'} deadlines {q2 * 1e3:.3f} ms "
                             f"[{q1 * 1e3:.3f}-{q3 * 1e3:.3f}]")
            diff = statistics.median(times[True]) - statistics.median(times[False])
            print(f"run {run}: {'; '.join(parts)}; difference of medians {diff * 1e3:+.3f} ms "
                  f"({args.requests} requests each, {args.tokens} tokens)")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
