"""The cache steps through a server, the server's metrics and the choice of server: against fake
HTTP servers (a prefix cache per tenant, a wrong one keyed on the prompt alone, one shared by all
tenants) and, marked slow, a real mlx_vlm.server on synthetic:tiny."""

from __future__ import annotations

import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler

import pytest

from pytest_mlxvlm.config.settings import ServerPlan
from pytest_mlxvlm.suites.server import bench as server_module
from pytest_mlxvlm.suites.server.bench import MlxServer, start_server
from pytest_mlxvlm.suites.server.cache import ServerCacheSession, compare_first_tokens, image_refs
from pytest_mlxvlm.suites.server.client import NO_METRICS, Timing, chat_body, server_peak_memory
from pytest_mlxvlm.suites.server.process import SERVER_NEEDS, ServerError, ServerProcess, missing_packages


def _handler(mode: str, metrics: str | None) -> type[BaseHTTPRequestHandler]:
    """mode: cache (per tenant, keyed on images + prompt) | wrong (keyed on the prompt: answers
    from the first image's state) | shared (ignores the tenant) | nousage (no cached_tokens)."""
    seen: dict[tuple, list[tuple[str, float]]] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: str, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._send(200, '{"status": "healthy"}')
            if self.path == "/metrics" and metrics is not None:
                return self._send(200, metrics, "text/plain" if metrics.startswith("#") else "application/json")
            self._send(404, '{"detail": "Not Found"}')

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            content = request["messages"][0]["content"]
            images = tuple(c["image_url"]["url"] for c in content if c["type"] == "image_url")
            prompt = content[-1]["text"]
            tenant = "" if mode == "shared" else self.headers.get("X-APC-Tenant", "")
            key = (tenant, prompt) if mode == "wrong" else (tenant, images, prompt)
            name = hashlib.sha256(repr((images, prompt)).encode()).hexdigest()[:8]
            own = [(name, -0.5), ("x", -1.5), ("y", -2.5)]
            hit = key in seen
            logprobs = seen.setdefault(key, own)
            prompt_tokens = 100 + 30 * len(images)
            cached = prompt_tokens - 1 if hit else 0
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            top = [{"token": t, "logprob": lp} for t, lp in logprobs]
            first = {"choices": [{"index": 0, "delta": {"content": logprobs[0][0]}, "finish_reason": None,
                                  "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
            details = {} if mode == "nousage" else {"prompt_tokens_details": {"cached_tokens": cached}}
            usage = {"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, **details}}
            for item in (first, done, usage):
                self.wfile.write(f"data: {json.dumps(item)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
    return Handler


@pytest.fixture
def fake(http_server):
    """``url = fake("cache", metrics=None)``: a fake server in a thread, stopped after the test."""
    return lambda mode="cache", metrics=None: http_server(_handler(mode, metrics))


def _session(url: str) -> ServerCacheSession:
    return ServerCacheSession(MlxServer(spec="fake", url=url, request_model="m", timeout_s=10), max_tokens=1)


@pytest.fixture
def images(tmp_path):
    from pytest_mlxvlm.config.settings import Resolution
    from pytest_mlxvlm.measure.images import synthetic_image

    paths = []
    for seed in (1, 2):
        path = tmp_path / f"{seed}.png"
        synthetic_image(Resolution(32, 32), seed=seed).save(path)
        paths.append(path)
    return paths


# -- pure logic ---------------------------------------------------------------------------------

def _timing(logprobs=None, text="ab") -> Timing:
    return Timing(time_s=1.0, ttft_s=0.1, chunk_times=[0.1], prompt_tokens=10, cached_tokens=0,
                  completion_tokens=1, finish_reason="length", usage=True, text=text, first_logprobs=logprobs)


def test_first_tokens_compare_within_the_tolerance():
    cold = _timing([("a", -0.50), ("a", -0.50), ("b", -0.60), ("c", -3.0)])
    assert compare_first_tokens(_timing([("a", -0.52), ("a", -0.52), ("b", -0.61)]), cold) == (True, "")
    assert compare_first_tokens(_timing([("b", -0.55), ("b", -0.55), ("a", -0.56)]), cold)[0]  # a near-tie
    ok, why = compare_first_tokens(_timing([("c", -0.2), ("c", -0.2)]), cold)
    assert not ok and why == "the first token is 'c' (-0.2), a cold request's 'a' (-0.5)"
    ok, why = compare_first_tokens(_timing([("a", -0.9), ("a", -0.9)]), cold)
    assert not ok and why == "first-token log-probabilities differ by up to 0.4"
    ok, why = compare_first_tokens(_timing(None, "abc"), _timing(None, "abd"))
    assert not ok and why == "the generated text differs from character 2 (no log-probabilities)"
    assert compare_first_tokens(_timing(None, "ab"), _timing([("a", -1.0)], "ab")) == (True, "")


def test_images_go_as_paths_to_a_local_server_else_as_data_urls(images):
    assert image_refs(images, local=True) == [str(p.resolve()) for p in images]
    (url,) = image_refs(images[0], local=False)
    assert url.startswith("data:image/png;base64,iVBOR")
    assert image_refs(None, local=False) == []
    body = json.loads(chat_body("m", "hi", image_refs(images, True), 4, top_logprobs=20))
    assert [c["type"] for c in body["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20


@pytest.mark.parametrize("metrics, expected", [
    (json.dumps({"latest": {"peak_memory_gb": 1.5}, "recent": [{"peak_memory_gb": 1.25}, {}]}), 1.5),
    ('# HELP m\nvllm_mlx_metal_memory_bytes{kind="active"} 1e9\n'
     'vllm_mlx_metal_memory_bytes{kind="peak"} 2.5e9\n', 2.5),
    (json.dumps({"latest": None, "recent": []}), None),
    (None, NO_METRICS),
])
def test_peak_memory_comes_from_the_metrics_endpoint(fake, metrics, expected):
    assert server_peak_memory(fake("cache", metrics)) == expected


# -- the steps against fake servers --------------------------------------------------------------

def test_a_cache_per_tenant_gives_miss_then_hit(fake, images):
    session = _session(fake("cache"))
    first = session.step("first", images[0], "p", "MISS")
    again = session.step("repeat", images[0], "p", "HIT")
    other = session.step("other image", images[1], "p", "MISS")
    assert [s.actual for s in (first, again, other)] == ["MISS", "HIT", "MISS"]
    assert all(s.passed and s.correct for s in session.steps)
    assert (again.cached_tokens, again.prompt_tokens) == (129, 130) and again.cold_ttft_s > 0
    assert _session(fake("cache")).step("fresh", images[0], "p", "MISS").passed  # a new tenant: a fresh cache


def test_a_server_that_answers_from_another_images_state_fails(fake, images):
    session = _session(fake("wrong"))
    session.step("image A", images[0], "p", "MISS")
    wrong = session.step("image B", images[1], "p", "MISS")
    assert wrong.correct is False and not wrong.passed and wrong.actual == "HIT"
    assert "WRONG OUTPUT: differs from a cold run of the same input (the first token is" in wrong.message()


def test_a_cache_shared_across_tenants_leaves_no_request_cold(fake, images):
    session = _session(fake("shared"))
    session.step("first", images[0], "p", "MISS")
    step = session.step("repeat", images[0], "p", "HIT")
    assert not step.passed and "reported 129 cached tokens: the server shares its cache across tenants" in step.error


def test_a_server_without_cached_tokens_cannot_be_judged(fake, images):
    step = _session(fake("nousage")).step("first", images[0], "p", "MISS")
    assert not step.passed and step.error.startswith("the server reports no usage.prompt_tokens_details.cached_tokens")


def test_a_server_that_does_not_answer_fails_the_step(images):
    from pytest_mlxvlm.suites.server.process import free_port

    step = _session(f"http://127.0.0.1:{free_port()}").step("first", images[0], "p", "MISS")
    assert step.error.startswith("the input could not be run (cold, a fresh tenant): POST ")


# -- through pytest -------------------------------------------------------------------------------

CACHE = ["-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-suite", "server",
         "-k", "server_cache_basic or server_cache_same_size", "--mlx-json", "r.json"]


def test_the_steps_join_the_cache_tables_as_server_results(pytester, fake):
    url = fake("cache", json.dumps({"latest": {"peak_memory_gb": 0.75}}))
    result = pytester.runpytest(*CACHE, "--mlx-server-url", url)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlxvlm cache: server on synthetic:tiny*",
                                 "*test_server_cache_basic: repeat * HIT * HIT * 129/130 * ok*",
                                 "8 of 8 cache steps as expected"])
    doc = json.loads((pytester.path / "r.json").read_text())
    records = doc["cache"]
    assert {(r["engine"], r["side"]) for r in records} == {("server", "server")}
    assert records[0]["server"] == f"the server at {url}"


def test_wrong_output_through_the_server_fails_naming_the_step(pytester, fake):
    result = pytester.runpytest(*CACHE, "--mlx-server-url", fake("wrong"))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*step 'other image' (image B, prompt 1): expected MISS, got HIT*WRONG OUTPUT*"])


def test_expectations_for_the_server_are_data(pytester, fake):
    pytester.makeini("[pytest]\nmlx_cache_expect =\n    server: repeat = MISS\n    server: return = MISS\n")
    result = pytester.runpytest(*CACHE, "--mlx-server-url", fake("cache"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*step 'repeat' (image A, prompt 1 again): expected MISS, got HIT*"])


# -- which server ---------------------------------------------------------------------------------

def test_a_server_kind_whose_packages_are_missing_is_refused_naming_them(monkeypatch):
    monkeypatch.setattr(server_module, "missing_packages", lambda kind: ["mlx_lm", "prometheus_client"])
    with pytest.raises(ServerError, match=r"--mlx-server vllm-mlx: its server cannot start here: the Python "
                                          r"package\(s\) mlx_lm, prometheus_client are not installed \(pip "
                                          r"install vllm-mlx \(with its dependencies\)\)"):
        start_server("synthetic:tiny", ServerPlan(kind="vllm-mlx"))


def test_missing_packages_are_found_in_another_interpreter(monkeypatch, tmp_path):
    monkeypatch.setitem(SERVER_NEEDS, "vllm-mlx", ("json", "no_such_package_xyz"))
    assert missing_packages("vllm-mlx") == ["no_such_package_xyz"]
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    assert missing_packages("vllm-mlx", str(wrapper)) == ["no_such_package_xyz"]


def test_a_server_that_lacks_a_module_says_which(tmp_path):
    process = ServerProcess(model="unused", log=tmp_path / "s.log", kind="vllm-mlx", command=[
        sys.executable, "-c", "import no_such_module_for_the_server"])
    with pytest.raises(ServerError, match=r"exited during start-up \(exit status 1\); it needs the Python "
                                          r"package 'no_such_module_for_the_server', which is not installed; log "):
        process.start()


def test_the_server_kind_is_a_choice(pytester, monkeypatch):
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlx-server", "lmstudio")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mlx-server 'lmstudio': choose mlx_vlm or vllm-mlx" in result.stderr.str()
    monkeypatch.setattr(server_module, "missing_packages", lambda kind: ["mlx_lm"])
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-suite", "server",
                                "--mlx-server", "vllm-mlx", "--mlx-resolutions", "224x224",
                                "-k", "server_generation or server_cache_basic")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*--mlx-server vllm-mlx: its server cannot start here: the Python package(s) "
                                 "mlx_lm are not installed*"])


def test_the_command_of_each_kind():
    from pytest_mlxvlm.suites.server.process import server_command

    assert server_command("vllm-mlx", "py", "/m", 8000, ["--x"]) == [
        "py", "-m", "vllm_mlx.cli", "serve", "/m", "--host", "127.0.0.1", "--port", "8000", "--mllm",
        "--enable-metrics", "--x"]
    assert server_command("mlx_vlm", "py", "/m", 1, [])[:3] == ["py", "-m", "mlx_vlm.server"]


# -- a real mlx_vlm.server -------------------------------------------------------------------------

@pytest.mark.slow
def test_real_server_cache_steps(pytester):
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-suite", "server",
                                "-k", "server_cache_basic or changed_bytes", "--mlx-json", "r.json")
    result.stdout.fnmatch_lines(["*mlxvlm cache: server on synthetic:tiny*", "* of 7 cache steps as expected"])
    doc = json.loads((pytester.path / "r.json").read_text())
    steps = [s for rec in doc["cache"] for s in rec["steps"]]
    assert len(steps) == 7 and all(rec["side"] == "server" for rec in doc["cache"])
    for step in steps:  # whatever the server caches, every answer is a cold request's
        assert not step["error"] and step["correct"] is True, step
        assert step["prompt_tokens"] > 0 and step["cold_ttft_s"] > 0
    assert steps[0]["actual"] == "MISS"  # nothing cached yet
    assert "started here at http://127.0.0.1:" in doc["cache"][0]["server"]


def test_the_server_suite_skips_in_the_ab_mode_saying_why(pytester, fake):
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-suite", "server",
                                "--mlx-resolutions", "224x224", "--mlx-server-url", fake("cache"),
                                f"--mlx-ab-python={sys.executable}", "-k", "server_generation or server_cache_basic",
                                "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*the server suite measures one server; it does not run with --mlx-ab-*"])


def test_the_tables_set_the_server_beside_in_process(tmp_path):
    from benchmarks.server_tables import cases, concurrency, side_by_side

    def case(key: str, side: str, ttft: float, tps: float, server: dict | None = None) -> dict:
        samples = [{"ttft_s": ttft, "end_to_end_tps": tps, "generation_tps": tps * 2}] * 3
        return {"case_key": key, "side": side, "resolution": "448x448", "samples": samples,
                "workload": {"server": server or {}}}

    pcts = {"p50": 1.0, "p95": 2.0, "p99": 3.0}
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"results": [
        case("images::test_image_generation[448x448]", "", 0.1, 50.0),
        case("server::test_server_generation[448x448]", "server", 0.2, 40.0),
        case("server::test_server_concurrency[c4]", "server", 0.5, 10.0,
             {"clients": 4, "aggregate_tps": 38.5, "ttft_ms": pcts, "itl_ms": pcts, "e2e_ms": pcts,
              "metrics_peak_memory_gb": NO_METRICS})]}))
    found = cases([report])
    assert side_by_side(found)[2] == ("| 448x448 | 200 ms | 40.0 tok/s | 80.0 tok/s | 100 ms | 50.0 tok/s "
                                      "| 100.0 tok/s | 0.80 |")
    assert concurrency(found)[2] == ("| 448x448 | 4 | 38.5 tok/s | 10.0 tok/s | 1/2/3 ms | 1.0/2.0/3.0 ms | "
                                     "0.00 s | n/a (no metrics endpoint) |")
