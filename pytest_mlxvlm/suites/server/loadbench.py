"""The serving cases' benchmark object: concurrency (continuous, or synchronized rounds), an
open-loop request rate, a workload file, a memory soak. Each records a ``CaseResult`` of one
``Sample`` per request (``side="server"``) gated like any other case, its load's figures in
``workload.server``, and with ``--mlx-server-records`` every request as JSONL and CSV."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from ...config import serving
from ...config.settings import WorkloadFile
from ...harness.session import results_key
from ...harness.xdist import nodeid
from ...reports.requests import write_requests
from ...results import SERVER_SIDE, CaseResult
from .bench import MlxServer, MlxServerWarning, ServerBench
from .client import server_peak_memory
from .load import Job, LoadError, LoadRun, run_continuous, run_open_loop, run_rounds
from .loadstats import breakdown, summarize_run
from .process import ServerError
from .soak import memory_series, overall, run_soak, server_in_flight, trend
from .workload import WorkloadJobs, expected_tokens, one_image_jobs

SETTLE_S = 60.0  # how long a server may take to drop the requests of a stopped case
OFF = "off"  # the parameter of a serving test its option did not ask for: the item is dropped
KINDS = ("concurrency", "rate", "workload", "soak")


class LoadBench(ServerBench):
    """Measures one serving case: ``kind`` is concurrency, rate, workload or soak."""

    def __init__(self, request: Any, server: MlxServer, resolution: Any, image: Path | None,
                 settings: Any, *, kind: str, clients: int = 1, rate: float | None = None,
                 fraction: float | None = None, work: WorkloadFile | None = None,
                 image_dir: Path | None = None) -> None:
        super().__init__(request, server, resolution, image, settings, clients=clients)
        self.kind, self.rate, self.fraction, self.work, self.image_dir = kind, rate, fraction, work, image_dir

    # -- what is sent ---------------------------------------------------------------------

    def _jobs(self, prompt: str, max_tokens: int) -> Callable[[int], Job]:
        server = self.server
        if self.work is not None:
            return WorkloadJobs(self.work, server.request_model, max_tokens, server.eos_ids,
                                self.image_dir or Path("."), self.settings.workload.image)
        return one_image_jobs(server.request_model, prompt, self.image, max_tokens, server.eos_ids,
                              self.resolution.id)

    def capacity(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        """The server's capacity in requests per second (continuous load at the largest
        concurrency of the sweep), measured once per server and session, for a rate sweep."""
        known = self.server.notes.get("capacity")
        if known:
            return known
        clients = max(self.settings.server.concurrency)
        requests = max(8, 3 * clients)
        run = run_continuous(self.server.request, self._jobs(prompt, max_tokens), clients,
                             requests=requests, warmup=1, abort=self.server.pool.abort)
        found = {"requests_per_s": len(run.timings) / run.duration_s, "clients": clients,
                 "requests": requests}
        self.server.notes["capacity"] = found
        return found

    def _count(self, rounds: int, rate: float | None = None) -> tuple[int | None, float | None]:
        """(requests, seconds) of the measured load."""
        plan = self.settings.server
        if self.kind == "soak":
            return (plan.soak_requests or None), plan.soak_duration_s
        if self._synchronized():
            return self._rounds(rounds) * self.clients, None
        if rate is not None:
            if plan.requests:
                return plan.requests, None
            if plan.duration_s:
                return max(4, round(plan.duration_s * rate)), None
            return serving.DEFAULT_RATE_REQUESTS, None
        if plan.duration_s:
            return None, plan.duration_s
        if plan.requests:
            return plan.requests, None
        if self.work is not None:
            return len(self.work.conversations), None
        return rounds * self.clients, None

    def _synchronized(self) -> bool:
        return self.settings.server.concurrency_mode == serving.SYNCHRONIZED and self.kind == "concurrency"

    def _rounds(self, rounds: int) -> int:
        """Synchronized rounds: enough for --mlx-server-requests where given, else ``rounds`` (a
        duration does not apply: a round's length is its slowest request's)."""
        requests = self.settings.server.requests
        return -(-requests // self.clients) if requests else rounds

    def _drive(self, job_at: Callable[[int], Job], rounds: int, warmup: int, rate: float | None,
               series: list[Any]) -> LoadRun:
        server, plan = self.server, self.settings.server
        requests, seconds = self._count(rounds, rate)
        abort = server.pool.abort
        if self.kind == "soak":
            return run_soak(server.request, job_at, self.clients, series, requests=requests,
                            duration_s=seconds, warmup=warmup, abort=abort)
        if rate is not None:
            if warmup:
                run_continuous(server.request, job_at, 1, requests=warmup, abort=abort)
            return run_open_loop(server.request, lambda i: job_at(warmup + i), rate, requests or 1,
                                 arrivals=plan.arrivals, abort=abort)
        if self._synchronized():
            return run_rounds(server.request, job_at, self.clients, self._rounds(rounds), warmup=warmup,
                              abort=abort)
        return run_continuous(server.request, job_at, self.clients, requests=requests, duration_s=seconds,
                              warmup=warmup, abort=abort)

    # -- the case ---------------------------------------------------------------------------

    def run(self, image: Any = None, prompt: str | None = None, *, max_tokens: int | None = None,
            rounds: int | None = None, warmup: int | None = None, **_: Any) -> CaseResult:
        """Warm up, then measure this case's load; record, write and gate it."""
        work, plan, server = self.settings.workload, self.settings.server, self.server
        prompt = work.prompt if prompt is None else prompt
        max_tokens = work.max_tokens if max_tokens is None else max_tokens
        n_rounds = work.rounds if rounds is None else rounds
        n_warmup = work.warmup if warmup is None else warmup
        job_at = self._jobs(prompt, max_tokens)
        info: dict[str, Any] = server.identity
        series: list[Any] = []
        rate = self.rate
        error = None
        try:
            server.check()  # a server that stalled earlier in the session: at once
            if self.fraction is not None:
                capacity = self.capacity(prompt, max_tokens)
                rate = self.fraction * capacity["requests_per_s"]
                info.update(capacity=capacity, capacity_fraction=self.fraction)
            if self.kind == "soak":
                series, source = memory_series(server.url, server.process.pid if server.process else None)
                info["memory_source"] = source
                if not series:
                    pytest.skip(f"mlxvlm: no memory soak: {source}")
            run = self._drive(job_at, n_rounds, n_warmup, rate, series)
        except LoadError as exc:
            run, error = exc.run, str(exc)
            if server.url not in server.stalled:
                settle(server.url)
        except ServerError as exc:
            run, error = LoadRun(mode=self.kind), str(exc)
        label = self._label_of(rate)
        rows = [r.row() for r in run.records]
        if plan.records_dir is not None and rows:
            write_requests(plan.records_dir, server.spec, self._case_key(), rows)
        if error is not None and not run.timings:
            pytest.fail(f"mlxvlm: {server.spec} {label} through the server: {error}", pytrace=False)
        info.update(summarize_run(run, max_tokens, plan.slo))
        if error is not None:  # a backlog cut (requests left unfinished) or a failed request
            info.update(stopped=error, unfinished=run.unfinished)
            if run.unfinished:
                info["saturated"] = True
        if self.kind == "soak":
            info["soak"] = self._soak_verdict(series)
        if self.work is not None:
            info["by_images"] = breakdown(run, "images")
            if any(c.multi_turn for c in self.work.conversations):
                info["by_turn"] = breakdown(run, "turn")
        info["metrics_peak_memory_gb"] = server_peak_memory(server.url)
        requests, seconds = self._count(n_rounds, rate)
        workload = {**work.describe(), "prompt": prompt, "max_tokens": max_tokens, "rounds": n_rounds,
                    "warmup": n_warmup, "clients": self.clients, "load": self.kind,
                    "image": self.work.source if self.work else
                    f"{work.describe()['image']}, a distinct corner stamp per request",
                    "requests": requests, "duration_s": seconds, "server": info}
        if rate is not None:
            workload.update(rate=round(rate, 6), arrivals=plan.arrivals)
        if self.work is not None:
            workload["workload"] = self.work.name
        result = CaseResult(
            model=server.spec, resolution=self.work.name if self.work else self.resolution.id,
            samples=[t.sample() for t in run.timings], workload=workload, load_time_s=server.load_time_s,
            test_id=nodeid(self.request.node), case_key=self._case_key(), side=SERVER_SIDE)
        self.results.append(result)
        self.request.node.stash.setdefault(results_key, []).append(result)
        if error is not None:
            self.request.config.hook.pytest_mlxvlm_case_finished(config=self.request.config, result=result)
            pytest.fail(f"mlxvlm: {server.spec} {label} through the server: {error}", pytrace=False)
        self._warn_length(result, max_tokens)
        leaks = [t for t in info.get("soak", {}).get("trends", []) if t["verdict"] == "leak"]

        def remeasure() -> list[Any]:
            try:
                again = self._drive(job_at, n_rounds, 0, rate, [])
            except ServerError as exc:
                message = f"mlxvlm: {server.spec} {label}, measured again: {exc}"
            else:
                return [t.sample() for t in again.timings]
            pytest.fail(message, pytrace=False)

        try:
            if leaks:
                pytest.fail(f"mlxvlm: {server.spec} {label}: the server's memory grows: "
                            + "; ".join(t["line"] for t in leaks), pytrace=False)
            self._gate(result, remeasure)
        finally:
            self.request.config.hook.pytest_mlxvlm_case_finished(config=self.request.config, result=result)
        return result

    def _soak_verdict(self, series: list[Any]) -> dict[str, Any]:
        """Trends of the current-memory series (the high-water one only when there is no other)."""
        threshold = self.settings.server.leak_mb
        current = [s for s in series if s.kind == "current"] or series
        trends = [trend(s.points, threshold, s.name) for s in current]
        return {
            "threshold_mb_per_100": threshold,
            "series": [{"name": s.name, "kind": s.kind, "points": [list(p) for p in s.points]} for s in series],
            "trends": [{"series": t.series, "growth_mb_per_100": t.growth_mb, "interval": [t.low_mb, t.high_mb],
                        "points": t.points, "verdict": t.verdict, "line": t.line()} for t in trends],
            "verdict": overall(trends),
        }

    def _warn_length(self, result: CaseResult, max_tokens: int) -> None:
        info = result.workload["server"]
        expected = expected_tokens(self.work, max_tokens) if self.work else {max_tokens}
        short = [s for s in result.samples if s.generation_tokens not in expected]
        if self.work is not None:
            info.update(fixed_length=not short, short_requests=len(short))
        if short:
            warnings.warn(MlxServerWarning(
                f"{result.case_key}: {len(short)} of {len(result.samples)} requests returned another "
                f"length than asked (max_tokens {', '.join(map(str, sorted(expected)))}; finish "
                f"{', '.join(info['finish_reasons'])}): the server does not keep the output length "
                "fixed; Tokens and Speed are the actual ones"))

    def _label_of(self, rate: float | None) -> str:
        if self.kind == "rate":
            where = f" ({self.fraction:g} of the capacity)" if self.fraction is not None else ""
            return f"{self.resolution.id} at {rate or 0:.3g} requests/s{where}"
        if self.kind == "workload" and self.work is not None:
            return f"workload {self.work.name} with {self.clients} clients"
        if self.kind == "soak":
            return f"{self.resolution.id} memory soak with {self.clients} clients"
        return self._label()


def settle(url: str, limit_s: float = SETTLE_S) -> None:
    """After requests were cut: wait (at most ``limit_s``) until the server has let them go,
    where it counts them (mlx_vlm.server's /metrics), so that the next case starts on an idle server."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        busy = server_in_flight(url)
        if not busy:
            return
        time.sleep(0.5)


def parametrize_serving(metafunc: pytest.Metafunc, plan: Any) -> None:
    """The serving tests' cases: one per rate (or fraction of the capacity), workload and
    concurrency, and the soak; OFF where the session did not ask for them."""
    if "mlx_server_rate" in metafunc.fixturenames:
        if plan.sweep_points:
            fractions = serving.sweep_fractions(plan.sweep_points)
            metafunc.parametrize("mlx_server_rate", [("fraction", f) for f in fractions],
                                 ids=[f"x{f:g}" for f in fractions], indirect=True)
        elif plan.rates:
            metafunc.parametrize("mlx_server_rate", [("rate", r) for r in plan.rates],
                                 ids=[serving.rate_id(r) for r in plan.rates], indirect=True)
        else:
            metafunc.parametrize("mlx_server_rate", [OFF], ids=[OFF], indirect=True)
    if "mlx_server_workload" in metafunc.fixturenames:
        cases = [(w, c) for w in plan.workloads for c in plan.concurrency]
        metafunc.parametrize("mlx_server_workload", cases or [OFF],
                             ids=[f"{w.name}-c{c}" for w, c in cases] or [OFF], indirect=True)
    if "mlx_server_soak" in metafunc.fixturenames:
        on = plan.soak_requests or plan.soak_duration_s
        metafunc.parametrize("mlx_server_soak", [max(plan.concurrency)] if on else [OFF],
                             ids=[f"c{max(plan.concurrency)}"] if on else [OFF], indirect=True)


def asked_off(item: pytest.Item) -> bool:
    """A serving test whose option was not given (dropped at collection)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) == OFF for name in ("mlx_server_rate", "mlx_server_workload", "mlx_server_soak"))
