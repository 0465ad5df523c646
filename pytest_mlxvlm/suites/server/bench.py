"""Benchmarking a VLM server over HTTP: start one (or reach one), stream chat completions, time them.

Three layers, the first two free of pytest and in their own modules:

- ``ServerProcess`` (``serverprocess``): ``python -m mlx_vlm.server`` on a loopback port, ready once ``/health``
  answers, its output in a log file whose tail explains a failed start or a death; stopped on
  every path out (terminate, then kill; at interpreter exit too);
- ``stream_chat`` (``serverclient``): one streamed ``/v1/chat/completions`` request with the standard library,
  timed as a client sees it (time to the first content chunk, the gaps between chunks, the end),
  with the token counts of the response's ``usage``; ``Timing.sample()`` makes it a ``Sample``;
- ``ServerBench``: the ``mlx_server_bench`` fixture's object, which measures a case (one client,
  or N concurrent ones), records a ``CaseResult`` with ``side="server"`` and gates it like an
  in-process case.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ...harness.bench import _THIS_TEST, MlxBench, describe_image
from ...harness.session import results_key
from ...harness.xdist import nodeid
from ...measure.runner import run_adaptive
from ...models.loading import ModelLoadError, resolve_path, source_kind
from ...results import SERVER_SIDE, CaseResult, Sample
from .client import (
    ImageVariants,
    ServerStalled,
    Timing,
    chat_body,
    check_reachable,
    eos_token_ids,
    run_round,
    server_peak_memory,
    stream_chat,
    summarize_timings,
)
from .pool import ConnectionPool
from .process import SERVER_INSTALL, ServerError, ServerProcess, health, missing_packages

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
    kind: str = "mlx_vlm"  # the server started here (settings.SERVER_KINDS); "url" for --mlx-server-url
    # URL -> the first stall's reason: shared by the session's servers, which stop asking a
    # server that stalled once (each of its requests would wait out its deadline again)
    stalled: dict[str, str] = field(default_factory=dict)
    pool: ConnectionPool | None = None  # keep-alive connections its requests reuse
    notes: dict[str, Any] = field(default_factory=dict)  # what a session learnt of it (capacity, cache probe)
    token_events: str = "content"  # what marks a token in its stream (client.stream_chat)

    def __post_init__(self) -> None:
        if self.pool is None:
            self.pool = ConnectionPool(self.url, self.timeout_s)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    @property
    def identity(self) -> dict[str, Any]:
        """What a case's report says of the server (its ``workload["server"]``)."""
        return {"url": self.url, "started_here": self.started_here, "kind": self.kind,
                "token_events": self.token_events}

    def check(self) -> None:
        """ServerError when a server started here has died (with its exit and log), or when
        the server stalled earlier in this session (with the first stall's reason)."""
        if self.process is not None:
            death = self.process.death()
            if death:
                raise ServerError(death)
        reason = self.stalled.get(self.url)
        if reason is not None:
            raise ServerStalled(f"not asked: the server at {self.url} stalled earlier in this "
                                f"session, and a stalled server is not asked again: {reason}")

    def request(self, body: bytes, headers: dict[str, str] | None = None) -> Timing:
        """One timed request; a failure says whether the server died and why; a stall marks
        the server as not to be asked again."""
        self.check()
        try:
            return stream_chat(self.url, body, self.timeout_s, headers, pool=self.pool,
                               token_events=self.token_events)
        except ServerStalled as exc:
            self.stalled.setdefault(self.url, str(exc))
            raise
        except ServerError as exc:
            time.sleep(0.2)  # a dying server: let its exit status arrive
            death = self.process.death() if self.process is not None else None
            if death:
                raise ServerError(f"{exc}; {death}") from None
            raise

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.abort()
            self.pool.close()
        if self.process is not None:
            self.process.stop()


def start_server(spec: str, plan: Any, env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None, log_dir: Path | None = None,
                 stalled: dict[str, str] | None = None) -> MlxServer:
    """The server of ``spec`` for a session: reach ``plan.url``, or start ``plan.kind``'s server
    (``env`` added to its environment, ``extra_args`` to its command line, its log in
    ``log_dir``). ``stalled``: the session's servers given up on (``MlxServer.stalled``).

    ``plan`` is the session's ``ServerPlan``. Raises ServerError (or ModelLoadError for a model
    spec that cannot be resolved to a folder)."""
    stalled = {} if stalled is None else stalled
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
                         eos_ids=eos_token_ids(folder), timeout_s=plan.timeout_s, info=info, kind="url",
                         stalled=stalled, token_events=token_events_of(plan, "url"))
    kind = getattr(plan, "kind", "mlx_vlm")
    missing = missing_packages(kind)
    if missing:
        raise ServerError(f"--mlx-server {kind}: its server cannot start here: the Python package(s) "
                          f"{', '.join(missing)} are not installed ({SERVER_INSTALL[kind]})")
    folder = resolve_path(spec)
    process = ServerProcess(model=str(folder), port=plan.port, timeout_s=plan.timeout_s,
                            extra_args=[*plan.args, *(extra_args or [])], kind=kind, env=dict(env or {}),
                            log_dir=log_dir)
    start = time.perf_counter()
    process.start()
    return MlxServer(spec=spec, url=process.url, request_model=str(folder),
                     eos_ids=eos_token_ids(folder), process=process, timeout_s=plan.timeout_s,
                     info=health(process.url) or {}, load_time_s=time.perf_counter() - start, kind=kind,
                     stalled=stalled, token_events=token_events_of(plan, kind))


def token_events_of(plan: Any, kind: str) -> str:
    """--mlx-server-token-events, or by the server: chunks for vllm-mlx (one chunk per token,
    its text held back until a character or word is whole), content otherwise."""
    chosen = getattr(plan, "token_events", None)
    return chosen or ("chunks" if kind == "vllm-mlx" else "content")


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
            server.check()  # a server that stalled earlier in the session: at once
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
        workload["server"] = {**server.identity,
                              **summarize_timings(timings, walls, self.clients, max_tokens),
                              "metrics_peak_memory_gb": server_peak_memory(server.url)}
        result = CaseResult(
            model=server.spec,
            resolution=self.resolution.id if path is not None else "text",
            samples=samples, warmup=warm, workload=workload,
            load_time_s=server.load_time_s, test_id=nodeid(self.request.node),
            case_key=self._case_key(), side=SERVER_SIDE,
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

