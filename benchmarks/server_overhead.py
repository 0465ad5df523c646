"""docs/server.md "Benchmarking a server" (docs/results/cpu/server-overhead.txt): the client against a bare loop.

The plugin's HTTP client against a bare loop of streamed requests, on one mlx_vlm.server.

Both send the same kind of request (a streamed, greedy chat completion of a fixed length
with the synthetic image, a distinct corner stamp each time, the body built before the
clock starts) to the same server, in alternating order (bare first on even rounds, plugin
first on odd ones), and both compute decode tok/s the same way: (content chunks - 1) /
(time of the last chunk - time of the first). The bare loop is what a user would write
with urllib and json; the plugin's is ``stream_chat`` + ``Timing.sample()``.

Then, to isolate the clients' own cost, one real response is recorded and replayed at once
(no generation) by a local http.server, ``--replay`` times to each client, interleaved: the
difference of their median times is what the plugin's client adds per request.

    python -m benchmarks.server_overhead --model synthetic:tiny --rounds 30
    python -m benchmarks.server_overhead --url http://127.0.0.1:8080 --model ./my-model
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import urllib.request
from pathlib import Path

from pytest_mlxvlm.config.settings import DEFAULT_PROMPT, parse_resolution
from pytest_mlxvlm.measure.images import image_file
from pytest_mlxvlm.models.loading import resolve_path
from pytest_mlxvlm.suites.server.client import ImageVariants, chat_body, eos_token_ids, stream_chat

from ._common import parser, server_url, workdir


def bare_loop(url: str, body: bytes) -> dict[str, float]:
    """What a user would write: urllib, a clock, json per line."""
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = last = None
    chunks = 0
    tokens = 0
    with urllib.request.urlopen(request, timeout=300) as response:
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                first = first or now
                last = now
                chunks += 1
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return {
        "tokens": tokens,
        "generation_tps": (chunks - 1) / (last - first),
        "ttft_s": first - start,
        "time_s": end - start,
        "end_to_end_tps": tokens / (end - start),
    }


def plugin_client(url: str, body: bytes) -> dict[str, float]:
    s = stream_chat(url, body).sample()
    return {"tokens": s.generation_tokens, "generation_tps": s.generation_tps, "ttft_s": s.ttft_s,
            "time_s": s.time_s, "end_to_end_tps": s.end_to_end_tps}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--model", default="synthetic:tiny")
    cli.add_argument("--url", default=None, help="a running server (default: start mlx_vlm.server)")
    cli.add_argument("--resolution", default="224x224")
    cli.add_argument("--max-tokens", type=int, default=64)
    cli.add_argument("--rounds", type=int, default=30)
    cli.add_argument("--warmup", type=int, default=2)
    cli.add_argument("--replay", type=int, default=300, help="requests per client to a replayed response")
    args = cli.parse_args()

    folder = resolve_path(args.model)
    with server_url(args.url, folder) as url:
        image = image_file(parse_resolution(args.resolution), workdir(None, "server-overhead"))
        variants = ImageVariants(Path(image))
        eos = eos_token_ids(folder)

        def body() -> bytes:
            return chat_body(str(folder), DEFAULT_PROMPT, variants.next_url(), args.max_tokens, eos)

        clients = {"bare": lambda b: bare_loop(url, b), "plugin": lambda b: plugin_client(url, b)}
        for _ in range(args.warmup):
            for fn in clients.values():
                fn(body())
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "plugin": []}
        load_before = os.getloadavg()[0]
        for i in range(args.rounds):
            order = list(clients.items())
            for name, fn in order if i % 2 == 0 else order[::-1]:
                runs[name].append(fn(body()))
        load_after = os.getloadavg()[0]
        recorded = record(url, body())

    print(f"model {args.model}, image {args.resolution}, {args.max_tokens} tokens, {args.rounds} "
          f"interleaved rounds after {args.warmup} warmup; server {url if args.url else 'mlx_vlm.server started here'}")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load average (1 min) {load_before:.2f} before, "
          f"{load_after:.2f} after")
    tokens = {name: sorted({r["tokens"] for r in rs}) for name, rs in runs.items()}
    print(f"tokens generated: bare {tokens['bare']}, plugin {tokens['plugin']}")
    for metric in ("generation_tps", "end_to_end_tps", "ttft_s", "time_s"):
        b = statistics.median(r[metric] for r in runs["bare"])
        p = statistics.median(r[metric] for r in runs["plugin"])
        print(f"{metric:>16}: bare {b:10.4f}  plugin {p:10.4f}  plugin/bare {p / b:.4f}")
    for name, rs in runs.items():
        print(f"{name:>6} decode tok/s per round: " + " ".join(f"{r['generation_tps']:.0f}" for r in rs))
    b = statistics.median(r["generation_tps"] for r in runs["bare"])
    p = statistics.median(r["generation_tps"] for r in runs["plugin"])
    diff = (p - b) / b * 100
    print(f"median decode tok/s: plugin {p:.2f} vs bare {b:.2f} ({diff:+.2f}%): "
          f"{'within 2%' if abs(diff) <= 2 else 'NOT within 2%'}")
    replayed(recorded, args.replay)


def record(url: str, body: bytes) -> bytes:
    """The raw bytes of one streamed response."""
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return response.read()


def replayed(raw: bytes, n: int) -> None:
    """Both clients against a local server that answers with ``raw`` at once."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Replay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    body = chat_body("m", DEFAULT_PROMPT, None, 64)
    chunks = raw.count(b'"content":"')
    times: dict[str, list[float]] = {"bare": [], "plugin": []}
    clients = {"bare": lambda: bare_loop(url, body), "plugin": lambda: plugin_client(url, body)}
    try:
        for i in range(n + 10):
            order = list(clients.items())
            for name, fn in order if i % 2 == 0 else order[::-1]:
                t = fn()["time_s"]
                if i >= 10:
                    times[name].append(t)
    finally:
        httpd.shutdown()
        httpd.server_close()
    b, p = statistics.median(times["bare"]), statistics.median(times["plugin"])
    print(f"replayed response ({len(raw)} bytes, {chunks} content chunks), {n} interleaved requests "
          f"per client after 10 warmup: median time per request bare {b * 1e3:.3f} ms, plugin "
          f"{p * 1e3:.3f} ms; the plugin's client adds {(p - b) * 1e6:+.0f} us a request "
          f"({(p - b) / max(chunks, 1) * 1e6:+.1f} us a chunk)")


if __name__ == "__main__":
    main()
