"""The database etl uses: `etl db start|stop|url`, `etl psql`, where the embedded server lives,
and which server a command picks from its options and environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import pytest
from conftest import FIXTURES, ROOT, wait_until

from etl import embedded, server
from etl.cli import main

ETL = [sys.executable, "-m", "etl"]


def etl_environment(home: Path) -> dict[str, str]:
    """ETL_HOME ``home``, no database configured, logs as JSON."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ETL_", "PG")) and k != "DATABASE_URL"
    }
    return environment | {"ETL_HOME": str(home), "ETL_LOG_FORMAT": "json"}


def etl(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m etl ARGV` in its own process (at exit it may stop the server)."""
    return subprocess.run(
        [*ETL, *argv],
        cwd=ROOT,
        env=etl_environment(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fetch(connection: pg.Connection, sql: str) -> list[tuple[object, ...]]:
    with connection.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """ETL_HOME of a test; its embedded server is stopped at the end whatever happened."""
    yield tmp_path
    if embedded.running_url(tmp_path / "postgres") is not None:
        (tmp_path / "postgres" / ".handle_pids.json").unlink(missing_ok=True)
        embedded.stop_embedded(tmp_path / "postgres")


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
    assert embedded.running_url(folder) is None


def test_the_embedded_servers_shared_buffers_follow_the_machines_memory() -> None:
    """A quarter of the memory, no less than PostgreSQL's default and no more than 2 GB."""
    gib = 2**30
    assert embedded.server_settings(256 * 2**20) == {"shared_buffers": "128MB"}
    assert embedded.server_settings(2 * gib) == {"shared_buffers": "512MB"}
    assert embedded.server_settings(6 * gib + 3) == {"shared_buffers": "1536MB"}
    assert embedded.server_settings(64 * gib) == {"shared_buffers": "2048MB"}


def test_a_containers_memory_limit_counts_as_the_machines_memory(tmp_path: Path) -> None:
    """The lowest limit of the files given counts; "max", a huge number or no file is none."""
    (tmp_path / "v2").write_text("1073741824\n")
    (tmp_path / "v1").write_text("9223372036854771712\n")  # no limit
    (tmp_path / "none").write_text("max\n")
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert embedded.machine_memory([tmp_path / "v2", tmp_path / "v1"]) == min(machine, 2**30)
    assert embedded.machine_memory([tmp_path / "none", tmp_path / "gone"]) == machine


def test_the_memory_limits_are_read_from_the_processs_own_cgroups(tmp_path: Path) -> None:
    """Each level of its cgroups, from the root down, in version 2 and version 1's memory
    controller; other controllers are not memory limits."""
    listing = tmp_path / "cgroup"
    listing.write_text("5:cpu,cpuacct:/a\n4:memory:/pods/p1\n0::/app.slice/etl\n")
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    assert embedded.cgroup_limits(listing) == [
        v1 / "memory.limit_in_bytes",
        v1 / "pods" / "memory.limit_in_bytes",
        v1 / "pods" / "p1" / "memory.limit_in_bytes",
        v2 / "memory.max",
        v2 / "app.slice" / "memory.max",
        v2 / "app.slice" / "etl" / "memory.max",
    ]
    assert embedded.cgroup_limits(tmp_path / "gone") == []


@pytest.mark.database
def test_the_embedded_server_starts_with_etls_settings(home: Path) -> None:
    """Each start writes etl's settings, a data folder from before them included (its last line
    without a newline); a command joining the running server leaves them alone; a setting
    made with ALTER SYSTEM still wins."""
    folder = home / "postgres"
    ours = int(embedded.server_settings()["shared_buffers"].removesuffix("MB"))
    altered = ours + 16  # neither ours nor initdb's default
    include = "include_if_exists = 'etl.conf'\n"
    conf = folder / "postgresql.conf"
    for step in ("new", "older", "altered"):
        assert etl(home, "db", "start").returncode == 0
        session = pg.connect(f"postgresql://postgres:@/postgres?host={folder}", autocommit=True)
        try:
            megabytes = altered if step == "altered" else ours
            shared = "SELECT pg_size_bytes(current_setting('shared_buffers'))"
            assert fetch(session, shared) == [(megabytes * 2**20,)], step
            assert conf.read_text().count(include) == 1
            if step == "older":
                with session.cursor() as cur:
                    cur.execute(f"ALTER SYSTEM SET shared_buffers = '{altered}MB'")
        finally:
            session.close()
        if step == "new":  # a command joining the running server writes nothing
            written = {
                f: (f.read_text(), f.stat().st_mtime_ns) for f in (conf, folder / "etl.conf")
            }
            assert etl(home, "status").returncode == 0
            assert {f: (f.read_text(), f.stat().st_mtime_ns) for f in written} == written
        assert etl(home, "db", "stop").returncode == 0
        if step == "new":  # as a data folder an earlier etl made: no include, no etl.conf
            conf.write_text(conf.read_text().replace(include, "").rstrip("\n"))
            (folder / embedded.SETTINGS).unlink()


@pytest.mark.database
def test_a_command_never_stops_a_server_it_did_not_start(home: Path) -> None:
    """A server running before the command with no etl command using it (started by hand, or
    kept by `etl db start`) is left running by a view and by a sync."""
    folder = home / "postgres"
    assert etl(home, "db", "start").returncode == 0
    for marker in (embedded.KEPT, embedded.STARTED):  # as if started by hand
        (folder / marker).unlink()
    assert etl(home, "sync", "--day", "day1", "--data-dir", str(FIXTURES)).returncode == 0
    assert etl(home, "tree").returncode == 0
    assert embedded.running_url(folder) is not None
    # two commands at once on it: the last to leave does not stop it either. The first waits
    # in its query for a lock held here until the second has ended.
    url = embedded.running_url(folder)
    assert url is not None
    holder = pg.connect(url, autocommit=True)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(7)")
            cur.fetchall()
        slow = subprocess.Popen(
            [*ETL, "psql", "-c", "SELECT pg_advisory_lock(7)"],
            cwd=ROOT,
            env=etl_environment(home),
            stdout=subprocess.DEVNULL,
        )
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
        wait_until(lambda: fetch(holder, waiting) != [(0,)], "psql waiting for the lock")
        assert etl(home, "status").returncode == 0
        assert slow.poll() is None  # still in its query: status left first
    finally:
        holder.close()  # lets psql's query through
    assert slow.wait(timeout=60) == 0
    assert embedded.running_url(folder) is not None


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
        assert embedded.running_url(folder) is not None
    finally:
        user.kill()
        user.wait()
    assert etl(home, "db", "stop").returncode == 0  # a dead user is no user
    assert embedded.running_url(folder) is None


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
    script = home / "script.sql"
    script.write_text("SELECT 1/0;\nSELECT 'after';\n")
    stopped = etl(home, "psql", "-v", "ON_ERROR_STOP=1", "-f", str(script))  # psql's -v
    assert (stopped.returncode, "after" in stopped.stdout) == (3, False)
    after_dashes = etl(home, "psql", "--home", str(home), "--", "-At", "-c", "SELECT 2")
    assert (after_dashes.returncode, after_dashes.stdout) == (0, "2\n")
    assert embedded.running_url(home / "postgres") is None


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
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    netloc = parts.netloc.rpartition("@")[2]
    with_password = parts._replace(netloc=f"{user}:s3cret@{netloc}").geturl()  # trust: unused
    monkeypatch.setenv("DATABASE_URL", with_password)
    assert main(["status", "--log-format", "json"]) == 1  # no account yet
    first = json.loads(capsys.readouterr().err.splitlines()[0])
    assert (first["event"], first["url"], first["source"]) == (
        "database",
        parts._replace(netloc=f"{user}:***@{netloc}").geturl(),
        "DATABASE_URL",
    )


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql+psycopg://bob:hunter2@127.0.0.1:1/x", "hunter2"),
        ("postgresql://bob:hunter%zz@127.0.0.1:1/x", "hunter%zz"),
        ("postgresql://bob:p@ssw0rd@127.0.0.1:1/x", "ssw0rd"),
    ],
)
def test_a_password_never_reaches_an_error_line(
    url: str, secret: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL the driver cannot use: its message quotes the URL or the password; both masked."""
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["status", "--log-format", "json"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("etl: error: cannot connect to ")
    assert secret not in err


def test_the_old_embedded_dir_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ETL_EMBEDDED_DIR would now be ignored, silently using another database: refused."""
    monkeypatch.setenv("ETL_EMBEDDED_DIR", str(tmp_path))
    assert main(["status", "--home", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "etl: error: ETL_EMBEDDED_DIR is no longer read: the embedded server keeps its data in "
        "ETL_HOME/postgres, so set ETL_HOME to the folder that holds postgres/"
    )


def test_a_home_with_a_space_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The server cannot use a path with a space: a clear line, nothing created."""
    home = tmp_path / "my data"
    assert main(["sync", "--day", "day1", "--data-dir", str(FIXTURES), "--home", str(home)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"etl: error: the embedded server cannot keep its data in {home / 'postgres'} (a path "
        "with a space): set ETL_HOME to a folder without one"
    )
    assert not home.exists()


def test_db_url_of_libpq_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With libpq's variables, `etl db url` prints a URL naming what they name (no password)."""
    for name, value in {"PGHOST": "db.example", "PGUSER": "me", "PGDATABASE": "etl"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    assert main(["db", "url"]) == 0
    assert capsys.readouterr().out == "postgresql://me@db.example/etl\n"


def test_where_the_embedded_server_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ETL_HOME; else .etl/ of the source checkout etl runs from; else the user's data folder."""
    monkeypatch.setenv("ETL_HOME", str(tmp_path / "home"))
    assert embedded.etl_home() == tmp_path / "home"
    monkeypatch.delenv("ETL_HOME")
    assert embedded.etl_home() == ROOT / ".etl"
    installed = tmp_path / "site-packages" / "etl"
    installed.mkdir(parents=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert embedded.etl_home(installed) == tmp_path / "data" / "etl"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert embedded.etl_home(installed) == Path.home() / ".local" / "share" / "etl"
    assert embedded.embedded_folder(tmp_path) == tmp_path / "postgres"
