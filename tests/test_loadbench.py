"""The serving cases end to end (suites/server/loadbench.py through pytest) against fake
servers in threads: continuous concurrency and synchronized rounds, request rates and the knee,
workload files with sessions, the memory soak, per-request records, URL mode's cache probe, and
the faults (a stall mid-stream, HTTP 500 under load, a rate beyond capacity), each a clear error
with no thread or connection left behind."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pytest_mlxvlm.suites.server.load import LOAD_THREAD

SUITE = ["-p", "no:cacheprovider", "-p", "no:benchmark", "--mlx-model", "synthetic:tiny", "--mlx-suite", "server",
         "--mlx-resolutions", "64x64", "--mlx-warmup", "0", "--mlx-max-tokens", "4", "--mlx-rounds", "2"]


class Fake:
    """What one fake server does; its handler reads it."""

    def __init__(self, **kw: Any) -> None:
        self.gap = kw.get("gap", 0.002)  # between chunks
        self.prefill = kw.get("prefill", 0.0)  # before the first chunk
        self.serial = kw.get("serial", False)  # one request at a time
        self.fail_above = kw.get("fail_above")  # HTTP 500 beyond this many in flight
        self.stall_at = kw.get("stall_at")  # the Nth request stops after 2 chunks
        self.memory = kw.get("memory")  # "leak" or "flat": a Prometheus /metrics
        self.lock, self.busy = threading.Lock(), threading.Lock()
        self.release = threading.Event()
        self.in_flight = self.peak = self.served = 0
        self.bodies: list[dict] = []


def _handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: str, kind: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._send(200, '{"status": "healthy"}')
            if self.path == "/metrics" and fake.memory:
                mb = 300 + (fake.served * 1.0 if fake.memory == "leak" else (fake.served % 3) * 0.1)
                return self._send(200, f"process_resident_memory_bytes {mb * 1e6:.0f}\n", "text/plain")
            self._send(404, '{"detail": "Not Found"}')

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._out = False
            with fake.lock:
                fake.bodies.append(request)
                fake.in_flight += 1
                fake.peak = max(fake.peak, fake.in_flight)
                number = len(fake.bodies)
                over = fake.fail_above is not None and fake.in_flight > fake.fail_above
            try:
                if over:
                    return self._send(500, '{"detail": "An unexpected error occurred: out of KV blocks"}')
                if fake.serial:
                    with fake.busy:
                        self._stream(request, number)
                else:
                    self._stream(request, number)
            except OSError:  # the client cut the connection
                pass
            finally:
                self._finished()

        def _finished(self) -> None:
            """Out of flight (once): before the last write, since the client may send its next
            request as soon as it reads it, sooner than this thread returns."""
            if self._out:
                return
            self._out = True
            with fake.lock:
                fake.in_flight -= 1
                fake.served += 1

        def _stream(self, request: dict, number: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            time.sleep(fake.prefill)
            n = request["max_tokens"]
            prompt = sum(len(m["content"]) if isinstance(m["content"], str) else
                         sum(len(p.get("text", "")) + 64 * (p["type"] == "image_url") for p in m["content"])
                         for m in request["messages"])
            for i in range(n):
                if fake.stall_at == number and i == 2:
                    fake.release.wait(60)
                    return
                chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(fake.gap)
            usage = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": n,
                               "prompt_tokens_details": {"cached_tokens": 0}}}
            self._finished()
            self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
    return Handler


@pytest.fixture
def serve():
    """``url, fake = serve(**behaviour)``: a fake server in threads, stopped after the test."""
    servers = []

    def start(**kw: Any) -> tuple[str, Fake]:
        fake = Fake(**kw)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
        httpd.daemon_threads = True
        httpd.block_on_close = False
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append((httpd, fake))
        return f"http://127.0.0.1:{httpd.server_address[1]}", fake

    yield start
    for httpd, fake in servers:
        fake.release.set()
        httpd.shutdown()
        httpd.server_close()


def _report(pytester: pytest.Pytester) -> list[dict]:
    return json.loads((pytester.path / "r.json").read_text())["results"]


def _load_threads() -> int:
    """Threads of the load generators still alive."""
    return sum(t.name.startswith(LOAD_THREAD) for t in threading.enumerate())


# -- closed loop ----------------------------------------------------------------------------------

def test_continuous_concurrency_is_the_default_with_records(pytester, serve):
    url, fake = serve(gap=0.03)  # long enough that the 3 clients' requests overlap however late a thread starts
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-concurrency", "1,3",
                                "--mlx-server-records", "recs", "--mlx-json", "r.json", "-k", "concurrency")
    result.assert_outcomes(passed=2)
    three = _report(pytester)[1]
    info = three["workload"]["server"]
    assert info["load"] == "continuous" and info["clients"] == 3 and info["requests"] == 6
    assert len(three["samples"]) == 6 and fake.peak == 3
    assert info["aggregate_tps"] == pytest.approx(6 * 4 / info["duration_s"])
    rows = [json.loads(line) for line in (pytester.path / "recs" / "synthetic-tiny__server_concurrency-c3.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 6 and max(r["in_flight"] for r in rows) == 3 and all(len(r["itl_ms"]) == 3 for r in rows)
    header = (pytester.path / "recs" / "synthetic-tiny__server_concurrency-c3.csv").read_text().splitlines()[0]
    assert header.startswith("index,ok,error,scheduled_ms,sent_ms,ended_ms,queue_delay_ms,in_flight,ttft_ms")


def test_synchronized_rounds_are_an_option(pytester, serve):
    url, fake = serve()
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-concurrency", "2",
                                "--mlx-server-concurrency-mode", "synchronized-rounds", "--mlx-json", "r.json",
                                "-k", "concurrency")
    result.assert_outcomes(passed=1)
    info = _report(pytester)[0]["workload"]["server"]
    assert info["load"] == "synchronized-rounds" and len(info["round_wall_s"]) == 2 and info["requests"] == 4
    # a request count sets the rounds (rounded up to whole rounds); a duration does not switch the mode
    for extra, rounds in ((["--mlx-server-requests", "5"], 3), (["--mlx-server-duration", "1"], 2)):
        again = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-concurrency", "2",
                                   "--mlx-server-concurrency-mode", "synchronized-rounds", "--mlx-json", "r.json",
                                   *extra, "-k", "concurrency")
        again.assert_outcomes(passed=1)
        (case,) = _report(pytester)
        info = case["workload"]["server"]
        assert info["load"] == "synchronized-rounds" and len(info["round_wall_s"]) == rounds
        assert info["requests"] == case["workload"]["requests"] == 2 * rounds


# -- open loop ------------------------------------------------------------------------------------

def test_rates_are_gated_cases_with_the_knee_and_goodput(pytester, serve):
    # about 12 requests/s at most: 4/s keeps it a third busy, so a loaded machine's stall does not
    # push a request past the 200 ms objective; 80/s saturates it
    url, fake = serve(serial=True, prefill=0.05, gap=0.01)
    args = [*SUITE, "--mlx-server-url", url, "--mlx-server-rates", "4,80", "--mlx-server-requests", "12",
            "--mlx-server-arrivals", "constant", "--mlx-server-slo", "ttft=200", "-k", "rate"]
    first = pytester.runpytest(*args, "--mlx-update-baselines", "--mlx-json", "r.json")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines([
        "*| Rate *| Arrivals *| Requests *| Achieved *| Aggregate *| TTFT p50/p95 *| ITL p50/p95 *| In flight first/peak "
        "*| Queue growth *| Goodput *| Verdict *|",
        "*| 4/s *| constant *| 12 *| sustained *|",
        "*| 80/s *| constant *| 12 *| queue grows *|",
        "Knee: between 4 requests/s (queue bounded) and 80 requests/s (queue grows without bound)",
        "Goodput: requests per second that met every objective (TTFT <= 200 ms)",
    ])
    slow, fast = _report(pytester)
    assert slow["case_key"].endswith("test_server_rate[4rps]") and slow["workload"]["rate"] == 4.0
    assert slow["workload"]["server"]["goodput"]["fraction"] == 1.0
    assert fast["workload"]["server"]["saturated"] and fast["workload"]["server"]["goodput"]["fraction"] < 0.5
    again = pytester.runpytest(*args, "--mlx-history", "h.jsonl")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["*mlxvlm baselines (*): 2 compared, 0 regressed, 0 new, 0 unused*"])
    history = json.loads((pytester.path / "h.jsonl").read_text())
    assert [c["case_key"].rpartition("::")[2] for c in history["cases"]] == [
        "test_server_rate[4rps]", "test_server_rate[80rps]"]


def test_a_sweep_measures_the_capacity_first(pytester, serve):
    url, fake = serve(serial=True, prefill=0.02, gap=0.005)
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-rates", "sweep:2",
                                "--mlx-server-requests", "10", "--mlx-server-concurrency", "2", "-k", "rate",
                                "--mlx-json", "r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["Capacity (for the sweep): * requests/s at 2 clients kept in flight (8 requests)"])
    quarter, half = _report(pytester)
    assert quarter["case_key"].endswith("[x0.25]") and half["case_key"].endswith("[x0.5]")
    capacity = quarter["workload"]["server"]["capacity"]["requests_per_s"]
    assert half["workload"]["rate"] == pytest.approx(capacity / 2, rel=1e-3)


# -- workloads ------------------------------------------------------------------------------------

def test_a_workload_file_with_a_session(pytester, serve):
    url, fake = serve()
    lines = [{"text": "Short.", "image": "64x64"}, {"text": "Longer prompt here.", "image": "96x96", "output_length": 6},
             {"session_id": "chat", "turns": [{"text": "What is it?", "image": "64x64"}, {"text": "And then?"}]}]
    (pytester.path / "work.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-workload", "work.jsonl",
                                "--mlx-server-concurrency", "2", "-k", "workload", "--mlx-json", "r.json",
                                "--mlx-server-records", "recs")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["Workload work with 2 clients (4 requests, *work.jsonl):",
                                 "*| Images *| Requests *| Prompt tok *| Cached tok *| TTFT p50 *| E2E p50 *|",
                                 "*| Turn *| Requests *| Prompt tok *| Cached tok *| TTFT p50 *|"])
    case = _report(pytester)[0]
    assert case["case_key"].endswith("test_server_workload[work-c2]")
    assert sorted(s["generation_tokens"] for s in case["samples"]) == [4, 4, 4, 6]
    assert case["workload"]["server"]["fixed_length"] is True
    second = next(b for b in fake.bodies if b["messages"][-1]["content"][-1]["text"] == "And then?")
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["user", "assistant", "user"] and second["messages"][1]["content"] == "t0 t1 t2 t3 "
    assert second["messages"][0]["content"][0]["type"] == "image_url"  # the first turn's image, again
    rows = [json.loads(x) for x in (pytester.path / "recs" / "synthetic-tiny__server_workload-work-c2.jsonl")
            .read_text().splitlines()]
    assert sorted((r.get("session"), r.get("turn")) for r in rows if "turn" in r) == [("chat", 1), ("chat", 2)]


# -- the memory soak ------------------------------------------------------------------------------

@pytest.mark.parametrize("memory, outcome", [("flat", "passed"), ("leak", "failed")])
def test_the_soak_fails_a_growing_memory_only(pytester, serve, memory, outcome):
    url, fake = serve(memory=memory, gap=0.0)
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-soak", "40",
                                "--mlx-server-concurrency", "2", "-k", "soak", "--mlx-json", "r.json")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines([
        "Memory soak: 40 requests, 2 in flight, * s; memory from the server's /metrics; the first fifth left out "
        "of the trend; threshold 8 MB per 100 requests:",
        f"  verdict: {'no leak' if memory == 'flat' else 'leak'}"])
    if memory == "leak":
        result.stdout.fnmatch_lines(["*the server's memory grows: /metrics process_resident_memory_bytes: * MB; "
                                     "growth +1??.?? MB per 100 requests (95% interval *; threshold 8): leak*"])
    assert pytester.path.joinpath("baselines").exists() is False


def test_a_soak_without_a_memory_figure_is_skipped(pytester, serve):
    url, fake = serve()
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-soak", "20", "-k", "soak", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*no memory soak: the server at {url} reports no memory (no /metrics gauge of it) "
                                 "and was not started here*"])


# -- URL mode and the cache -----------------------------------------------------------------------

def test_url_mode_skips_the_cache_steps_of_a_server_that_reuses_nothing(pytester, serve):
    url, fake = serve()
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-suite", "server",
                                "--mlx-server-url", url, "-k", "server_cache", "-rs")
    result.assert_outcomes(skipped=9)
    result.stdout.fnmatch_lines([f"SKIPPED [[]4[]] *: mlxvlm: the server at {url} reused no cached tokens (a text prompt "
                                 "sent twice: 0 of its * prompt tokens cached); start it with its prefix cache on to "
                                 "check HIT/MISS"])
    assert result.ret == 0 and len(fake.bodies) == 2  # asked once for the session


# -- faults ---------------------------------------------------------------------------------------

def test_a_stall_mid_stream_fails_the_case_in_bounded_time(pytester, serve):
    url, fake = serve(stall_at=3, gap=0.01)
    before = _load_threads()
    started = time.monotonic()
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-concurrency", "2",
                                "--mlx-server-timeout", "2", "--mlx-server-requests", "8", "-k", "concurrency")
    assert time.monotonic() - started < 20
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*synthetic:tiny 64x64 with 2 clients through the server: POST */v1/chat/completions: "
                                 "the server stalled: no content for 2 s after 2 of 4 tokens (request [34] of the run, ? in flight "
                                 "when it failed)*"])
    assert _load_threads() == before, "the load generator left threads behind"


def test_http_500_under_load_fails_with_the_body_and_the_load(pytester, serve):
    url, fake = serve(fail_above=2, prefill=0.05)
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-concurrency", "1,3",
                                "--mlx-server-requests", "9", "-k", "concurrency")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*64x64 with 3 clients through the server: POST */v1/chat/completions answered HTTP 500 "
                                 "Internal Server Error: *out of KV blocks* (request * of the run, 3 in flight when it failed)*"])


def test_a_rate_beyond_capacity_ends_in_bounded_time_with_the_backlog(pytester, serve):
    url, fake = serve(serial=True, prefill=0.25, gap=0.01)  # 3-4 requests/s at most
    before = _load_threads()
    started = time.monotonic()
    result = pytester.runpytest(*SUITE, "--mlx-server-url", url, "--mlx-server-rates", "60", "--mlx-server-requests",
                                "40", "-k", "rate", "--mlx-json", "r.json")
    took = time.monotonic() - started
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*64x64 at 60 requests/s through the server: the server did not keep up with 60 requests/s (poisson "
        "arrivals): * of 40 requests unfinished * s after the first was sent (arrivals took * s, then * s more were "
        "allowed); the backlog grew to * requests in flight (*); lower the rate, or find the knee with "
        "--mlx-server-rates sweep*",
        "*| 60/s *| poisson *| * (+* cut) *| stopped: backlog *|",
        "Knee: below 60 requests/s, the lowest rate measured: the queue grew at every rate"])
    assert took < 20 and _load_threads() == before
    case = _report(pytester)[0]
    assert case["outcome"] == "failed" and case["workload"]["server"]["unfinished"] > 5
    assert not (pytester.path / "baselines").exists()
