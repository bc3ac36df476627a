"""The command line: usage errors, help, secrets, and the embedded server from a clean folder."""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, etl_environment

from etl import log
from etl.cli import main
from etl.log import mask_url


def test_help_names_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists the options' environment variables and the exit codes."""
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in (
        "ETL_DATA_DIR",
        "ETL_DATABASE_URL",
        "ETL_HOME",
        "DATABASE_URL",
        "PGHOST",
        "ETL_LOCK_TIMEOUT",
        "ETL_LOG_FORMAT",
        "ETL_BATCH_SIZE",
        "ETL_SPILL_DIR",
    ):
        assert name in out
    assert "Exit status: 0 success, 1 a failed or refused run, 2 a usage error." in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sync"], "etl: error: the following arguments are required: --day"),
        (
            ["--day", "day1", "--entity", "users"],
            "etl: error: argument --entity: invalid choice: 'users' "
            "(choose from 'agents', 'roles', "
            "'groups', 'all')",
        ),
        (
            ["--day", "day1", "--synced-at", "tuesday"],
            "etl: error: argument --synced-at: 'tuesday' is not an ISO-8601 timestamp (e.g. "
            "2026-01-05T06:00:00Z)",
        ),
        (
            ["--day", "day1", "--batch-size", "0"],
            "etl: error: argument --batch-size: '0' is not a whole number of at least 1",
        ),
        (
            ["--day", "day1", "--batch-size", "64k"],
            "etl: error: argument --batch-size: '64k' is not a whole number of at least 1",
        ),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options: exit 2 with argparse's one-line reason."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_etl_alone_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`etl` without arguments lists what it can do, on stderr, and exits 2 (a usage error)."""
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "etl: sync help-desk admin exports (agents, roles, groups) into PostgreSQL",
        "",
        "commands:",
        "  etl sync --day DAY                      sync one day of one account",
        "  etl sync --day FIRST..LAST              sync the days from FIRST to LAST, in order",
        "  etl sync --day DAY --accounts-dir DIR   sync one day of many accounts",
        "  etl status                              the ledger: each day and entity's last run",
        "  etl tree                                the stored group hierarchy with member counts",
        "  etl errors                              a day's quarantined records",
        "  etl accounts                            the accounts of the database with their last "
        "day and status",
        "  etl db start|stop|url                   keep the embedded server running, stop it, "
        "its URL",
        "  etl psql                                psql on etl's database",
        "",
        "`etl COMMAND --help` for its options; `etl --version`.",
        "Exit status: 0 success, 1 a failed or refused run, 2 a usage error.",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--day", "../etc"],
            "etl: error: --day '../etc': use letters, digits, '.', '_' or '-' (FIRST..LAST for a "
            "range)",
        ),
        (
            ["--day", ""],
            "etl: error: --day '': use letters, digits, '.', '_' or '-' (FIRST..LAST for a range)",
        ),
        (
            ["--day", "day3..day2", "--data-dir", str(FIXTURES)],
            "etl: error: --day day3..day2: day3 sorts after day2",
        ),
        (
            ["--day", "day1..day3", "--data-dir", str(FIXTURES), "--dry-run"],
            "etl: error: --dry-run takes one day, not a range",
        ),
        (
            ["--day", "day1...day3", "--data-dir", str(FIXTURES)],
            "etl: error: --day 'day1...day3': use letters, digits, '.', '_' or '-' (FIRST..LAST "
            "for a range)",
        ),
        (
            ["--day", "day1", "--spill-dir", "/nonexistent/spill"],
            "etl: error: --spill-dir /nonexistent/spill: no such folder",
        ),
    ],
)
def test_bad_values_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Values argparse accepts but etl cannot use are usage errors too."""
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_password_never_reaches_the_logs(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable server with a password in its URL: exit 1, password masked everywhere."""
    url = "postgresql://etl:s3cret-pw@127.0.0.1:1/etl"
    assert main(["--day", "day1", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "s3cret-pw" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("etl: error: cannot connect to postgresql://etl:***@127.0.0.1:1/etl: ")
    )


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql://u:p@h:5432/d?sslmode=require",
            "postgresql://u:***@h:5432/d?sslmode=require",
        ),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("postgresql:///d?host=/tmp", "postgresql:///d?host=/tmp"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    """Passwords are replaced; URLs without one are unchanged."""
    assert mask_url(url) == masked


@pytest.mark.database
def test_python_m_etl_runs_on_the_embedded_server(tmp_path: Path) -> None:
    """No database configured: `python -m etl` starts the embedded server in its folder, syncs,
    logs one summary line per entity as JSON when piped, and exits 0."""
    env = etl_environment(ETL_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-m", "etl", "--day", "day1", "--data-dir", str(FIXTURES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events[0]["event"] == "database"
    assert events[0]["embedded"] == str(tmp_path / "home" / "postgres")
    summaries = [
        (e["entity"], e["inserted"], e["quarantined"]) for e in events if e["event"] == "synced"
    ]
    assert summaries == [("agents", 6, 0), ("roles", 6, 0), ("groups", 5, 0)]
    assert (tmp_path / "home" / "postgres" / "PG_VERSION").read_text().strip() == "18"


def test_the_command_line_imports_no_heavy_module_before_it_needs_one() -> None:
    """Importing the command line leaves polars, pyarrow and ADBC's DB-API layer to the
    commands that use them, so that --help and usage errors answer at once."""
    probe = "import sys, etl.cli; print(sorted(m for m in sys.modules if m in HEAVY))"
    heavy = (
        "HEAVY = {'polars', 'pyarrow', 'adbc_driver_manager.dbapi', 'etl.db', 'etl.ledger',"
        " 'etl.sync'}"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"{heavy}; {probe}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "[]\n"


def test_a_fleets_parent_imports_neither_polars_nor_rich() -> None:
    """The fleet command's parent connects, weighs and hands out accounts: ADBC's DB-API layer
    would import polars and structlog rich (when installed) for what etl never uses, before
    the first worker could start. Both still import as usual afterwards."""
    probe = (
        "import sys, importlib.util, etl.fleet;"
        " print(sorted(m for m in ('polars', 'rich') if m in sys.modules));"
        " import polars;"
        " print(importlib.util.find_spec('rich') is None or bool(__import__('rich')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\nTrue\n"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class WritesRecorded(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_each_log_line_is_written_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event reaches stderr in one write, its newline included. A fleet's workers share
    stderr: with Python's output unbuffered (PYTHONUNBUFFERED, common in containers), a line
    written in two parts could be cut by another worker's line, and JSON readers choke."""
    stream = WritesRecorded()
    monkeypatch.setattr(sys, "stderr", stream)
    log.configure(fmt="json")
    log.get_logger().info("synced", entity="agents")
    log.get_logger().info("synced", entity="roles")
    assert [text.count("\n") for text in stream.writes] == [1, 1]
    assert all(text.endswith("\n") for text in stream.writes)
    assert [json.loads(text)["entity"] for text in stream.writes] == ["agents", "roles"]


@pytest.mark.parametrize(("no_color", "colored"), [(None, True), ("1", False), ("", True)])
def test_console_logs_respect_no_color(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, colored: bool
) -> None:
    """On a terminal the console log is colored unless NO_COLOR is set and not empty."""
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    log.configure(fmt="console")
    try:
        log.get_logger().info("synced", entity="agents")
    finally:
        log.configure(fmt="json")
    assert "synced" in terminal.getvalue()
    assert ("\x1b[" in terminal.getvalue()) is colored


@pytest.mark.parametrize("view", [["status"], ["tree"], ["errors", "--day", "day1"], ["accounts"]])
def test_a_view_never_creates_a_database(
    view: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A view with no database yet says so and exits 1: no embedded server is made or started."""
    folder = tmp_path / "postgres"
    assert main([*view, "--home", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"etl: error: no database at {folder} yet: run a sync first "
        "(or point --database-url / ETL_DATABASE_URL at one)"
    )
    assert not folder.exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`etl --version` prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"etl {importlib.metadata.version('etl')}\n"


def test_a_day_that_is_not_there_lists_the_days_that_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --day with no folder: the days there are listed, exit 1, and no server was started
    (the embedded folder is never made), so nothing is recorded."""
    embedded = tmp_path / "postgres"
    argv = ["--data-dir", str(FIXTURES), "--home", str(tmp_path)]
    assert main(["sync", "--day", "day9", *argv]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"etl: error: no day day9 in {FIXTURES} (no folder sync-day9); the days there: day1, "
        "day2, day3, day4, day5"
    )
    assert main(["sync", "--day", "day1", "--data-dir", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"etl: error: --data-dir {tmp_path / 'none'}: no such folder"
    )
    assert not embedded.exists()
