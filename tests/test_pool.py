"""Keep-alive connections (suites/server/pool.py) and the client through them: reused across
requests, connected before the clock starts, dropped when the server closed them, cut on abort."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pytest_mlxvlm.suites.server.client import chat_body, stream_chat
from pytest_mlxvlm.suites.server.pool import ConnectionPool
from pytest_mlxvlm.suites.server.process import ServerError


class KeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 with chunked server-sent events, as uvicorn answers; counts connections."""

    protocol_version = "HTTP/1.1"
    connections: set = set()
    close_after = False  # answer with Connection: close
    hold = threading.Event()  # set: the stream waits after its first chunk (until released)
    release = threading.Event()

    def log_message(self, *args):
        pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self):
        try:
            self._answer()
        except OSError:  # the client cut the connection (abort)
            self.close_connection = True

    def _answer(self):
        type(self).connections.add(self.client_address)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if self.close_after:
            self.send_header("Connection", "close")
        self.end_headers()
        for i in range(request["max_tokens"]):
            chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i}"}, "finish_reason": None}]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.hold.is_set():
                self.release.wait(10)
        usage = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": request["max_tokens"]}}
        self._chunk(f"data: {json.dumps(usage)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


@pytest.fixture
def keepalive():
    KeepAlive.connections = set()
    KeepAlive.close_after = False
    KeepAlive.hold.clear()
    KeepAlive.release.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    KeepAlive.release.set()
    httpd.shutdown()
    httpd.server_close()


def test_requests_reuse_one_connection(keepalive):
    pool = ConnectionPool(keepalive, timeout_s=10)
    for _ in range(5):
        timing = stream_chat(keepalive, chat_body("m", "hi", None, 4), 10, pool=pool)
        assert timing.completion_tokens == 4
    assert len(KeepAlive.connections) == 1 and pool.opened == 1
    pool.close()


def test_without_a_pool_each_request_has_its_own_connection(keepalive):
    for _ in range(3):
        stream_chat(keepalive, chat_body("m", "hi", None, 2), 10)
    assert len(KeepAlive.connections) == 3


def test_a_connection_the_server_closed_is_not_reused(keepalive):
    KeepAlive.close_after = True
    pool = ConnectionPool(keepalive, timeout_s=10)
    for _ in range(3):
        stream_chat(keepalive, chat_body("m", "hi", None, 2), 10, pool=pool)
    assert pool.opened == 3 and len(KeepAlive.connections) == 3


def test_an_idle_connection_closed_by_the_server_is_replaced(keepalive):
    pool = ConnectionPool(keepalive, timeout_s=10)
    stream_chat(keepalive, chat_body("m", "hi", None, 2), 10, pool=pool)
    pool._idle[0].sock.shutdown(0)  # as if the server's keep-alive timeout had closed it
    stream_chat(keepalive, chat_body("m", "hi", None, 2), 10, pool=pool)
    assert pool.opened == 2


def test_abort_cuts_the_requests_in_flight(keepalive):
    KeepAlive.hold.set()
    pool = ConnectionPool(keepalive, timeout_s=30)
    errors = []

    def one():
        try:
            stream_chat(keepalive, chat_body("m", "hi", None, 4), 30, pool=pool)
        except ServerError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30  # until the server has all three requests, however loaded the machine
    while len(KeepAlive.connections) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    assert pool.abort() == 3
    for t in threads:
        t.join(5)
    assert time.monotonic() - started < 2 and len(errors) == 3
    assert not any(t.is_alive() for t in threads)
