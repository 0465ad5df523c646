"""Benchmarking a VLM server over HTTP: start one (or reach one), stream chat completions, time them.

Three layers, the first two free of pytest:

- ``ServerProcess``: ``python -m mlx_vlm.server`` on a loopback port, ready once ``/health``
  answers, its output in a log file whose tail explains a failed start or a death; stopped on
  every path out (terminate, then kill; at interpreter exit too);
- ``stream_chat``: one streamed ``/v1/chat/completions`` request with the standard library,
  timed as a client sees it (time to the first content chunk, the gaps between chunks, the end),
  with the token counts of the response's ``usage``; ``Timing.sample()`` makes it a ``Sample``;
- ``ServerBench``: the ``mlx_server_bench`` fixture's object, which measures a case (one client,
  or N concurrent ones), records a ``CaseResult`` with ``side="server"`` and gates it like an
  in-process case.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import io
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest

from .bench import _THIS_TEST, MlxBench, describe_image, results_key
from .models import ModelLoadError, resolve_path, source_kind
from .results import CaseResult, Sample
from .runner import run_adaptive
from .workers import exit_reason
from .xdist import nodeid

LOG_TAIL = 1500  # characters of a server's log (or an error body) quoted in an error
HOST = "127.0.0.1"
SIDE = "server"  # CaseResult.side of every case measured through a server
EOS_BIAS = -1.0e4  # logit bias that keeps end-of-sequence tokens from being chosen
_LIVE: set[ServerProcess] = set()


class ServerError(RuntimeError):
    """A server that would not start, died, answered with an error, or did not answer."""


# -- the server process -----------------------------------------------------------------------

def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_taken(port: int, host: str = HOST) -> str | None:
    """Why ``port`` cannot be listened on (in use, not allowed), or None when it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGTERM when pytest dies, even by SIGKILL (no orphan)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass(eq=False)
class ServerProcess:
    """One ``python -m mlx_vlm.server`` serving ``model`` on 127.0.0.1."""

    model: str  # the folder (or hub id) passed as --model
    port: int = 0  # 0: a free port
    timeout_s: float = 300.0  # to become ready
    extra_args: list[str] = field(default_factory=list)
    python: str = sys.executable
    log: Path | None = None
    command: list[str] | None = None  # replaces the default command (tests)
    _proc: subprocess.Popen[bytes] | None = None
    _log_fh: Any = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def tail(self) -> str:
        """The last lines of the server's log, on one line."""
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_bytes()[-LOG_TAIL:].decode("utf-8", "replace").strip()
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-LOG_TAIL:]

    def start(self) -> None:
        """Start the server and wait until ``/health`` answers; ServerError if it does not."""
        if self.port:
            taken = port_taken(self.port)
            if taken:
                raise ServerError(f"cannot start the server on {HOST}:{self.port}: the port is not "
                                  f"free ({taken}); choose another with --mlx-server-port, or 0 "
                                  "for a free one")
        else:
            self.port = free_port()
        if self.log is None:
            fd, name = tempfile.mkstemp(prefix="mlxvlm-server-", suffix=".log")
            os.close(fd)
            self.log = Path(name)
        command = self.command or [self.python, "-m", "mlx_vlm.server", "--model", self.model,
                                   "--host", HOST, "--port", str(self.port), *self.extra_args]
        command = [c.replace("{port}", str(self.port)) for c in command]
        self._log_fh = open(self.log, "ab")
        self._log_fh.write(f"$ {shlex.join(command)}\n".encode())
        self._log_fh.flush()
        try:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C reaches pytest, which stops the server
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            self._log_fh.close()
            raise ServerError(f"could not start {command[0]}: {exc}") from None
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            code = self._proc.poll() if self._proc is not None else None
            if code is not None:
                raise ServerError(f"the server exited during start-up ({exit_reason(code)}); "
                                  f"log {self.log}: {self.tail() or '(empty)'}")
            if health(self.url, timeout_s=2.0) is not None:
                return
            if time.monotonic() > deadline:
                raise ServerError(f"the server did not become ready within {self.timeout_s:g} s "
                                  f"(no answer from {self.url}/health) and was stopped; "
                                  f"log {self.log}: {self.tail() or '(empty)'}")
            time.sleep(0.2)

    def death(self) -> str | None:
        """Why the server is gone (exit status, log tail), or None while it runs."""
        if self._proc is None:
            return "the server was stopped"
        code = self._proc.poll()
        if code is None:
            return None
        return f"the server exited ({exit_reason(code)}); log {self.log}: {self.tail() or '(empty)'}"

    def stop(self) -> None:
        """Terminate, then kill; close the log. Safe to call twice."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None and proc.poll() is None:
            for stop, wait in ((proc.terminate, 5.0), (proc.kill, 5.0)):
                stop()
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None


def stop_all() -> None:
    """Stop every server still running (session end, Ctrl-C, interpreter exit)."""
    for server in list(_LIVE):
        server.stop()


atexit.register(stop_all)


# -- HTTP ---------------------------------------------------------------------------------------

def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"bad server URL {url!r}: write http://HOST:PORT")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname, parts.port, timeout=timeout_s), parts.path.rstrip("/")


def health(url: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """``GET /health`` as JSON (``{}`` when it is not JSON), or None when there is no 200 answer."""
    try:
        conn, prefix = _connection(url, timeout_s)
        try:
            conn.request("GET", prefix + "/health")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None
    if response.status != 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _get(url: str, path: str, timeout_s: float) -> tuple[int, str, bytes]:
    conn, prefix = _connection(url, timeout_s)
    try:
        conn.request("GET", prefix + path)
        response = conn.getresponse()
        return response.status, response.reason, response.read()
    finally:
        conn.close()


def check_reachable(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The health of a server the user runs (``/health``, else ``/v1/models`` for servers
    without one); ServerError when it does not answer or is not ready."""
    asked = "/health"
    try:
        status, reason, body = _get(url, "/health", timeout_s)
        if status == 404:
            asked = "/health (404) and /v1/models"
            status, reason, body = _get(url, "/v1/models", timeout_s)
            if status == 200:
                return {}
    except (OSError, http.client.HTTPException) as exc:
        raise ServerError(f"no answer from the server at {url}: {type(exc).__name__}: {exc}") from None
    if status != 200:
        raise ServerError(f"the server at {url} is not ready: GET {asked} answered HTTP "
                          f"{status} {reason}: {_short(body)}")
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _short(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return (text[:LOG_TAIL] + " …") if len(text) > LOG_TAIL else (text or "(empty body)")


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default); 0 for no values."""
    if not values:
        return 0.0
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return data[low] + (data[high] - data[low]) * (pos - low)


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    return {f"p{q}": _percentile(values, q) for q in qs}


@dataclass
class Timing:
    """One streamed request as the client saw it (seconds from sending it)."""

    time_s: float  # until the stream ended
    ttft_s: float  # until the first chunk with content
    chunk_times: list[float]  # each content chunk's arrival
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_reason: str | None
    usage: bool  # whether the server sent usage (else completion_tokens counts chunks)
    server_timings: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    started: float = 0.0  # perf_counter when the request was sent
    ended: float = 0.0

    @property
    def itl(self) -> list[float]:
        """Inter-token latencies: the gaps between consecutive content chunks."""
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:])]

    def sample(self) -> Sample:
        """The request as a Sample; what a client cannot see is 0 (see the README)."""
        t = self.chunk_times
        decode = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        prompt_ms = float(self.server_timings.get("prompt_ms") or 0.0)
        prompt_tps = float(self.server_timings.get("prompt_per_second") or 0.0)
        return Sample(
            time_s=self.time_s,
            ttft_s=self.ttft_s,
            preprocess_s=0.0,
            prefill_s=prompt_ms / 1000,
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
            image_tokens=0,
            generation_tokens=self.completion_tokens,
            prompt_tps=prompt_tps,
            generation_tps=decode,
            end_to_end_tps=self.completion_tokens / self.time_s if self.time_s else 0.0,
            peak_memory=0.0,
        )


def chat_body(model: str, prompt: str, image_url: str | None, max_tokens: int,
              eos_ids: list[int] | None = None) -> bytes:
    """A streamed, greedy chat-completions request; EOS ids biased away for a fixed length."""
    content: list[dict[str, Any]] = []
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    content.append({"type": "text", "text": prompt})
    body: dict[str, Any] = {
        "model": model, "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": max_tokens, "temperature": 0.0, "seed": 0,
        "messages": [{"role": "user", "content": content}],
    }
    if eos_ids:
        body["logit_bias"] = {str(i): EOS_BIAS for i in eos_ids}
    return json.dumps(body).encode()


def stream_chat(url: str, body: bytes, timeout_s: float = 300.0) -> Timing:
    """Send one streamed chat completion and time it; ServerError on any failure."""
    where = f"{url}/v1/chat/completions"
    conn, prefix = _connection(url, timeout_s)
    chunks: list[float] = []
    text: list[str] = []
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] = {}
    finish = None
    try:
        start = time.perf_counter()
        conn.request("POST", prefix + "/v1/chat/completions", body,
                     {"Content-Type": "application/json", "Accept": "text/event-stream"})
        response = conn.getresponse()
        if response.status >= 400:
            raise ServerError(f"POST {where} answered HTTP {response.status} {response.reason}: "
                              f"{_short(response.read())}")
        done = False
        while not done:
            line = response.readline()
            if not line:
                break
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            now = time.perf_counter()
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ServerError(f"POST {where}: a stream line that is not JSON: {_short(data)}") from None
            if chunk.get("error"):
                raise ServerError(f"POST {where}: the server reported an error mid-stream: "
                                  f"{_short(json.dumps(chunk['error']).encode())}")
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                piece = delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content")
                if piece:
                    chunks.append(now - start)
                    text.append(piece)
                finish = choice.get("finish_reason") or finish
            if chunk.get("usage"):
                usage = chunk["usage"]
            if isinstance(chunk.get("timings"), dict) and "prompt_ms" in chunk["timings"]:
                timings = chunk["timings"]
        end = time.perf_counter()
        if not done and finish is None:
            raise ServerError(f"POST {where}: the stream ended before the response was complete "
                              f"(after {len(chunks)} content chunks)")
    except ServerError:
        raise
    except socket.timeout:
        raise ServerError(f"POST {where}: no answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ServerError(f"POST {where} failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if not chunks:
        raise ServerError(f"POST {where}: the response held no content (finish_reason {finish!r})")
    details = (usage or {}).get("prompt_tokens_details") or {}
    return Timing(
        time_s=end - start, ttft_s=chunks[0], chunk_times=chunks,
        prompt_tokens=int((usage or {}).get("prompt_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        completion_tokens=int((usage or {}).get("completion_tokens") or len(chunks)),
        finish_reason=finish, usage=usage is not None, server_timings=timings,
        text="".join(text), started=start, ended=end,
    )


# -- images and end-of-sequence ids -------------------------------------------------------------

class ImageVariants:
    """Data URLs of one image, each with a different stamp in its corner: a server's vision
    cache (keyed by pixel content) cannot answer a request from an earlier one's features."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._base: Any = None
        self._count = 0
        self._lock = threading.Lock()

    def next_url(self) -> str | None:
        if self.path is None:
            return None
        from PIL import Image

        with self._lock:
            if self._base is None:
                with Image.open(self.path) as img:
                    self._base = img.convert("RGB")
            self._count += 1
            n = self._count
            image = self._base.copy()
        colour = (n % 256, (n // 256) % 256, 255 - n % 256)
        side = max(4, min(image.size) // 32)
        image.paste(colour, (0, 0, side, side))
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=1)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def eos_token_ids(folder: Path | None) -> list[int]:
    """The end-of-sequence ids a checkpoint folder declares (config, generation config)."""
    if folder is None:
        return []
    ids: list[int] = []
    for name in ("config.json", "generation_config.json"):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        for holder in (data, data.get("text_config") or {}):
            value = holder.get("eos_token_id") if isinstance(holder, dict) else None
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, int) and v not in ids:
                    ids.append(v)
    return ids


# -- the server a session measures --------------------------------------------------------------

@dataclass(eq=False)
class MlxServer:
    """What the ``mlx_server`` fixture gives: a server for one model, started here or not."""

    spec: str  # the --mlx-model spec
    url: str
    request_model: str  # the request's "model": the folder the server loaded, or the hub id
    eos_ids: list[int] = field(default_factory=list)
    process: ServerProcess | None = None  # None: a server the user runs (--mlx-server-url)
    timeout_s: float = 300.0
    info: dict[str, Any] = field(default_factory=dict)  # /health
    load_time_s: float = 0.0

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def check(self) -> None:
        """ServerError when a server started here has died (with its exit and log)."""
        if self.process is not None:
            death = self.process.death()
            if death:
                raise ServerError(death)

    def request(self, body: bytes) -> Timing:
        """One timed request; a failure says whether the server died and why."""
        self.check()
        try:
            return stream_chat(self.url, body, self.timeout_s)
        except ServerError as exc:
            time.sleep(0.2)  # a dying server: let its exit status arrive
            death = self.process.death() if self.process is not None else None
            if death:
                raise ServerError(f"{exc}; {death}") from None
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def run_round(send: Callable[[bytes], Timing], bodies: list[bytes]) -> tuple[list[Timing], float]:
    """The requests of ``bodies`` sent at once (one thread each, released together);
    (their timings, wall seconds from the release to the last one's end)."""
    clients = len(bodies)
    if clients == 1:
        start = time.perf_counter()
        timing = send(bodies[0])
        return [timing], time.perf_counter() - start
    results: list[Timing | None] = [None] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        barrier.wait()
        try:
            results[i] = send(bodies[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return [r for r in results if r is not None], wall


def summarize_timings(timings: list[Timing], walls: list[float], clients: int,
                      max_tokens: int) -> dict[str, Any]:
    """What a table shows beside the samples: percentiles, aggregate throughput, fixed length."""
    itl = [g for t in timings for g in t.itl]
    tokens = sum(t.completion_tokens for t in timings)
    short = [t for t in timings if t.completion_tokens != max_tokens]
    rounds_tokens = tokens / len(walls) if walls else 0
    return {
        "clients": clients,
        "ttft_ms": {k: v * 1000 for k, v in percentiles([t.ttft_s for t in timings]).items()},
        "itl_ms": {k: v * 1000 for k, v in percentiles(itl).items()},
        "tpot_ms": {k: v * 1000 for k, v in percentiles(
            [(t.time_s - t.ttft_s) / (t.completion_tokens - 1) for t in timings
             if t.completion_tokens > 1]).items()},
        "e2e_ms": {k: v * 1000 for k, v in percentiles([t.time_s for t in timings]).items()},
        "aggregate_tps": rounds_tokens / (sum(walls) / len(walls)) if walls and sum(walls) else 0.0,
        "round_wall_s": walls,
        "fixed_length": not short,
        "short_requests": len(short),
        "requests": len(timings),
        "usage_reported": all(t.usage for t in timings),
        "finish_reasons": sorted({str(t.finish_reason) for t in timings}),
        "server_peak_memory_gb": max(float(t.server_timings.get("peak_memory") or 0.0) for t in timings),
    }


# -- the pytest side: measure a case, record it, gate it ----------------------------------------

def start_server(spec: str, plan: Any) -> MlxServer:
    """The server of ``spec`` for a session: reach ``plan.url``, or start mlx_vlm.server.

    ``plan`` is the session's ``ServerPlan``. Raises ServerError (or ModelLoadError for a model
    spec that cannot be resolved to a folder)."""
    folder: Path | None = None
    if plan.url:
        if source_kind(spec) != "hub":
            folder = resolve_path(spec)
        else:
            try:
                folder = resolve_path(spec)
            except ModelLoadError:
                folder = None
        info = check_reachable(plan.url, timeout_s=min(plan.timeout_s, 30.0))
        model = str(folder) if folder is not None and source_kind(spec) != "hub" else spec
        return MlxServer(spec=spec, url=plan.url.rstrip("/"), request_model=model,
                         eos_ids=eos_token_ids(folder), timeout_s=plan.timeout_s, info=info)
    folder = resolve_path(spec)
    process = ServerProcess(model=str(folder), port=plan.port, timeout_s=plan.timeout_s,
                            extra_args=list(plan.args))
    start = time.perf_counter()
    process.start()
    return MlxServer(spec=spec, url=process.url, request_model=str(folder),
                     eos_ids=eos_token_ids(folder), process=process, timeout_s=plan.timeout_s,
                     info=health(process.url) or {}, load_time_s=time.perf_counter() - start)


class MlxServerWarning(pytest.PytestWarning):
    """A server case whose output length was not the fixed one (the server stopped early)."""


class ServerBench(MlxBench):
    """Measures one case through the server: one client, or ``clients`` at once."""

    def __init__(self, request: Any, server: MlxServer, resolution: Any, image: Path | None,
                 settings: Any, clients: int = 1) -> None:
        super().__init__(request, server, resolution, image, settings)
        self.server = server
        self.clients = clients

    def run(self, image: Any = _THIS_TEST, prompt: str | None = None, *,
            max_tokens: int | None = None, rounds: int | None = None,
            warmup: int | None = None, **_: Any) -> CaseResult:
        """Warm up, then measure ``rounds`` rounds of ``clients`` concurrent requests."""
        work = self.settings.workload
        path = self.image if image is _THIS_TEST else image
        prompt = work.prompt if prompt is None else prompt
        max_tokens = work.max_tokens if max_tokens is None else max_tokens
        n_rounds = work.rounds if rounds is None else rounds
        n_warmup = work.warmup if warmup is None else warmup
        variants = ImageVariants(Path(path) if path is not None else None)
        server = self.server
        timings: list[Timing] = []
        walls: list[float] = []

        def one_round(keep: bool = True) -> list[Sample]:
            bodies = [chat_body(server.request_model, prompt, variants.next_url(), max_tokens,
                                server.eos_ids) for _ in range(self.clients)]
            got, wall = run_round(server.request, bodies)
            if keep:
                timings.extend(got)
                walls.append(wall)
            return [t.sample() for t in got]

        workload = {**work.describe(), "prompt": prompt, "max_tokens": max_tokens,
                    "rounds": n_rounds, "warmup": n_warmup,
                    "image": describe_image(image, work.describe()["image"])
                    + (", a distinct corner stamp per request" if path is not None else ""),
                    "clients": self.clients}
        try:
            warm = [s for _ in range(n_warmup) for s in one_round(keep=False)]
            if work.adaptive and rounds is None and self.clients == 1:
                samples, more_warm, reached = run_adaptive(
                    lambda: one_round()[0], warmup=0, min_rounds=work.rounds,
                    max_rounds=work.max_rounds, budget_s=work.case_budget_s,
                    target=work.precision)
                n_rounds = len(samples)
                workload.update(rounds=n_rounds, adaptive=reached)
            else:
                samples = [s for _ in range(n_rounds) for s in one_round()]
        except ServerError as exc:
            error = f"mlxvlm: {server.spec} {self._label()} through the server: {exc}"
        else:
            error = None
        if error is not None:
            pytest.fail(error, pytrace=False)
        workload["server"] = {"url": server.url, "started_here": server.started_here,
                              **summarize_timings(timings, walls, self.clients, max_tokens)}
        result = CaseResult(
            model=server.spec,
            resolution=self.resolution.id if path is not None else "text",
            samples=samples, warmup=warm, workload=workload,
            load_time_s=server.load_time_s, test_id=nodeid(self.request.node),
            case_key=self._case_key(), side=SIDE,
        )
        self.results.append(result)
        self.request.node.stash.setdefault(results_key, []).append(result)
        info = workload["server"]
        if not info["fixed_length"]:
            warnings.warn(MlxServerWarning(
                f"{result.case_key}: {info['short_requests']} of {info['requests']} requests "
                f"returned another length than max_tokens={max_tokens} (finish "
                f"{', '.join(info['finish_reasons'])}): the server does not keep the output "
                "length fixed; Tokens and Speed are the actual ones"))

        def remeasure() -> list[Sample]:
            try:
                return [s for _ in range(n_rounds) for s in one_round(keep=False)]
            except ServerError as exc:
                message = f"mlxvlm: {server.spec} {self._label()}, measured again: {exc}"
            pytest.fail(message, pytrace=False)

        try:
            self._gate(result, remeasure)
        finally:
            self.request.config.hook.pytest_mlxvlm_case_finished(
                config=self.request.config, result=result)
        return result

    def _label(self) -> str:
        return self.resolution.id + (f" with {self.clients} clients" if self.clients > 1 else "")

