"""benchmarks/stream_timeline.py: which chunks are tokens, and how long streams overlapped."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.stream_timeline import is_token, overlap, stream_once


def chunk(delta: dict) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n"


@pytest.mark.parametrize(("line", "expected"), [
    (chunk({"role": "assistant"}), False),                      # vllm-mlx's role chunk
    (chunk({"content": ""}), True),                             # a token whose text is held back
    (chunk({"content": "a"}), True),
    (chunk({"role": "assistant", "content": "a"}), True),       # mlx_vlm.server's token chunk
    (chunk({"role": "assistant", "content": None}), False),     # mlx_vlm.server's finish chunk
    (b"data: [DONE]\n", False),
    (b": keep-alive\n", False),
])
def test_is_token(line: bytes, expected: bool) -> None:
    assert is_token(line) is expected


def test_overlap_counts_the_time_two_or_more_streams_were_open() -> None:
    assert overlap([(0.0, 2.0), (1.0, 3.0)]) == pytest.approx(1.0)
    assert overlap([(0.0, 1.0), (2.0, 3.0)]) == 0.0                # one after the other
    assert overlap([(0.0, 4.0), (1.0, 2.0), (1.5, 3.0)]) == pytest.approx(2.0)


def test_a_failed_request_says_why_and_frees_the_others() -> None:
    class Busy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"busy")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    start = threading.Barrier(1)
    try:
        with pytest.raises(RuntimeError, match="HTTP 500: b'busy'"):
            stream_once(f"http://127.0.0.1:{server.server_port}", b"{}", start, 0.0)
        assert start.broken  # a request still waiting at the barrier is let go
    finally:
        server.shutdown()
        server.server_close()
