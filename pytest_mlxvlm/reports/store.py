"""Where histories live, behind one interface: a JSON-lines file, SQLite or PostgreSQL.

``open_store(target)`` takes what ``--mlx-history`` and ``pytest-mlxvlm report`` take: a file
path (one JSON line per session, as always), ``sqlite:///path.db`` or ``postgresql://...``
(SQLAlchemy Core, see sqlstore.py; imported only when a URL is used).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

from .history import History, StoreError, append, append_records, hide_password, not_in, read

__all__ = ["StoreError", "hide_password", "open_store", "is_url", "check_target", "HistoryStore"]

SCHEMES = ("sqlite", "postgresql", "postgres")
URL_PATTERN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
FORMS = "a file path, sqlite:///FILE.db or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


class HistoryStore(Protocol):
    """Sessions in, sessions out."""

    where: str  # for messages: the path, or the URL with its password hidden

    def append(self, record: dict[str, Any]) -> None:
        """Add one session; all of it or nothing."""

    def append_many(self, records: Sequence[dict[str, Any]]) -> int:
        """Add sessions at once (all or nothing); returns how many were new."""

    def read(self) -> History:
        """Every usable session in the order written, and what could not be used."""


def is_url(target: str | Path) -> bool:
    """Whether ``target`` is a URL (``scheme://``) rather than a file path."""
    return isinstance(target, str) and bool(URL_PATTERN.match(target))


def check_target(target: str) -> str | None:
    """Why ``target`` cannot be a history store (unknown scheme, missing driver), or None."""
    if not is_url(target):
        return None
    scheme = URL_PATTERN.match(target).group(1).lower()  # type: ignore[union-attr]
    base, _, driver = scheme.partition("+")
    if base not in SCHEMES:
        return f"unknown store {scheme}://; write {FORMS}"
    if base == "sqlite" and _sqlite_file(target) in ("", ":memory:"):
        return "give the database file, sqlite:///path/history.db (sqlite:////abs/path.db)"
    if importlib.util.find_spec("sqlalchemy") is None:
        return "a database store needs SQLAlchemy: pip install 'sqlalchemy>=2'"
    if base != "sqlite" and driver in ("", "psycopg") and importlib.util.find_spec("psycopg") is None:
        return "a PostgreSQL store needs psycopg 3: pip install 'pytest-mlxvlm[postgresql]'"
    return None


def _sqlite_file(url: str) -> str:
    """The file of a ``sqlite://`` URL as SQLAlchemy reads it (``sqlite:///rel.db``,
    ``sqlite:////abs.db``): the path after the third slash, without a query."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    return rest[1:] if rest.startswith("/") else ""


class JSONLinesStore:
    """One JSON line per session, appended under a lock (history.py): the file format of old."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(path)

    def append(self, record: dict[str, Any]) -> None:
        append(self.path, record)

    def append_many(self, records: Sequence[dict[str, Any]]) -> int:
        """Imported sessions, all or none; those the file holds already are skipped (as the
        database store skips them); returns how many were added."""
        new = not_in(self.path, records)
        append_records(self.path, new)
        return len(new)

    def read(self) -> History:
        try:
            return read(self.path)
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None


def open_store(target: str | Path) -> HistoryStore:
    """The store at ``target``; StoreError (naming it) for a URL that cannot be one."""
    if not is_url(target):
        return JSONLinesStore(Path(target))
    url = str(target)
    problem = check_target(url)
    if problem:
        raise StoreError(f"{hide_password(url)}: {problem}")
    from .sqlstore import SQLStore

    return SQLStore(url)
