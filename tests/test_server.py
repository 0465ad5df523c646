"""The server suite's client, process handling and faults, against small fake HTTP servers
(http.server on 127.0.0.1) and, marked slow, a real mlx_vlm.server on synthetic:tiny."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from pytest_mlxvlm.config.settings import ServerPlan
from pytest_mlxvlm.suites.server.bench import MlxServer, token_events_of
from pytest_mlxvlm.suites.server.client import (
    ServerStalled,
    chat_body,
    check_reachable,
    eos_token_ids,
    percentiles,
    stream_chat,
)
from pytest_mlxvlm.suites.server.deadlines import Deadlines
from pytest_mlxvlm.suites.server.process import ServerError, ServerProcess, free_port

# A fake OpenAI-compatible server: /health, and streamed chat completions of N chunks.
# MODE: ok | http500 | http400 | die (exits mid-stream) | eos (stops after 3 tokens)
# | keepalive (": ping" comments every 0.2 s, never a token) | trickle (one byte every 0.3 s of a
# line that never ends) | stall (2 tokens, then silence) | stall-ping (2 tokens, then pings)
# | garbage (not HTTP: ESC, NUL and text) | garbage-sse (200, then a data line of control bytes)
# | held (as vllm-mlx on a model whose tokens make no whole word: a role chunk, an empty delta per
# token, all the text in one chunk at the end) | held-blank (the same, and no text at all)
FAKE_SERVER = r'''
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD_S = 30  # how long a stalling answer keeps its connection open

GARBAGE = (b"\x1b[2J\x1b[31mNOT HTTP\x00\x07" * 400)[:4096]


def make_handler(mode, tokens=8, gap=0.01):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, body, kind="application/json"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if mode == "garbage":
                self.wfile.write(GARBAGE)
                self.close_connection = True
                return
            if self.path == "/health":
                self._send(200, json.dumps({"status": "healthy"}))
            else:
                self._send(404, '{"detail": "Not Found"}')

        def do_POST(self):
            try:
                self._answer()
            except OSError:  # the client cut the connection: not this server's error to print
                self.close_connection = True

        def _answer(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if mode == "http500":
                return self._send(500, '{"detail": "An unexpected error occurred: boom in the engine"}')
            if mode == "http400":
                return self._send(400, '{"detail": "Failed to load model: no such model"}')
            if mode == "garbage":
                self.wfile.write(GARBAGE)
                self.wfile.flush()
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if mode == "garbage-sse":
                self.wfile.write(b"data: " + GARBAGE.replace(b"\n", b" ") + b"\n\n")
                self.wfile.flush()
                return
            if mode in ("keepalive", "trickle"):
                return self._hold(b": ping\n\n" if mode == "keepalive" else b"d", 0.2 if mode == "keepalive" else 0.3)
            n = min(request["max_tokens"], 3 if mode == "eos" else tokens)
            if mode.startswith("held"):
                self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n')
            for i in range(n):
                if mode == "die" and i == 2:
                    self.wfile.flush()
                    os._exit(1)
                if mode.startswith("stall") and i == 2:
                    return self._hold(b": ping\n\n" if mode == "stall-ping" else b"", 0.2)
                delta = {} if mode.startswith("held") else {"content": f"t{i} "}
                chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(gap)
            if mode == "held":
                chunk = {"choices": [{"index": 0, "delta": {"content": "t " * n}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            finish = "length" if n == request["max_tokens"] else "stop"
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            usage = {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": n,
                     "prompt_tokens_details": {"cached_tokens": 0}},
                     "timings": {"prompt_ms": 20.0, "prompt_per_second": 5000.0, "peak_memory": 0.5}}
            for item in (done, usage):
                self.wfile.write(f"data: {json.dumps(item)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _hold(self, beat, every):
            """Keep the stream open, writing ``beat`` (if any) every ``every`` seconds."""
            end = time.monotonic() + HOLD_S
            while time.monotonic() < end:
                time.sleep(every)
                if beat:
                    try:
                        self.wfile.write(beat)
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
    return Handler

if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), make_handler(sys.argv[2])).serve_forever()
'''


def _namespace() -> dict:
    ns: dict = {"__name__": "fake_server"}
    exec(FAKE_SERVER, ns)  # noqa: S102 - our own test server
    return ns


@pytest.fixture
def fake_server(http_server):
    """Start a fake server in a thread: ``url = fake_server("ok")``; stopped after the test."""
    return lambda mode, tokens=8, gap=0.01: http_server(_namespace()["make_handler"](mode, tokens, gap))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- the client -----------------------------------------------------------------------------------

def test_a_streamed_request_is_timed_as_the_client_sees_it(fake_server):
    url = fake_server("ok")
    timing = stream_chat(url, chat_body("m", "hi", None, 8, [1, 2]))
    assert timing.completion_tokens == 8 and timing.prompt_tokens == 100 and timing.usage
    assert timing.finish_reason == "length"
    assert len(timing.chunk_times) == 8 and len(timing.itl) == 7
    assert 0 < timing.ttft_s < timing.time_s
    # the fake server sleeps 10 ms after each chunk: seven sleeps come before the eighth, so it is
    # seen at 70 ms or later however the client's reads bunch on a loaded machine (single gaps may shrink)
    assert timing.chunk_times == sorted(timing.chunk_times) and timing.chunk_times[-1] >= 0.07
    sample = timing.sample()
    assert sample.generation_tokens == 8 and sample.end_to_end_tps == pytest.approx(8 / timing.time_s)
    assert sample.prefill_s == pytest.approx(0.02) and sample.prompt_tps == 5000.0
    assert (sample.image_tokens, sample.peak_memory, sample.preprocess_s) == (0, 0.0, 0.0)
    t = timing.chunk_times  # Decode: the tokens after the first over the time from the first to the last
    assert sample.generation_tps == pytest.approx(7 / (t[-1] - t[0])) and sample.generation_tps > 0


def test_a_server_that_holds_its_text_back_is_timed_by_its_chunks(fake_server):
    """vllm-mlx sends a chunk per token and may hold the text (mlx-vlm's detokenizer emits whole
    words): timed by content, the first token would be the last; by chunks, each token counts."""
    url = fake_server("held")
    by_content = stream_chat(url, chat_body("m", "hi", None, 8, [1, 2]))
    assert len(by_content.chunk_times) == 1 and by_content.ttft_s >= 0.08  # after 8 sleeps of 10 ms
    by_chunks = stream_chat(url, chat_body("m", "hi", None, 8, [1, 2]), token_events="chunks")
    assert len(by_chunks.chunk_times) == 9  # 8 empty deltas and the text; not the role's nor the finish's
    assert by_chunks.ttft_s == by_chunks.chunk_times[0] and len(by_chunks.itl) == 8
    assert by_chunks.chunk_times == sorted(by_chunks.chunk_times) and by_chunks.text == "t " * 8
    # (gaps are not asserted: on a loaded machine the client may read several chunks at once)
    assert by_chunks.completion_tokens == 8  # from the usage, either way


def test_a_stream_with_no_text_names_the_option_that_times_it(fake_server):
    url = fake_server("held-blank")
    with pytest.raises(ServerError, match="held no content .*--mlx-server-token-events chunks"):
        stream_chat(url, chat_body("m", "hi", None, 4, [1, 2]))
    assert len(stream_chat(url, chat_body("m", "hi", None, 4, [1, 2]), token_events="chunks").chunk_times) == 4


def test_token_events_follow_the_option_else_the_server():
    assert token_events_of(ServerPlan(kind="vllm-mlx"), "vllm-mlx") == "chunks"
    assert token_events_of(ServerPlan(), "mlx_vlm") == token_events_of(ServerPlan(), "url") == "content"
    assert token_events_of(ServerPlan(kind="vllm-mlx", token_events="content"), "vllm-mlx") == "content"
    assert token_events_of(ServerPlan(token_events="chunks"), "url") == "chunks"


def test_the_request_asks_for_a_fixed_length():
    body = json.loads(chat_body("/m", "hi", "data:image/png;base64,AA", 16, [151645, 151643]))
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16 and body["temperature"] == 0.0
    assert body["logit_bias"] == {"151645": -1e4, "151643": -1e4}
    assert body["messages"][0]["content"][0] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64,AA"}}


def test_eos_ids_come_from_the_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [5, 6], "text_config": {"eos_token_id": 7}}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    assert eos_token_ids(tmp_path) == [5, 6, 7]
    assert eos_token_ids(None) == [] and eos_token_ids(tmp_path / "missing") == []


def test_percentiles_interpolate_as_numpy():
    assert percentiles([1.0, 2.0, 3.0, 4.0]) == {"p50": 2.5, "p95": pytest.approx(3.85),
                                                 "p99": pytest.approx(3.97)}
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


# -- faults -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, status, body", [
    ("http500", "HTTP 500", "boom in the engine"),
    ("http400", "HTTP 400", "Failed to load model: no such model"),
])
def test_an_http_error_names_its_status_and_body(fake_server, mode, status, body):
    url = fake_server(mode)
    with pytest.raises(ServerError, match=f"POST {url}/v1/chat/completions answered {status}.*{body}"):
        stream_chat(url, chat_body("m", "hi", None, 8))


def test_a_url_that_does_not_answer():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match=f"no answer from the server at {url}: ConnectionRefusedError"):
        check_reachable(url)
    with pytest.raises(ServerError, match="POST .* failed: ConnectionRefusedError"):
        stream_chat(url, chat_body("m", "hi", None, 8))


def test_a_server_without_health_is_asked_for_its_models(fake_server):
    url = fake_server("ok")  # answers 404 to anything but /health
    assert check_reachable(url) == {"status": "healthy"}
    with pytest.raises(ServerError, match=r"the server at .* is not ready: GET /health \(404\) and /v1/models answered HTTP 404"):
        check_reachable(url + "/prefix")


# -- stalls: every request ends at its deadline, whatever the server keeps sending ------------------

def test_the_deadlines_of_a_request():
    assert Deadlines.of(10, 64) == Deadlines(first_token_s=10, stall_s=10, total_s=20)
    assert Deadlines.of(300, 16).total_s == 375


@pytest.mark.parametrize("mode, reason", [
    ("keepalive", r"no content within 2 s of sending the request \(keep-alive comments and empty "
                  r"chunks are not progress\)"),
    ("trickle", "no content within 2 s of sending the request"),
    ("stall", "the server stalled: no content for 2 s after 2 of 8 tokens"),
    ("stall-ping", "the server stalled: no content for 2 s after 2 of 8 tokens"),
])
def test_a_stream_without_progress_ends_at_its_deadline(fake_server, mode, reason):
    # 2 s: on a loaded 2-core machine the fake server's first tokens may take most of 1 s
    url = fake_server(mode)
    started = time.monotonic()
    with pytest.raises(ServerStalled, match=f"^POST {url}/v1/chat/completions: {reason}"):
        stream_chat(url, chat_body("m", "hi", None, 8), timeout_s=2)
    assert time.monotonic() - started < 4  # the deadline, not the server's 30 s of pings


def test_a_socket_timeout_before_the_monitor_names_the_same_deadline(fake_server, monkeypatch):
    """Under load the socket's own timeout (no byte for timeout_s) can come before the deadline
    monitor wakes: the message is the deadline's all the same."""
    from pytest_mlxvlm.suites.server import deadlines

    monkeypatch.setattr(deadlines.MONITOR, "watch", lambda watch: None)  # a monitor that never wakes
    url = fake_server("stall")  # 2 s: on a loaded machine the first tokens may take most of 1 s
    with pytest.raises(ServerStalled, match=f"^POST {url}/v1/chat/completions: the server stalled: "
                                            "no content for 2 s after 2 of 8 tokens"):
        stream_chat(url, chat_body("m", "hi", None, 8), timeout_s=2)


def test_a_server_too_slow_for_the_whole_answer(fake_server):
    # a token every 0.5 s is progress, but 8 of them take 4 s: more than 2 s x (1 + 8/64); 2 s, not 1,
    # so that a loaded machine's slow first token is not taken for a stall
    url = fake_server("ok", gap=0.5)
    with pytest.raises(ServerStalled, match=r"the whole answer took more than 2.25 s \([1-7] of 8 tokens"):
        stream_chat(url, chat_body("m", "hi", None, 8), timeout_s=2)


@pytest.mark.parametrize("mode, message", [
    ("garbage", r"POST .* failed: BadStatusLine: .*\\x1b\[2J\\x1b\[31mNOT HTTP\\x00\\x07"),
    ("garbage-sse", r"a stream line that is not JSON: \\x1b\[2J"),
])
def test_garbage_from_a_server_is_quoted_printable_and_short(fake_server, mode, message):
    with pytest.raises(ServerError, match=message) as caught:
        stream_chat(fake_server(mode), chat_body("m", "hi", None, 8))
    text = str(caught.value)
    assert not any(ord(c) < 32 or ord(c) == 127 for c in text), "a control character reached the message"
    assert len(text) < 500  # the server sent 4 KB


def test_garbage_reaches_neither_the_terminal_nor_the_json_report(pytester, fake_server):
    result = pytester.runpytest(*SUITE, "--mlx-server-url", fake_server("garbage"), "--mlx-json", "r.json")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*synthetic:tiny: server: no answer from the server at *: BadStatusLine: "
                                 "\\x1b[[]2J\\x1b[[]31mNOT HTTP\\x00*"])
    errors = json.loads((pytester.path / "r.json").read_text())["errors"]
    for text in [result.stdout.str(), *errors.values()]:
        assert "\x1b" not in text and "\x00" not in text
    assert all(len(text) < 500 for text in errors.values())


@pytest.mark.parametrize("mode", ["keepalive", "stall-ping"])
def test_a_stalled_server_ends_the_session_within_twice_its_timeout(pytester, fake_server, mode):
    from pytest_mlxvlm.models.loading import resolve_path

    resolve_path("synthetic:tiny")  # built before the clock starts: the requests name its folder
    url = fake_server(mode)
    started = time.monotonic()
    timeout = 6  # twice it leaves 6 s for the session's own start and end on a loaded machine
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-timeout", str(timeout))
    took = time.monotonic() - started
    result.assert_outcomes(failed=3)
    assert took < 2 * timeout, f"the session took {took:.1f} s against a server that stalls"
    first = (f"no content within {timeout} s" if mode == "keepalive"
             else f"the server stalled: no content for {timeout} s")
    result.stdout.fnmatch_lines([
        f"*224x224 through the server: POST {url}/v1/chat/completions: {first}*",
        f"*224x224 with 2 clients through the server: not asked: the server at {url} stalled earlier "
        f"in this session, and a stalled server is not asked again: POST {url}/v1/chat/completions: {first}*",
    ])


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = ServerProcess(model="unused", port=port, log=tmp_path / "s.log")
        with pytest.raises(ServerError, match=f"cannot start the server on 127.0.0.1:{port}: the port "
                                              "is not free .*--mlx-server-port"):
            process.start()
    assert process.pid is None


def test_a_server_that_never_becomes_ready_is_stopped_with_its_log(tmp_path):
    process = ServerProcess(model="unused", timeout_s=1.5, log=tmp_path / "s.log", command=[
        sys.executable, "-c", "print('loading weights', flush=True); import time; time.sleep(60)"])
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"did not become ready within 1.5 s .* and was stopped; "
                                          r"log .*s\.log: .*loading weights"):
        process.start()
    assert time.monotonic() - started < 15
    assert process.pid is None and not process.alive


def test_a_server_that_cannot_load_its_model_says_why(tmp_path):
    process = ServerProcess(model="unused", log=tmp_path / "s.log", command=[
        sys.executable, "-c", "import sys; print('Failed to load model: bad weights'); sys.exit(3)"])
    with pytest.raises(ServerError, match=r"exited during start-up \(exit status 3\); log .*Failed to "
                                          r"load model: bad weights"):
        process.start()


def test_a_server_that_dies_mid_stream(tmp_path):
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    process = ServerProcess(model="unused", timeout_s=20, log=tmp_path / "s.log",
                            command=[sys.executable, str(script), "{port}", "die"])
    process.start()
    pid = process.pid
    server = MlxServer(spec="fake", url=process.url, request_model="m", process=process, timeout_s=10)
    try:
        with pytest.raises(ServerError, match=r"POST .*: .*the server exited \(exit status 1\)"):
            server.request(chat_body("m", "hi", None, 8))
        with pytest.raises(ServerError, match=r"^the server exited \(exit status 1\)"):
            server.request(chat_body("m", "hi", None, 8))  # later requests fail at once
    finally:
        server.stop()
    assert _gone(pid)


def test_stop_terminates_then_kills(tmp_path):
    process = ServerProcess(model="unused", timeout_s=20, log=tmp_path / "s.log", command=[
        sys.executable, "-c",
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"sys.argv = ['x', '{{port}}', 'ok']\nexec(open({str(tmp_path / 'f.py')!r}).read())"])
    (tmp_path / "f.py").write_text(FAKE_SERVER.replace('if __name__ == "__main__":', "if True:"))
    process.start()
    pid = process.pid
    process.stop()
    assert _gone(pid)


# -- through pytest: the suite against a server at a URL ----------------------------------------------

SUITE = ["-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-suite", "server",
         "--mlx-resolutions", "224x224", "--mlx-rounds", "2", "--mlx-warmup", "0",
         "--mlx-max-tokens", "8", "--mlx-server-concurrency", "1,2", "-k", "not server_cache"]


def test_the_suite_measures_a_server_at_a_url(pytester, fake_server):
    url = fake_server("ok")
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-json", "r.json",
                                "--junitxml", "j.xml")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        f"*synthetic:tiny on *, server: the server at {url}*",
        "*| Case *| Clients *| Time *| Tokens *| Speed *| Aggregate *| TTFT p50/p95/p99 *| ITL p50/p95/p99 *",
        "*| 224x224 generation *| 1 *| 8 *",
        "*| 224x224 concurrency *| 2 *| 8 *",
        "Server peak memory (its own high-water mark since it started): 0.50GB",
    ])
    doc = json.loads((pytester.path / "r.json").read_text())
    assert {r["side"] for r in doc["results"]} == {"server"}
    assert [r["case_key"] for r in doc["results"]] == [
        "pytest_mlxvlm.builtin.test_mlxvlm_server::test_server_generation[224x224]",
        "pytest_mlxvlm.builtin.test_mlxvlm_server::test_server_concurrency[c1]",
        "pytest_mlxvlm.builtin.test_mlxvlm_server::test_server_concurrency[c2]",
    ]
    two = doc["results"][2]
    assert len(two["samples"]) == 4 and two["workload"]["clients"] == 2
    assert two["workload"]["server"]["fixed_length"] is True
    assert set(two["workload"]["server"]["itl_ms"]) == {"p50", "p90", "p95", "p99"}
    assert 5 < two["workload"]["server"]["tpot_ms"]["p50"] < 100  # 10 ms a chunk
    assert "mlxvlm:224x224:server:end_to_end_tps" in (pytester.path / "j.xml").read_text()


def test_a_short_output_is_flagged(pytester, fake_server):
    result = pytester.runpytest(*SUITE, "--mlx-server-url", fake_server("eos"),
                                "--mlx-server-concurrency", "1", "-W", "default")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*MlxServerWarning*2 of 2 requests returned another length than max_tokens=8*",
        "*| 224x224 generation *| 3 ⚠ *",
        "⚠ 224x224 generation: 2 of 2 requests not 8 tokens long (finish stop)*",
    ])


def test_http_errors_fail_the_cases_with_the_body(pytester, fake_server):
    result = pytester.runpytest(*SUITE, "--mlx-server-url", fake_server("http500"))
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*synthetic:tiny 224x224 through the server: POST http://127.0.0.1:*"
                                 "/v1/chat/completions answered HTTP 500*boom in the engine*"])


def test_a_url_that_does_not_answer_errors_every_case_once(pytester):
    url = f"http://127.0.0.1:{free_port()}"
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([f"*synthetic:tiny: server: no answer from the server at {url}*; start the "
                                 "server first, or leave out --mlx-server-url to have the plugin start "
                                 "mlx_vlm.server*",
                                 "*mlxvlm: synthetic:tiny (server) not measured*"])


def test_server_cases_have_their_own_baselines_history_and_markdown(pytester, fake_server):
    url = fake_server("ok")
    args = [*SUITE, "--mlx-server-url", url, "--mlx-server-concurrency", "1"]
    first = pytester.runpytest(*args, "--mlx-update-baselines")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["*2 baseline case(s) written to *synthetic-tiny.json*"])
    stored = json.loads(next((pytester.path / "baselines").rglob("synthetic-tiny.json")).read_text())
    assert sorted(stored["cases"]) == [
        "pytest_mlxvlm.builtin.test_mlxvlm_server::test_server_concurrency[c1]",
        "pytest_mlxvlm.builtin.test_mlxvlm_server::test_server_generation[224x224]",
    ]
    again = pytester.runpytest(*args, "--mlx-markdown", "pr.md", "--mlx-history", "h.jsonl")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["*mlxvlm baselines (*): 2 compared, 0 regressed, 0 new, 0 unused*"])
    markdown = (pytester.path / "pr.md").read_text()
    assert "`pytest_mlxvlm.builtin.test_mlxvlm_server::test_server_generation[224x224]` | Speed" in markdown
    history = json.loads((pytester.path / "h.jsonl").read_text())
    assert all("test_mlxvlm_server" in c["case_key"] for c in history["cases"])


@pytest.mark.parametrize("args, message", [
    (["--mlx-server-url", "localhost:8080"], "--mlx-server-url 'localhost:8080': write http://HOST:PORT"),
    (["--mlx-server-url", "http://127.0.0.1:99999"],
     "--mlx-server-url 'http://127.0.0.1:99999': write http://HOST:PORT (a port from 1 to 65535)"),
    (["--mlx-server-concurrency", "1,0"], "--mlx-server-concurrency must be between 1 and 1024, got 0"),
    (["--mlx-server-port", "70000"], "--mlx-server-port must be between 0 and 65535, got 70000"),
    (["--mlx-suite", "servers"], "unknown suite 'servers'; use auto, off, all, or images, cache, server"),
])
def test_bad_server_settings_are_refused(pytester, args, message):
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_the_cache_steps_run_only_where_the_cache_suite_is_selected_or_they_are_named(pytester):
    """A server's prefix cache is a check of its own (mlx_vlm.server 0.7.10 never reuses an
    image prompt): ``--mlx-suite server`` measures speed, ``server,cache`` adds the steps."""
    base = ["-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--co", "-q",
            "--mlx-server-url", "http://127.0.0.1:9", "--mlx-resolutions", "224x224"]

    def steps(result) -> int:
        return sum("::test_server_cache_" in line for line in result.stdout.lines)

    speed = pytester.runpytest(*base, "--mlx-suite", "server")
    assert steps(speed) == 0 and sum("::test_server_generation[" in line for line in speed.stdout.lines) == 1
    speed.stdout.fnmatch_lines(["mlxvlm: the server's prefix-cache steps (9 tests) are not run; add them with "
                                "--mlx-suite server,cache"])
    assert steps(pytester.runpytest(*base, "--mlx-suite", "server,cache")) == 9
    named = pytester.runpytest(*base, "--mlx-suite", "server", "-k", "server_cache_basic")
    assert steps(named) == 1 and "are not run" not in named.stdout.str()


# -- a real mlx_vlm.server --------------------------------------------------------------------------

def _servers_of(log_dir_hint: str) -> list[int]:
    """Process ids whose command line holds ``log_dir_hint`` (our servers' --model folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "mlx_vlm.server" in cmd and log_dir_hint in cmd:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_real_server_suite(pytester):
    result = pytester.runpytest(*SUITE, "--mlx-json", "r.json", "-v")
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "r.json").read_text())
    for case in doc["results"]:
        assert case["side"] == "server" and case["workload"]["server"]["fixed_length"]
        assert {s["generation_tokens"] for s in case["samples"]} == {8}
        assert case["workload"]["server"]["started_here"]
    port = doc["results"][0]["workload"]["server"]["url"].rpartition(":")[2]
    assert not _servers_of(f"--port {port}"), "the server outlived the session"


@pytest.mark.slow
def test_real_server_that_cannot_load_the_model(pytester, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--mlx-model={folder}", "--mlx-suite",
                                "server", "--mlx-resolutions", "224x224", "--mlx-server-concurrency", "1",
                                "-k", "not server_cache")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*server: the server exited during start-up (exit status *); log *"])
    assert not _servers_of(str(folder))


@pytest.mark.slow
def test_real_server_killed_mid_run(tmp_path):
    from pytest_mlxvlm.models.loading import resolve_path

    folder = resolve_path("synthetic:tiny")
    process = ServerProcess(model=str(folder), timeout_s=120, log=tmp_path / "s.log")
    process.start()
    server = MlxServer(spec="synthetic:tiny", url=process.url, request_model=str(folder),
                       process=process, timeout_s=60)
    try:
        assert server.request(chat_body(str(folder), "hi", None, 4)).completion_tokens == 4
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(ServerError, match=r"the server exited \(killed by SIGKILL\); log "):
            server.request(chat_body(str(folder), "hi", None, 4))
    finally:
        server.stop()


@pytest.mark.slow
def test_ctrl_c_stops_the_server(pytester):
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *SUITE, "--mlx-rounds", "50", "--mlx-max-tokens", "64"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    servers: list[int] = []
    while not servers and time.monotonic() < deadline:
        time.sleep(0.5)
        servers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                  text=True).stdout.split()]
    assert servers, "no server was started"
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in out
    time.sleep(0.5)
    assert all(_gone(pid) for pid in servers), "the server outlived Ctrl-C"


def test_adaptive_rounds_and_progress_lines(pytester, fake_server):
    result = pytester.runpytest(*SUITE, "--mlx-server-url", fake_server("ok"), "--mlx-rounds", "auto",
                                "--mlx-max-rounds", "6", "--mlx-server-concurrency", "2", "-v",
                                "--mlx-json", "r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["mlxvlm: [[]1/2[]] synthetic:tiny 224x224: Speed * tok/s, TTFT * ms, Decode * tok/s; *"])
    doc = json.loads((pytester.path / "r.json").read_text())
    one, two = doc["results"]
    assert 5 <= len(one["samples"]) <= 6 and one["workload"]["adaptive"]["stopped"]
    assert len(two["samples"]) == 2 * 5  # concurrency keeps the fixed minimum of rounds


@pytest.mark.slow
def test_real_server_refuses_bad_arguments(pytester):
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-suite",
                                "server", "--mlx-resolutions", "224x224", "--mlx-server-concurrency", "1",
                                "--mlx-server-args=--no-such-flag 3", "-k", "not server_cache")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*the server exited during start-up (exit status 2); log *"
                                 "unrecognized arguments: --no-such-flag 3*"])
