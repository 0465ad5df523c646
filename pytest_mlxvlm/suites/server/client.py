"""A streamed chat-completions client timed as a client sees it (no pytest here): time to the
first content chunk, the gaps between chunks, the end, the token counts of the response's
``usage``; ``Timing.sample()`` makes a ``Sample``; concurrent clients in rounds.

Every request is bounded in time (``Deadlines``): a server that keeps its stream open without
sending content (SSE keep-alive comments, a byte now and then) fails the request as a stall,
``ServerStalled``, within the time ``--mlx-server-timeout`` allows, never later."""

from __future__ import annotations

import base64
import http.client
import io
import json
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...common.validate import printable
from ...results import Sample
from .deadlines import Deadlines, Watch
from .pool import DRAIN_S, ConnectionPool
from .process import ServerError, _connection

EOS_BIAS = -1.0e4  # logit bias that keeps end-of-sequence tokens from being chosen
BODY_EXCERPT = 300  # characters of a server's answer quoted in an error


class ServerStalled(ServerError):
    """A request that made no progress in time: no first token, a stall mid-answer, or an
    answer too slow as a whole. The session gives up on a server after its first stall."""


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
        raise ServerError(f"no answer from the server at {url}: {type(exc).__name__}: {_short(str(exc))}; start "
                          "the server first, or leave out --mlx-server-url to have the plugin start "
                          "mlx_vlm.server") from None
    if status != 200:
        raise ServerError(f"the server at {url} is not ready: GET {asked} answered HTTP "
                          f"{status} {reason}: {_short(body)}")
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _short(body: bytes | str) -> str:
    """A server's answer in a message: printable (no ESC or NUL reaches the terminal or the
    JSON report), one line, at most BODY_EXCERPT characters."""
    text = printable(body, BODY_EXCERPT).strip()
    return text or "(empty body)"


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """Linear-interpolation percentiles (numpy's default); 0 for no values."""
    import numpy as np  # here: loading the plugin imports no heavy library (tests/test_startup.py)

    found = np.percentile(values, qs) if values else [0.0] * len(qs)
    return {f"p{q}": float(v) for q, v in zip(qs, found)}


@dataclass
class Timing:
    """One streamed request as the client saw it (seconds from sending it)."""

    time_s: float  # until the stream ended
    ttft_s: float  # until the first token event (a chunk with content, or any token chunk)
    chunk_times: list[float]  # each token event's arrival (stream_chat's ``token_events``)
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_reason: str | None
    usage: bool  # whether the server sent usage (else completion_tokens counts chunks)
    server_timings: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    started: float = 0.0  # perf_counter when the request was sent
    ended: float = 0.0
    first_logprobs: list[tuple[str, float]] | None = None  # the first token's (token, logprob), chosen first
    cached_reported: bool = False  # whether usage held prompt_tokens_details.cached_tokens

    @property
    def itl(self) -> list[float]:
        """Inter-token latencies: the gaps between consecutive token events."""
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:])]

    def sample(self) -> Sample:
        """The request as a Sample; what a client cannot see is 0 (see docs/server.md)."""
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


def chat_body(model: str, prompt: str, image_url: str | list[str] | None, max_tokens: int,
              eos_ids: list[int] | None = None, top_logprobs: int = 0) -> bytes:
    """A streamed, greedy chat-completions request; EOS ids biased away for a fixed length;
    with ``top_logprobs``, each token's log-probability and its ``top_logprobs`` rivals."""
    content: list[dict[str, Any]] = []
    urls = image_url if isinstance(image_url, list) else [] if image_url is None else [image_url]
    for url in urls:
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": prompt})
    body: dict[str, Any] = {
        "model": model, "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": max_tokens, "temperature": 0.0, "seed": 0,
        "messages": [{"role": "user", "content": content}],
    }
    if eos_ids:
        body["logit_bias"] = {str(i): EOS_BIAS for i in eos_ids}
    if top_logprobs:
        body.update(logprobs=True, top_logprobs=top_logprobs)
    return json.dumps(body).encode()


def first_token_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]] | None:
    """A stream choice's first token as [(chosen, logprob), *(rival, logprob)], or None."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content or not isinstance(content[0], dict) or content[0].get("logprob") is None:
        return None
    head = content[0]
    rivals = [(str(t.get("token")), float(t["logprob"])) for t in head.get("top_logprobs") or []
              if isinstance(t, dict) and t.get("logprob") is not None]
    return [(str(head.get("token")), float(head["logprob"])), *rivals]


def _requested_tokens(body: bytes) -> int:
    try:
        value = json.loads(body).get("max_tokens")
    except (ValueError, AttributeError):
        return 1
    return value if isinstance(value, int) and value > 0 else 1


def stream_chat(url: str, body: bytes, timeout_s: float = 300.0,
                headers: dict[str, str] | None = None, pool: ConnectionPool | None = None,
                token_events: str = "content") -> Timing:
    """Send one streamed chat completion and time it from sending (a connection of ``pool``, or
    one opened for it, connected before the clock starts); ServerError on any failure,
    ServerStalled when it makes no progress within its ``Deadlines`` (from ``timeout_s`` and its
    max_tokens). A token is a chunk with content, or with ``token_events="chunks"`` any
    ``is_token_chunk`` (vllm-mlx sends one a token and may hold its text back)."""
    where = f"{url}/v1/chat/completions"
    pool = pool or ConnectionPool(url, timeout_s, keep=False)
    conn: http.client.HTTPConnection | None = None
    reusable = False
    chunks: list[float] = []
    text: list[str] = []
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] = {}
    finish = None
    logprobs: list[tuple[str, float]] | None = None
    max_tokens = _requested_tokens(body)
    watchdog = Watch(Deadlines.of(timeout_s, max_tokens), max_tokens)
    start = time.perf_counter()
    try:
        conn, prefix = pool.take()  # connected (or reused) before the clock starts
        start = time.perf_counter()
        watchdog.begin(start)
        watchdog.sock = conn.sock
        conn.request("POST", prefix + "/v1/chat/completions", body,
                     {"Content-Type": "application/json", "Accept": "text/event-stream", **(headers or {})})
        if watchdog.expired:  # it passed while sending
            raise ServerStalled(f"POST {where}: {watchdog.expired}")
        response = conn.getresponse()
        if response.status >= 400:
            answer = response.read()
            if watchdog.expired:
                raise ServerStalled(f"POST {where}: {watchdog.expired}")
            raise ServerError(f"POST {where} answered HTTP {response.status} {response.reason}: "
                              f"{_short(answer)}")
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
                    text.append(piece)
                if piece or (token_events == "chunks" and is_token_chunk(choice)):
                    chunks.append(now - start)
                    watchdog.progress(now)
                if logprobs is None:
                    logprobs = first_token_logprobs(choice)
                finish = choice.get("finish_reason") or finish
            if chunk.get("usage"):
                usage = chunk["usage"]
            if isinstance(chunk.get("timings"), dict) and "prompt_ms" in chunk["timings"]:
                timings = chunk["timings"]
        end = time.perf_counter()
        if watchdog.expired and not done:  # a stream cut at its deadline (even after its finish chunk)
            raise ServerStalled(f"POST {where}: {watchdog.expired}")
        reusable = done and _drained(conn, response)
        if not done and finish is None:
            raise ServerError(f"POST {where}: the stream ended before the response was complete "
                              f"(after {len(chunks)} content chunks)")
    except ServerError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.expired:  # the watchdog shut the socket down
            raise ServerStalled(f"POST {where}: {watchdog.expired}") from None
        if isinstance(exc, socket.timeout):  # no byte for timeout_s: the socket's timeout came
            # first (under load the monitor wakes late), so name the deadline it stands for
            raise ServerStalled(f"POST {where}: {watchdog.next()[1]}") from None
        raise ServerError(f"POST {where} failed: {type(exc).__name__}: {_short(str(exc))}") from None
    finally:
        watchdog.end()
        if conn is not None:
            pool.give_back(conn, reusable and not watchdog.expired)
    if not chunks:
        hint = ("" if token_events == "chunks" else "; a server that sends one chunk per token and holds "
                "its text back (vllm-mlx) is timed with --mlx-server-token-events chunks")
        raise ServerError(f"POST {where}: the response held no content (finish_reason {finish!r}){hint}")
    details = (usage or {}).get("prompt_tokens_details") or {}
    return Timing(
        time_s=end - start, ttft_s=chunks[0], chunk_times=chunks,
        prompt_tokens=int((usage or {}).get("prompt_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        completion_tokens=int((usage or {}).get("completion_tokens") or len(chunks)),
        finish_reason=finish, usage=usage is not None, server_timings=timings,
        text="".join(text), started=start, ended=end, first_logprobs=logprobs,
        cached_reported=isinstance(details, dict) and "cached_tokens" in details,
    )


def is_token_chunk(choice: dict[str, Any]) -> bool:
    """A stream choice that stands for a token, text or not: not the role's, not the finish."""
    delta = choice.get("delta")
    return (isinstance(delta, dict) and "role" not in delta and not choice.get("finish_reason"))


def _drained(conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> bool:
    """Read what follows ``[DONE]`` (the chunked body's end, within DRAIN_S), so that the
    connection can carry the next request; False when it cannot be reused."""
    if response.will_close or conn.sock is None:
        return False
    try:
        conn.sock.settimeout(DRAIN_S)
        response.read()
    except (OSError, http.client.HTTPException):
        return False
    return response.isclosed()


# -- images and end-of-sequence ids -------------------------------------------------------------

_STAMP_LOCK = threading.Lock()
_stamp = random.SystemRandom().randrange(1 << 16)  # the last stamp this process sent


def _next_stamp() -> int:
    """A stamp no other request of this process has had (65,536 apart), shared by every
    ``ImageVariants``: cases of one session, and two clients of one process, never send the same
    image twice. It starts at a random point, so two processes (a session and a cross-check
    client) rarely meet either."""
    global _stamp
    with _STAMP_LOCK:
        _stamp = (_stamp + 1) % (1 << 16)
        return _stamp


class ImageVariants:
    """Data URLs of one image, each with a different stamp in its corner: a server's vision
    cache (keyed by pixel content; mlx_vlm.server keeps the last 20 images' features) cannot
    answer a request from an earlier one's features, in this case or an earlier one."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._base: Any = None
        self._lock = threading.Lock()

    def next_url(self) -> str | None:
        if self.path is None:
            return None
        from PIL import Image

        with self._lock:
            if self._base is None:
                with Image.open(self.path) as img:
                    self._base = img.convert("RGB")
            image = self._base.copy()
        n = _next_stamp()
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


# -- concurrent clients --------------------------------------------------------------------------

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


# -- the server's own figures ---------------------------------------------------------------------

NO_METRICS = "n/a (no metrics endpoint)"
_PROM_PEAK = re.compile(r'^\w*memory_bytes\{[^}]*kind="peak"[^}]*\}\s+([0-9.eE+-]+)', re.M)


def server_peak_memory(url: str, timeout_s: float = 10.0) -> float | str | None:
    """The server's peak memory in GB from its metrics endpoint: ``/metrics`` as mlx_vlm.server's
    JSON (the requests' ``peak_memory_gb``) or Prometheus text (vllm-mlx's ``*memory_bytes{kind="peak"}``).
    NO_METRICS when there is no such endpoint; None when it holds no memory figure."""
    try:
        status, _, body = _get(url, "/metrics", timeout_s)
    except (OSError, http.client.HTTPException):
        return NO_METRICS
    if status != 200:
        return NO_METRICS
    try:
        data = json.loads(body)
    except ValueError:
        found = [float(v) / 1e9 for v in _PROM_PEAK.findall(body.decode("utf-8", "replace"))]
        return max(found) if found else None
    if not isinstance(data, dict):
        return None
    entries = [data.get("latest"), *(data.get("recent") or [])]
    found = [float(e["peak_memory_gb"]) for e in entries if isinstance(e, dict) and e.get("peak_memory_gb")]
    return max(found) if found else None

