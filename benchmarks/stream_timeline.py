"""When each of N concurrent requests gets its streamed tokens (docs/serving.md, vllm-mlx): a check
of a server's batching that shares no code with the plugin's client (``http.client`` only).

Each of N threads opens its own connection, waits at a barrier, sends one streamed chat request
with an image (greedy, after one warm-up request) and reads its server-sent events; each chunk
whose delta holds a ``content`` (a string, empty or not: vllm-mlx sends a chunk per token and may hold the text back; its role chunk and either
server's finish chunk have none) is stamped on arrival. ``--stagger S`` sends request i at i x S
seconds, to see whether a request that arrives while another decodes joins it or waits. Prints,
per request, when it was sent, its first and last token chunk, and how long the requests'
token streams overlapped:

    python -m benchmarks.stream_timeline --url http://127.0.0.1:8080 --model MODEL --image IMG --clients 2
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit


def is_token(line: bytes) -> bool:
    """A server-sent ``data:`` line whose delta holds a content string."""
    if not line.startswith(b"data:") or line.strip().endswith(b"[DONE]"):
        return False
    choices = json.loads(line[5:]).get("choices") or [{}]
    return isinstance((choices[0].get("delta") or {}).get("content"), str)


def stream_once(url: str, body: bytes, start: threading.Barrier, t0: float,
                delay: float = 0.0) -> dict[str, float | int]:
    """Sends ``body`` ``delay`` s after the barrier opens; the times (s after ``t0``) of sending and
    of its token chunks. A failure breaks the barrier, so that no other request waits for it."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.connect()
        start.wait()
        time.sleep(delay)
        sent = time.perf_counter() - t0
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {response.read()[:300]!r}")
        stamps = [time.perf_counter() - t0 for line in response if is_token(line)]
    except BaseException:
        start.abort()
        raise
    finally:
        conn.close()
    if not stamps:
        raise RuntimeError(f"{url}: the stream held no token chunk (a delta with content)")
    return {"sent": sent, "first": stamps[0], "last": stamps[-1], "chunks": len(stamps)}


def overlap(spans: list[tuple[float, float]]) -> float:
    """Seconds during which two or more of ``spans`` were open at once."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    total, open_now, last = 0.0, 0, 0.0
    for when, step in events:
        if open_now >= 2:
            total += when - last
        open_now, last = open_now + step, when
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True, help="the model name the server expects")
    ap.add_argument("--image", type=Path, required=True, help="a PNG sent with every request")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stagger", type=float, default=0.0, help="seconds between two requests' sending")
    args = ap.parse_args()
    image = "data:image/png;base64," + base64.b64encode(args.image.read_bytes()).decode()
    body = json.dumps({"model": args.model, "stream": True, "max_tokens": args.max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": [
                           {"type": "text", "text": "Describe this image in detail."},
                           {"type": "image_url", "image_url": {"url": image}}]}]}).encode()
    stream_once(args.url, body, threading.Barrier(1), time.perf_counter())  # a warm-up, not shown
    for repeat in range(args.repeats):
        start, t0 = threading.Barrier(args.clients), time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(stream_once, args.url, body, start, t0, i * args.stagger)
                       for i in range(args.clients)]
            results = [future.result() for future in futures]
        for i, r in enumerate(sorted(results, key=lambda r: r["sent"])):
            print(f"repeat {repeat} request {i}: sent {r['sent']:.3f} s, first chunk {r['first']:.3f} s, "
                  f"last {r['last']:.3f} s, {r['chunks']} token chunks")
        spans = [(float(r["first"]), float(r["last"])) for r in results]
        print(f"repeat {repeat}: token streams overlapped {overlap(spans):.3f} s of "
              f"{max(b for _, b in spans) - min(a for a, _ in spans):.3f} s")


if __name__ == "__main__":
    main()
