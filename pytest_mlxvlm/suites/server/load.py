"""Load generators against a server (no pytest here): continuous concurrency (N requests in
flight, a new one sent as one ends), synchronized rounds (N released together), and open-loop
arrivals at a request rate (Poisson or constant); each returns a ``LoadRun`` of per-request
records, summarized by ``loadstats.summarize_run``.

A run stops at its first failed request: the requests still in flight are cut (their
connections shut), every thread is joined, and ``LoadError`` carries the run so far."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .client import Timing, percentiles
from .process import ServerError

DRAIN_FLOOR_S = 5.0  # an open-loop case waits at least this long for its last requests
JOIN_S = 10.0  # how long cut requests' threads may take to end

Send = Callable[[bytes], Timing]  # one request (a server's ``request``)
SendOne = Callable[[bytes, dict[str, Any]], Timing]  # what a job calls: a body and what it holds
Job = Callable[[SendOne], None]  # one request, or a session of turns sent in order


@dataclass
class RequestRecord:
    """One request as the load generator saw it (seconds from the run's start)."""

    index: int  # order of sending
    sent_s: float
    ended_s: float
    timing: Timing | None = None
    error: str | None = None
    scheduled_s: float | None = None  # open loop: when it was due
    in_flight: int = 0  # requests in flight when it was sent, itself included
    meta: dict[str, Any] = field(default_factory=dict)  # image sizes, turn, session, prompt

    @property
    def ok(self) -> bool:
        return self.timing is not None and self.error is None

    def row(self) -> dict[str, Any]:
        """The record as one line of the per-request JSONL (times in milliseconds)."""
        t = self.timing
        itl = t.itl if t else []
        out: dict[str, Any] = {
            "index": self.index, "ok": self.ok, "error": self.error,
            "scheduled_ms": None if self.scheduled_s is None else round(self.scheduled_s * 1000, 3),
            "sent_ms": round(self.sent_s * 1000, 3), "ended_ms": round(self.ended_s * 1000, 3),
            "queue_delay_ms": None if self.scheduled_s is None else round((self.sent_s - self.scheduled_s) * 1000, 3),
            "in_flight": self.in_flight,
        }
        if t is not None:
            out.update(
                ttft_ms=round(t.ttft_s * 1000, 3), e2e_ms=round(t.time_s * 1000, 3),
                tpot_ms=round(tpot(t) * 1000, 3) if t.completion_tokens > 1 else None,
                itl_p50_ms=round(percentiles(itl, (50,))["p50"] * 1000, 3) if itl else None,
                itl_p95_ms=round(percentiles(itl, (95,))["p95"] * 1000, 3) if itl else None,
                output_tokens=t.completion_tokens, prompt_tokens=t.prompt_tokens,
                cached_tokens=t.cached_tokens, finish_reason=t.finish_reason,
                itl_ms=[round(g * 1000, 3) for g in itl],
            )
        out.update(self.meta)
        return out


@dataclass
class LoadRun:
    """The requests of one measured load, and how it was driven."""

    mode: str  # "continuous", "synchronized-rounds" or "open-loop"
    records: list[RequestRecord] = field(default_factory=list)
    duration_s: float = 0.0  # the first request sent to the last one's end
    clients: int = 0  # concurrency (closed loop)
    rate: float = 0.0  # requests per second asked for (open loop)
    arrivals: str = ""
    in_flight: list[tuple[float, int]] = field(default_factory=list)  # (seconds, in flight) at each arrival
    round_walls: list[float] = field(default_factory=list)  # synchronized rounds: each round's wall time
    arrival_window_s: float = 0.0  # open loop: the last arrival's offset
    unfinished: int = 0  # requests cut when the run stopped
    stopped: str = ""  # why the run stopped early, "" when it ran to its end

    @property
    def timings(self) -> list[Timing]:
        return [r.timing for r in self.records if r.timing is not None and r.error is None]


class LoadError(ServerError):
    """A load run that stopped early: a request failed, or the server fell behind too far."""

    def __init__(self, message: str, run: LoadRun) -> None:
        super().__init__(message)
        self.run = run


def tpot(t: Timing) -> float:
    """Time per output token after the first: (end-to-end - TTFT) / (tokens - 1)."""
    return (t.time_s - t.ttft_s) / (t.completion_tokens - 1) if t.completion_tokens > 1 else 0.0


def single(body: bytes, meta: dict[str, Any] | None = None) -> Job:
    """A job of one request."""
    def job(send_one: SendOne) -> None:
        send_one(body, dict(meta or {}))
    return job


# -- the shared machinery: a run's clock, its records, its stop ---------------------------------

class _Run:
    """The state threads of one run share: the clock, the records, the first error, the stop."""

    def __init__(self, send: Send, abort: Callable[[], Any], run: LoadRun) -> None:
        self.send, self.abort, self.run = send, abort, run
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.error_at: str = ""
        self.in_flight = 0
        self.completed = 0
        self.t0 = time.perf_counter()
        self.on_done: Callable[[RequestRecord, int], None] | None = None

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def job_sender(self, scheduled: float | None = None) -> SendOne:
        def send_one(body: bytes, meta: dict[str, Any]) -> Timing:
            if self.stop.is_set():
                raise _Stopped()
            with self.lock:
                self.in_flight += 1
                index = len(self.run.records)
                record = RequestRecord(index=index, sent_s=self.now(), ended_s=0.0,
                                       scheduled_s=scheduled, in_flight=self.in_flight, meta=meta)
                self.run.records.append(record)
            try:
                record.timing = self.send(body)
            except BaseException as exc:
                record.error = str(exc)
                with self.lock:
                    if not self.error_at and not self.stop.is_set():
                        self.error_at = (f"request {index + 1} of the run, {self.in_flight} in flight "
                                         "when it failed")
                raise
            finally:
                record.ended_s = self.now()
                with self.lock:
                    self.in_flight -= 1
                    if record.error is None:
                        self.completed += 1
                    done = self.completed
            if self.on_done is not None:
                self.on_done(record, done)
            return record.timing
        return send_one

    def execute(self, job: Job, scheduled: float | None = None) -> None:
        """Run one job; its first failure stops the run (the others' requests are cut)."""
        try:
            job(self.job_sender(scheduled))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - kept, re-raised in the caller's thread
            with self.lock:
                first = self.error is None and not self.stop.is_set()
                if first:
                    self.error = exc
                    self.error_at = self.error_at or f"after {len(self.run.records)} requests"
            if first:
                self.stop.set()
                self.abort()

    def finish(self, threads: list[threading.Thread]) -> None:
        """Join the threads (cutting what is still in flight after a stop); raise the first error."""
        try:
            for t in threads:
                t.join()
        except BaseException:  # Ctrl-C: cut every request, let the threads end, re-raise
            self.stop.set()
            self.abort()
            for t in threads:
                t.join(JOIN_S)
            raise
        ok = [r for r in self.run.records if r.ok]
        if ok:
            self.run.duration_s = max(r.ended_s for r in ok) - min(r.sent_s for r in ok)
        if self.error is not None:
            self.run.stopped = f"{self.error} ({self.error_at})"
            raise LoadError(f"{self.error} ({self.error_at})", self.run) from None


class _Stopped(Exception):
    """A job asked to send after its run stopped."""


LOAD_THREAD = "mlxvlm-load"  # the name of every thread a load generator starts


def _threads(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=a, daemon=True, name=f"{LOAD_THREAD}-{i}")
               for i, a in enumerate(args)]
    for t in threads:
        t.start()
    return threads


# -- closed loop --------------------------------------------------------------------------------

def run_continuous(send: Send, job_at: Callable[[int], Job], clients: int, *,
                   requests: int | None = None, duration_s: float | None = None, warmup: int = 0,
                   abort: Callable[[], Any] = lambda: None,
                   on_done: Callable[[RequestRecord, int], None] | None = None) -> LoadRun:
    """``clients`` workers, each sending its next job as its last one ends, until ``requests``
    jobs were started or ``duration_s`` passed (jobs in flight then run to their end); after
    ``warmup`` jobs per worker, run the same way and not kept. Aggregate = tokens / duration."""
    if warmup:
        _closed_loop(send, job_at, clients, clients * warmup, None, abort, None, offset=0)
    return _closed_loop(send, job_at, clients, requests, duration_s, abort, on_done,
                        offset=clients * warmup)


def _closed_loop(send: Send, job_at: Callable[[int], Job], clients: int, requests: int | None,
                 duration_s: float | None, abort: Callable[[], Any],
                 on_done: Callable[[RequestRecord, int], None] | None, offset: int) -> LoadRun:
    if requests is None and duration_s is None:
        raise ValueError("a continuous run needs a request count or a duration")
    state = _Run(send, abort, LoadRun(mode="continuous", clients=clients))
    state.on_done = on_done
    started = 0

    def worker() -> None:
        nonlocal started
        while not state.stop.is_set():
            with state.lock:
                if requests is not None and started >= requests:
                    return
                if duration_s is not None and state.now() >= duration_s:
                    return
                index = started
                started += 1
            state.execute(job_at(offset + index))

    state.finish(_threads(worker, [() for _ in range(clients)]))
    return state.run


def run_rounds(send: Send, job_at: Callable[[int], Job], clients: int, rounds: int, *,
               warmup: int = 0, abort: Callable[[], Any] = lambda: None) -> LoadRun:
    """Synchronized rounds: ``clients`` jobs released together, the next round when all ended
    (the plugin's earlier concurrency; it batches the prefills of a round together)."""
    run = LoadRun(mode="synchronized-rounds", clients=clients)
    state = _Run(send, abort, run)
    for r in range(warmup + rounds):
        barrier = threading.Barrier(clients + 1)
        first = len(run.records)

        def client(i: int, n: int = r) -> None:
            barrier.wait()
            state.execute(job_at(n * clients + i))

        threads = _threads(client, [(i,) for i in range(clients)])
        barrier.wait()
        begun = state.now()
        state.finish(threads)
        if r < warmup:
            del run.records[first:]
            continue
        run.round_walls.append(state.now() - begun)
    for i, record in enumerate(run.records):
        record.index = i
    return run


# -- open loop ---------------------------------------------------------------------------------

def arrival_offsets(rate: float, count: int, arrivals: str, seed: int = 0) -> list[float]:
    """When each of ``count`` requests is due (seconds from the start): exponential gaps of mean
    1/rate (Poisson, seeded: the same schedule every session) or constant gaps; the first at 0."""
    rng = random.Random(seed)
    out, t = [], 0.0
    for i in range(count):
        if i:
            t += rng.expovariate(rate) if arrivals == "poisson" else 1.0 / rate
        out.append(t)
    return out


def run_open_loop(send: Send, job_at: Callable[[int], Job], rate: float, requests: int, *,
                  arrivals: str = "poisson", seed: int = 0, drain_floor_s: float = DRAIN_FLOOR_S,
                  abort: Callable[[], Any] = lambda: None) -> LoadRun:
    """Send job i at its arrival time whatever the server's state (each in its own thread), then
    wait for the last ones as long as the arrivals took (at least ``drain_floor_s``, and twice
    the slowest request seen). Requests still unfinished then are cut and the run fails with
    the backlog: a rate the server cannot take ends in bounded time."""
    offsets = arrival_offsets(rate, requests, arrivals, seed)
    run = LoadRun(mode="open-loop", rate=rate, arrivals=arrivals, arrival_window_s=offsets[-1])
    state = _Run(send, abort, run)
    threads: list[threading.Thread] = []
    try:
        for i, due in enumerate(offsets):
            wait = due - state.now()
            if wait > 0 and state.stop.wait(wait):
                break
            if state.stop.is_set():
                break
            with state.lock:
                run.in_flight.append((state.now(), state.in_flight))
            threads += _threads(state.execute, [(job_at(i), due)])
        done = [r.ended_s - r.sent_s for r in run.records if r.ok]
        allowance = max(run.arrival_window_s, drain_floor_s, 2 * max(done, default=0.0))
        deadline = run.arrival_window_s + allowance
        for t in threads:
            t.join(max(0.0, deadline - state.now()))
        left = [t for t in threads if t.is_alive()]
    except BaseException:
        state.stop.set()
        abort()
        for t in threads:
            t.join(JOIN_S)
        raise
    if left and state.error is None:
        with state.lock:
            peak = max((n for _, n in run.in_flight), default=0)
            state.stop.set()
        abort()
        for t in left:
            t.join(JOIN_S)
        finished = sum(r.ok for r in run.records)
        run.unfinished = requests - finished
        run.stopped = (f"the server did not keep up with {rate:g} requests/s ({arrivals} arrivals): "
                       f"{requests - finished} of {requests} requests unfinished {state.now():.1f} s after the "
                       f"first was sent (arrivals took {run.arrival_window_s:.1f} s, then {allowance:.1f} s more "
                       f"were allowed); the backlog grew to {peak} requests in flight "
                       f"({_backlog_growth(run)}); lower the rate, or find the knee with --mlx-server-rates sweep")
        ok = [r for r in run.records if r.ok]
        if ok:
            run.duration_s = max(r.ended_s for r in ok) - min(r.sent_s for r in ok)
        raise LoadError(run.stopped, run)
    state.finish(threads)
    return run


def _backlog_growth(run: LoadRun) -> str:
    quarter = max(1, len(run.in_flight) // 4)
    first = [n for _, n in run.in_flight[:quarter]]
    last = [n for _, n in run.in_flight[-quarter:]]
    return (f"{sum(first) / len(first):.1f} on average over the first quarter of the arrivals, "
            f"{sum(last) / len(last):.1f} over the last")
