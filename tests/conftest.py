"""Test fixtures on a real PostgreSQL: one server per session (the embedded one, or the server
of ETL_TEST_DATABASE_URL), a template database built from sql/, and a fresh copy per test."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import pytest
from replay import dump_state

from etl import db, embedded, ledger, log, server
from etl.cli import main
from etl.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
TEMPLATE = f"etl_template_{os.getpid()}"
_numbers = itertools.count()


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@cache
def server_url() -> str:
    """URL of the session's server (any database on it)."""
    if not DATABASE_TESTS_SELECTED:
        raise RuntimeError("this test reaches a database: mark it @pytest.mark.database")
    external = os.environ.get("ETL_TEST_DATABASE_URL")
    if external:
        return external
    folder = Path(tempfile.mkdtemp(prefix="etl-test-pg-"))
    url, handle = embedded.start_embedded(folder, temporary=True)
    _keep_alive.append(handle)
    return url


_keep_alive: list[Any] = []


def admin_execute(sql: str) -> None:
    with pg.connect(server_url(), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)


FUZZ_CASES = {
    "decode and plan": 0,
    "decode in chunks": 0,
    "end to end": 0,
}  # counted by tests/test_fuzz.py


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many hostile inputs the fuzz tests tried."""
    if any(FUZZ_CASES.values()):
        tried = ", ".join(f"{n} {what}" for what, n in FUZZ_CASES.items())
        terminalreporter.write_line(f"fuzz: hostile cases tried: {tried}")


# Tests of these fixtures need the database; others that need it are marked by hand.
DATABASE_FIXTURES = {"template_url", "database_url", "conn"}
DATABASE_TESTS_SELECTED = True  # until the selection says otherwise (just test-fast)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.database)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Name the server when database tests run; when none do (``-m "not database"``), start
    none, and fail a test that reaches one unmarked."""
    global DATABASE_TESTS_SELECTED
    DATABASE_TESTS_SELECTED = any(item.get_closest_marker("database") for item in session.items)
    if not DATABASE_TESTS_SELECTED:
        return
    conn = db.connect(server_url())
    try:
        version = db.server_version(conn)
    finally:
        conn.close()
    where = "ETL_TEST_DATABASE_URL" if os.environ.get("ETL_TEST_DATABASE_URL") else "embedded"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"postgresql: {version} ({where})")


@pytest.fixture(autouse=True)
def no_database_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their database themselves: none from DATABASE_URL or libpq's variables."""
    for name in ("ETL_DATABASE_URL", "DATABASE_URL", *server.LIBPQ_SERVER):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def logs_to_stderr_again() -> Iterator[None]:
    """After a test, logs go to the real stderr again: a test's main() configures them onto the
    captured stream, which pytest then closes."""
    yield
    log.configure(fmt="json")


@pytest.fixture(scope="session")
def template_url() -> Iterator[str]:
    admin_execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
    admin_execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = with_database(server_url(), TEMPLATE)
    conn = db.connect(url)
    try:
        migrate(conn)
    finally:
        conn.close()
    yield url
    admin_execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database copied from the template (needs the template_url fixture first)."""
    name = f"etl_test_{os.getpid()}_{next(_numbers)}"
    admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    try:
        yield with_database(server_url(), name)
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def bare_database(label: str) -> Iterator[tuple[str, db.Connection]]:
    """A new, empty database (no schema etl): its URL and a connection; dropped afterwards."""
    name = f"etl_{label}_{os.getpid()}_{next(_numbers)}"
    admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        url = with_database(server_url(), name)
        conn = db.connect(url)
        try:
            yield url, conn
        finally:
            conn.close()
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(template_url: str) -> Iterator[str]:
    """A fresh database with every migration applied."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def conn(database_url: str) -> Iterator[db.Connection]:
    connection = db.connect(database_url)
    yield connection
    connection.close()


def rows(conn: db.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a test query (tests read state with plain SQL; etl itself never does)."""
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        result = cur.fetchall()
    conn.commit()
    return result


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after 30 s (the deadline only bounds a failure)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within 30 s"
        time.sleep(0.02)


def etl_environment(**settings: str) -> dict[str, str]:
    """This process's environment for an etl process of a test: no ETL_ variable of the
    environment the tests run in, ``settings`` added."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    return {**environment, **settings}


# How many applies wait for a lock another session holds.
APPLIES_WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE query LIKE 'CALL etl.apply_sync%' AND wait_event_type = 'Lock'"
)


def default_account(conn: db.Connection) -> int:
    """The id of account ``default``, created if new (for tests that write rows by hand)."""
    return int(rows(conn, "SELECT etl.ensure_account_v1('default')")[0][0])


def open_run(conn: db.Connection, day: str, entity: str, applying: int | None = None) -> int:
    """A 'running' ledger row of account ``default`` (created if new), as a run starts one."""
    account_id = default_account(conn)
    started = ledger.start_runs(conn, day, entity, [(account_id, T(1), False)], T(1), applying)
    return started[account_id].run_id


def write_day(data_dir: Path, day: str, **folders: Any) -> Path:
    """Write a sync day: each keyword is a folder (agents, roles, agent_details, admin_groups)
    mapping file names to JSON values (or to raw bytes, written as they are)."""
    for folder, files in folders.items():
        path = data_dir / f"sync-{day}" / folder
        path.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            (path / name).write_bytes(data)
    return data_dir


# The agents of the fixtures (A1..A6 are the upstream sample's).
A1, A2, A3, A4, A5, A6 = (
    69010941952,
    69010960305,
    69011813336,
    69013042475,
    69015615959,
    69030996455,
)
A7, A9 = 69040000001, 69040000003


def T(day: int) -> datetime:
    """The sync time of fixture day ``day`` in these tests."""
    return datetime(2026, 1, day, 6, tzinfo=UTC)


def sync(url: str, day: str, *extra: str, data_dir: Path = FIXTURES) -> int:
    """Run the CLI for one day, synced at T(n) for day n unless --synced-at is among extra."""
    argv = ["--day", day, "--data-dir", str(data_dir), "--database-url", url, *extra]
    if "--synced-at" not in extra and day.startswith("day"):
        argv += ["--synced-at", T(int(day[3:])).isoformat()]
    return main(argv)


def sync_days(url: str, *days: str) -> None:
    for day in days:
        assert sync(url, day) == 0, day


R = TypeVar("R")


def of_clean_run(read: Callable[[db.Connection], R], *days: str) -> R:
    """What ``read`` finds on a fresh database after clean runs of ``days`` (needs the
    template_url fixture first)."""
    with fresh_database() as url:
        sync_days(url, *days)
        conn = db.connect(url)
        try:
            return read(conn)
        finally:
            conn.close()


def state_alone(data_dir: Path, *days: str) -> str:
    """An account's state after single-account runs of ``days`` of ``data_dir`` on a database
    of its own, synced at 2026-01-01T06:00Z."""
    with fresh_database() as url:
        for day in days:
            assert sync(url, day, "--synced-at", "2026-01-01T06:00:00Z", data_dir=data_dir) == 0
        conn = db.connect(url)
        try:
            return dump_state(conn)
        finally:
            conn.close()


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]
