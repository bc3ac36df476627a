"""The database etl uses: `etl db start|stop|url`, `etl psql`, where the embedded server lives,
and which server a command picks from its options and environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_postgresql.dbapi as pg
import pytest
from conftest import FIXTURES, ROOT

from etl import server
from etl.cli import main


def etl(
    home: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m etl ARGV` in its own process (at exit it may stop the server) with ETL_HOME
    ``home``, no database configured, logs as JSON."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ETL_", "PG")) and k != "DATABASE_URL"
    }
    environment |= {"ETL_HOME": str(home), "ETL_LOG_FORMAT": "json", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "etl", *argv],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """ETL_HOME of a test; its embedded server is stopped at the end whatever happened."""
    yield tmp_path
    if server.running_url(tmp_path / "postgres") is not None:
        (tmp_path / "postgres" / ".handle_pids.json").unlink(missing_ok=True)
        server.stop_embedded(tmp_path / "postgres")


@pytest.mark.database
def test_db_start_keeps_the_server_for_sessions_opened_by_hand(home: Path) -> None:
    """`etl db start` leaves the server running with its URL printed; a session opened by hand
    outlives other etl commands; `etl db stop` ends it; then commands start and stop their own
    server again."""
    folder = home / "postgres"
    started = etl(home, "db", "start")
    assert started.returncode == 0, started.stderr
    url = f"postgresql://postgres:@/postgres?host={folder}"
    assert started.stdout.splitlines() == [
        f"started: the embedded PostgreSQL server in {folder}, running until `etl db stop`",
        f"url:  {url}",
        f"psql: psql '{url}'   (or: etl psql)",
    ]
    assert etl(home, "db", "url").stdout == url + "\n"
    again = etl(home, "db", "start")
    assert again.stdout.splitlines()[0].startswith("already running: ")

    session = pg.connect(url, autocommit=True)
    try:
        synced = etl(home, "sync", "--day", "day1", "--data-dir", str(FIXTURES))
        assert synced.returncode == 0, synced.stderr
        assert etl(home, "status").returncode == 0
        with session.cursor() as cur:
            cur.execute("SELECT count(*) FROM etl.agents")
            assert cur.fetchall() == [(6,)]
        stopped = etl(home, "db", "stop")
        assert (stopped.returncode, stopped.stdout) == (
            0,
            f"stopped the embedded server in {folder}\n",
        )
        with pytest.raises(pg.Error), session.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        session.close()

    assert etl(home, "db", "stop").stdout == f"no embedded server runs in {folder}\n"
    not_running = etl(home, "db", "url")
    assert (not_running.returncode, not_running.stderr.splitlines()[-1]) == (
        1,
        f"etl: error: no embedded server runs in {folder}: start it with `etl db start`",
    )
    status = etl(home, "status")  # starts the server for itself, and stops it at its end
    assert status.returncode == 0, status.stderr
    assert "day1  agents" in status.stdout
    assert server.running_url(folder) is None


@pytest.mark.database
def test_a_command_never_stops_a_server_it_did_not_start(home: Path) -> None:
    """A server running before the command with no etl command using it (started by hand, or
    kept by `etl db start`) is left running by a view and by a sync."""
    folder = home / "postgres"
    assert etl(home, "db", "start").returncode == 0
    (folder / server.KEPT).unlink()  # as if started by hand: nothing marks it kept
    assert etl(home, "sync", "--day", "day1", "--data-dir", str(FIXTURES)).returncode == 0
    assert etl(home, "tree").returncode == 0
    assert server.running_url(folder) is not None


@pytest.mark.database
def test_db_stop_leaves_a_server_that_etl_commands_use(home: Path) -> None:
    """While another etl command uses the server, `etl db stop` refuses (exit 1) and says so."""
    folder = home / "postgres"
    assert etl(home, "db", "start").returncode == 0
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / ".handle_pids.json").write_text(json.dumps([user.pid]))
        refused = etl(home, "db", "stop")
        assert (refused.returncode, refused.stderr.splitlines()[-1]) == (
            1,
            f"etl: error: not stopping the embedded server in {folder}: etl commands are using "
            f"it (process {user.pid}); stop it once they end",
        )
        assert server.running_url(folder) is not None
    finally:
        user.kill()
        user.wait()
    assert etl(home, "db", "stop").returncode == 0  # a dead user is no user
    assert server.running_url(folder) is None


@pytest.mark.database
def test_etl_psql_runs_psql_on_the_database(home: Path) -> None:
    """`etl psql ARGS` hands ARGS to psql on etl's database and exits with psql's status; with
    no database yet it says so, creating none."""
    none = etl(home, "psql", "-c", "SELECT 1")
    assert (none.returncode, none.stderr.splitlines()[-1]) == (
        1,
        f"etl: error: no database at {home / 'postgres'} yet: run a sync first (or point "
        "--database-url / ETL_DATABASE_URL at one)",
    )
    assert etl(home, "sync", "--day", "day1", "--data-dir", str(FIXTURES)).returncode == 0
    counted = etl(home, "psql", "-At", "-c", "SELECT count(*) FROM etl.groups")
    assert (counted.returncode, counted.stdout) == (0, "5\n")
    failing = etl(home, "psql", "-c", "SELECT * FROM no_such_table")
    assert failing.returncode == 1
    assert server.running_url(home / "postgres") is None


@pytest.mark.parametrize("action", ["start", "stop"])
def test_db_start_and_stop_are_for_the_embedded_server(
    action: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a server configured, `etl db start|stop` is a usage error naming it (masked)."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://etl:s3cret@db.example/etl")
    assert main(["db", action, "--home", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "etl: error: etl uses the server at postgresql://etl:***@db.example/etl (from "
        f"DATABASE_URL): `etl db {action}` is for the embedded server only"
    )
    assert not (tmp_path / "postgres").exists()


def test_db_url_prints_the_configured_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`etl db url` prints the URL a command would use, as configured (for psql and scripts)."""
    monkeypatch.setenv("ETL_DATABASE_URL", "postgresql://etl@db.example/etl")
    assert main(["db", "url"]) == 0
    assert capsys.readouterr().out == "postgresql://etl@db.example/etl\n"


@pytest.mark.parametrize(
    ("given", "environment", "chosen"),
    [
        (
            "postgresql://a/x",
            {"ETL_DATABASE_URL": "postgresql://b/x"},
            ("postgresql://a/x", "--database-url"),
        ),
        (
            None,
            {"ETL_DATABASE_URL": "postgresql://b/x", "DATABASE_URL": "postgresql://c/x"},
            ("postgresql://b/x", "ETL_DATABASE_URL"),
        ),
        (
            None,
            {"DATABASE_URL": "postgresql://c/x", "PGHOST": "d"},
            ("postgresql://c/x", "DATABASE_URL"),
        ),
        (
            None,
            {"PGHOST": "d", "PGDATABASE": "x", "PGPASSWORD": "p"},
            ("postgresql://", "PGHOST PGDATABASE"),
        ),
        (None, {"PGUSER": "u", "PGPASSWORD": "p"}, None),
        (None, {}, None),
    ],
)
def test_which_server_a_command_uses(
    given: str | None,
    environment: dict[str, str],
    chosen: tuple[str, str] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--database-url, then ETL_DATABASE_URL, DATABASE_URL, libpq's variables that name a
    server or database (libpq reads them itself); with none, the embedded server."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert server.configured_url(given) == chosen


def test_a_command_says_which_server_it_uses(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first log line names the server (password masked) and where its URL came from."""
    with_password = database_url.replace("postgres:@", "postgres:s3cret@")  # trust: unused
    monkeypatch.setenv("DATABASE_URL", with_password)
    assert main(["status", "--log-format", "json"]) == 1  # no account yet
    first = json.loads(capsys.readouterr().err.splitlines()[0])
    assert (first["event"], first["url"], first["source"]) == (
        "database",
        database_url.replace("postgres:@", "postgres:***@"),
        "DATABASE_URL",
    )


def test_where_the_embedded_server_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ETL_HOME; else .etl/ of the source checkout etl runs from; else the user's data folder."""
    import platformdirs

    monkeypatch.setenv("ETL_HOME", str(tmp_path / "home"))
    assert server.etl_home() == tmp_path / "home"
    monkeypatch.delenv("ETL_HOME")
    assert server.etl_home() == ROOT / ".etl"
    installed = tmp_path / "site-packages" / "etl"
    installed.mkdir(parents=True)
    assert server.etl_home(installed) == platformdirs.user_data_path("etl")
    assert server.embedded_folder(tmp_path) == tmp_path / "postgres"
