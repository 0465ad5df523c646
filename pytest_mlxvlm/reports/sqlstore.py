"""History in a database, SQLite or PostgreSQL, through SQLAlchemy Core.

One schema (``machines``, ``sessions``, ``cases``, ``samples``, and ``schema_version`` that the
migrations keep), one transaction per session: a writer killed mid-session leaves nothing, and
any number of writers may add sessions at once. A session is stored under the hash of its JSON
line and its place among equal lines (``uid``), so importing the same history twice adds nothing
the second time; a session of the plugin gets a random one. Records read
back are the ones written (the report cannot tell a database from a JSON-lines file).
"""

from __future__ import annotations

import hashlib
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..common.validate import InvalidInput
from .history import History, StoreError, canonical, check_record, hide_password

LATEST_SCHEMA = 1  # the tables' version; a migration per step
SESSION_KEYS = ("schema_version", "date", "commit", "branch", "machine", "settings", "cases")
CASE_KEYS = ("model", "case_key", "resolution", "outcome", "medians", "samples")
MIGRATION_LOCK = 0x6D6C78766C6D  # PostgreSQL advisory lock: one migrator at a time
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_S = 120


def session_uid(record: dict[str, Any], occurrence: int = 0) -> str:
    """An imported session's identity: the hash of its JSON line and how many equal lines
    came before it (two equal sessions in a file stay two)."""
    return hashlib.sha256(f"{occurrence}:{canonical(record)}".encode()).hexdigest()


def tables() -> Any:
    """The schema, as SQLAlchemy Core tables in one MetaData."""
    import sqlalchemy as sa

    meta = sa.MetaData()
    sa.Table("schema_version", meta, sa.Column("version", sa.Integer, nullable=False))
    sa.Table(
        "machines", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=True, index=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("info", sa.JSON, nullable=False),
    )
    sa.Table(
        "sessions", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(64), nullable=False, unique=True),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("date", sa.String(64), nullable=True, index=True),
        sa.Column("commit", sa.String(200), nullable=True),
        sa.Column("branch", sa.String(400), nullable=True),
        sa.Column("machine_id", sa.Integer, sa.ForeignKey("machines.id"), nullable=False),
        sa.Column("settings", sa.JSON, nullable=True),
        sa.Column("extra", sa.JSON, nullable=True),  # other top-level fields, kept as written
    )
    sa.Table(
        "cases", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("model", sa.String(400), nullable=False),
        sa.Column("case_key", sa.String(1000), nullable=True),
        sa.Column("resolution", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(50), nullable=True),
        sa.Column("medians", sa.JSON, nullable=True),
        sa.Column("extra", sa.JSON, nullable=True),
    )
    sa.Table(
        "samples", meta,
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("metric", sa.String(100), primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("value", sa.Double, nullable=False),
    )
    return meta


def _migrate_to_1(conn: Any, meta: Any) -> None:
    """Version 1: the four tables."""
    meta.create_all(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Any, Any], None]] = {1: _migrate_to_1}


class SQLStore:
    """A history in the database at ``url`` (``sqlite:///file.db``, ``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = hide_password(url)
        self.meta = tables()
        self.t = self.meta.tables
        self._engine: Any = None

    # -- connections ----------------------------------------------------------------------------

    @property
    def is_sqlite(self) -> bool:
        return self.url.lower().startswith("sqlite")

    def engine(self, create: bool) -> Any:
        """The engine (no pool: a session writes once); a SQLite file is made only to write."""
        if self._engine is not None:
            return self._engine
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        try:
            url = sa.make_url(self.url)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"{self.where}: not a database URL ({exc})") from None
        serializer = {"json_serializer": canonical}
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                raise StoreError(f"{self.where}: give the database file, sqlite:///path/history.db")
            path = Path(url.database)
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.is_file():
                raise StoreError(f"{self.where}: no such file {path}")
            engine = sa.create_engine(url, poolclass=NullPool, **serializer,
                                      connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            _sqlite_transactions(engine)
        else:
            if url.drivername in ("postgresql", "postgres"):
                url = url.set(drivername="postgresql+psycopg")
            engine = sa.create_engine(url, poolclass=NullPool, **serializer,
                                      connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        self._engine = engine
        return engine

    @contextmanager
    def transaction(self, what: str, *, write: bool) -> Iterator[Any]:
        """One transaction (SQLite: BEGIN IMMEDIATE to write); errors become one-line StoreErrors."""
        import sqlalchemy as sa

        try:
            with self.engine(create=write).connect() as conn:
                conn = conn.execution_options(sqlite_write=write)
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise StoreError(f"cannot {what} {self.where}: {reason[0] if reason else type(exc).__name__}") from None

    def schema_version(self, conn: Any) -> int:
        """The version the tables are at; 0 for a database without them."""
        import sqlalchemy as sa

        if not sa.inspect(conn).has_table("schema_version"):
            return 0
        return int(conn.execute(sa.select(sa.func.max(self.t["schema_version"].c.version))).scalar() or 0)

    def migrate(self, conn: Any) -> None:
        """Bring the tables to LATEST_SCHEMA, one migrator at a time; refuse a newer store."""
        import sqlalchemy as sa

        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        version = self.schema_version(conn)
        self._refuse_newer(version)
        if version == LATEST_SCHEMA:
            return
        for step in range(version + 1, LATEST_SCHEMA + 1):
            MIGRATIONS[step](conn, self.meta)
        table = self.t["schema_version"]
        conn.execute(table.delete())
        conn.execute(table.insert().values(version=LATEST_SCHEMA))

    def _refuse_newer(self, version: int) -> None:
        if version > LATEST_SCHEMA:
            raise StoreError(f"{self.where} holds schema version {version}; this pytest-mlxvlm "
                             f"knows up to {LATEST_SCHEMA}: upgrade pytest-mlxvlm")

    # -- writing --------------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """One new session, in one transaction."""
        with self.transaction("write to", write=True) as conn:
            self.migrate(conn)
            self._insert(conn, record, uuid.uuid4().hex)

    def append_many(self, records: Sequence[dict[str, Any]]) -> int:
        """Imported sessions, all in one transaction; returns how many were not stored before."""
        seen: dict[str, int] = {}
        with self.transaction("write to", write=True) as conn:
            self.migrate(conn)
            added = 0
            for record in records:
                line = canonical(record)
                seen[line] = seen.get(line, -1) + 1
                added += self._insert(conn, record, session_uid(record, seen[line]))
            return added

    def _insert(self, conn: Any, record: dict[str, Any], uid: str) -> bool:
        t = self.t
        insert = _dialect_insert(conn)
        machine = record.get("machine") or {}
        fingerprint = hashlib.sha256(canonical(machine).encode()).hexdigest()
        conn.execute(insert(t["machines"]).values(key=machine.get("key"), fingerprint=fingerprint,
                                                  info=machine)
                     .on_conflict_do_nothing(index_elements=["fingerprint"]))
        machine_id = conn.execute(t["machines"].select().with_only_columns(t["machines"].c.id)
                                  .where(t["machines"].c.fingerprint == fingerprint)).scalar_one()
        extra = {k: v for k, v in record.items() if k not in SESSION_KEYS}
        session_id = conn.execute(
            insert(t["sessions"]).values(
                uid=uid, schema_version=record.get("schema_version"),
                date=record.get("date"), commit=record.get("commit"), branch=record.get("branch"),
                machine_id=machine_id, settings=record.get("settings"), extra=extra or None,
            ).on_conflict_do_nothing(index_elements=["uid"]).returning(t["sessions"].c.id)
        ).scalar_one_or_none()
        if session_id is None:
            return False  # stored before (an import run twice)
        samples = []
        for position, case in enumerate(record.get("cases") or []):
            case_extra = {k: v for k, v in case.items() if k not in CASE_KEYS}
            case_id = conn.execute(t["cases"].insert().values(
                session_id=session_id, position=position, model=case.get("model"),
                case_key=case.get("case_key"), resolution=case.get("resolution"),
                outcome=case.get("outcome"), medians=case.get("medians"), extra=case_extra or None,
            ).returning(t["cases"].c.id)).scalar_one()
            samples += [{"case_id": case_id, "metric": metric, "round": i, "value": float(v)}
                        for metric, values in (case.get("samples") or {}).items()
                        for i, v in enumerate(values)]
        if samples:
            conn.execute(t["samples"].insert(), samples)
        return True

    # -- reading --------------------------------------------------------------------------------

    def read(self) -> History:
        """Every session in the order stored; one that fails the record check is reported."""
        import sqlalchemy as sa

        t = self.t
        history = History()
        with self.transaction("read", write=False) as conn:
            version = self.schema_version(conn)
            self._refuse_newer(version)
            if version == 0:
                history.problems.append(f"{self.where}: no pytest-mlxvlm history here yet")
                return history
            sessions = conn.execute(
                sa.select(t["sessions"], t["machines"].c.info)
                .join(t["machines"], t["machines"].c.id == t["sessions"].c.machine_id)
                .order_by(t["sessions"].c.id)).mappings().all()
            cases = conn.execute(t["cases"].select().order_by(t["cases"].c.session_id,
                                                              t["cases"].c.position)).mappings().all()
            samples = conn.execute(t["samples"].select().order_by(
                t["samples"].c.case_id, t["samples"].c.metric, t["samples"].c.round)).all()
        values: dict[int, dict[str, list[float]]] = {}
        for case_id, metric, _, value in samples:
            values.setdefault(case_id, {}).setdefault(metric, []).append(value)
        by_session: dict[int, list[dict[str, Any]]] = {}
        for c in cases:
            by_session.setdefault(c["session_id"], []).append({
                "model": c["model"], "case_key": c["case_key"], "resolution": c["resolution"],
                "outcome": c["outcome"], "medians": c["medians"] or {},
                "samples": values.get(c["id"], {}), **(c["extra"] or {}),
            })
        for s in sessions:
            record = {"schema_version": s["schema_version"],
                      **({"date": s["date"]} if s["date"] is not None else {}),
                      "commit": s["commit"], "branch": s["branch"], "machine": s["info"],
                      **({"settings": s["settings"]} if s["settings"] is not None else {}),
                      **(s["extra"] or {}), "cases": by_session.get(s["id"], [])}
            try:
                history.records.append(check_record(record))
            except InvalidInput as exc:
                history.problems.append(f"{self.where}: session {s['id']}: {exc}; skipped")
        return history


def _dialect_insert(conn: Any) -> Any:
    """The INSERT of this database that knows ON CONFLICT DO NOTHING."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _sqlite_transactions(engine: Any) -> None:
    """Real SQLite transactions: BEGIN IMMEDIATE to write (writers queue on the busy timeout
    instead of failing when they upgrade a read lock), plain BEGIN to read."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN off; ours below
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        write = conn.get_execution_options().get("sqlite_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
