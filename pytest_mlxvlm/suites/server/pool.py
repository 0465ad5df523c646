"""Keep-alive connections to one server, reused as an OpenAI client (httpx) reuses its pool: a
request takes an idle connection, or opens one *before* its clock starts (so TTFT holds no TCP
handshake), and gives it back once its response was read to the end. No pytest here."""

from __future__ import annotations

import http.client
import select
import socket
import threading

from .process import _connection

DRAIN_S = 2.0  # how long the end of a finished response (the chunked body's last bytes) may take


class ConnectionPool:
    """Idle connections to ``url``; ``abort()`` cuts the ones in use (a stopped load run)."""

    def __init__(self, url: str, timeout_s: float, keep: bool = True) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.keep = keep  # False: one connection per request, closed after it (still connected first)
        self._idle: list[http.client.HTTPConnection] = []
        self._busy: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self.opened = 0  # connections opened, for the reports (reuse = requests - opened)

    def take(self) -> tuple[http.client.HTTPConnection, str]:
        """A connected connection and the URL's path prefix; OSError when none can be opened."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _usable(conn):
                    self._busy.add(conn)
                    return conn, _prefix(self.url)
                conn.close()
        conn, prefix = _connection(self.url, self.timeout_s)
        with self._lock:
            self._busy.add(conn)
        try:
            conn.connect()
        except BaseException:
            self.give_back(conn, reusable=False)
            raise
        with self._lock:
            self.opened += 1
        return conn, prefix

    def give_back(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        """Keep ``conn`` for the next request when its response ended cleanly, else close it."""
        with self._lock:
            self._busy.discard(conn)
            if reusable and self.keep and conn.sock is not None:
                conn.sock.settimeout(self.timeout_s)
                self._idle.append(conn)
                return
        conn.close()

    def abort(self) -> int:
        """Cut every connection in use (their reads end at once); the number cut."""
        with self._lock:
            busy = list(self._busy)
        for conn in busy:
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return len(busy)

    def close(self) -> None:
        """Close the idle connections (those in use close when given back)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _usable(conn: http.client.HTTPConnection) -> bool:
    """An idle connection the server has not closed: its socket has nothing to read (a closed
    one reads as end-of-file, as httpcore checks before reusing a connection)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _prefix(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url if "://" in url else f"http://{url}").path.rstrip("/")
