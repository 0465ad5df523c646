"""How long one streamed request may take (``Deadlines``), and the one thread that ends the
requests in flight whose deadline has passed (``MONITOR``), whatever their sockets do."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

TOKENS_PER_TIMEOUT = 64  # a whole request may take one more --mlx-server-timeout per this many tokens


@dataclass(frozen=True)
class Deadlines:
    """How long one streamed request may take, from ``--mlx-server-timeout`` S and the length
    asked for, N tokens: S until the first content token (connecting, queueing, the prefill),
    S between two content tokens and from the last one to the end of the stream, and
    S x (1 + N / TOKENS_PER_TIMEOUT) for the whole request. Only a chunk with content is
    progress: SSE comments (``: ping``), empty chunks and partial lines are not."""

    first_token_s: float
    stall_s: float
    total_s: float

    @classmethod
    def of(cls, timeout_s: float, max_tokens: int) -> Deadlines:
        return cls(timeout_s, timeout_s, timeout_s * (1 + max(1, max_tokens) / TOKENS_PER_TIMEOUT))


class Watch:
    """One request's deadlines as the monitor sees them; ``expired`` says which one passed
    (its socket was then shut down, so that no read can block beyond it: a server that
    trickles bytes would reset a socket's own timeout forever)."""

    def __init__(self, deadlines: Deadlines, max_tokens: int) -> None:
        self.deadlines = deadlines
        self.max_tokens = max_tokens
        self.start = self.last = time.perf_counter()
        self.tokens = 0
        self.expired: str | None = None
        self.sock: socket.socket | None = None

    def begin(self, start: float) -> None:
        self.start = self.last = start
        MONITOR.watch(self)

    def progress(self, now: float) -> None:
        """A content chunk arrived at ``now``."""
        self.last = now
        self.tokens += 1

    def next(self) -> tuple[float, str]:
        """The earliest deadline from now on, and what passing it means."""
        d, tokens = self.deadlines, self.tokens
        total = (self.start + d.total_s, f"the whole answer took more than {d.total_s:g} s "
                 f"({tokens} of {self.max_tokens} tokens by then; one more --mlx-server-timeout "
                 f"per {TOKENS_PER_TIMEOUT} tokens asked for)")
        if tokens == 0:
            gap = (self.start + d.first_token_s, f"no content within {d.first_token_s:g} s of "
                   "sending the request (keep-alive comments and empty chunks are not progress)")
        else:
            gap = (self.last + d.stall_s, f"the server stalled: no content for {d.stall_s:g} s "
                   f"after {tokens} of {self.max_tokens} tokens")
        return min(gap, total, key=lambda pair: pair[0])

    def expire(self, reason: str) -> None:
        self.expired = reason
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def end(self) -> None:
        MONITOR.unwatch(self)


class Monitor:
    """One thread for every request in flight (no thread per request): it sleeps until the
    earliest deadline of them all, and ends the requests whose deadline has passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watched: set[Watch] = set()
        self._pid = 0  # the process whose thread runs (a forked child starts its own)

    def watch(self, watch: Watch) -> None:
        with self._cond:
            self._watched.add(watch)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="mlxvlm-request-deadlines", daemon=True).start()
            self._cond.notify()

    def unwatch(self, watch: Watch) -> None:
        with self._cond:
            self._watched.discard(watch)

    def _run(self) -> None:
        with self._cond:
            while True:
                now, soonest = time.perf_counter(), None
                for watch in list(self._watched):
                    when, reason = watch.next()
                    if when <= now:
                        self._watched.discard(watch)
                        watch.expire(reason)
                    elif soonest is None or when < soonest:
                        soonest = when
                self._cond.wait(None if soonest is None else soonest - now)


MONITOR = Monitor()
