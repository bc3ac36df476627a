"""The replay: every fixture day in order reproduces the committed golden state."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import FIXTURES
from replay import STATE_TABLES, dump_state, replay_days

from etl import db, source
from etl.cli import main

GOLDEN = Path(__file__).parent / "golden" / "replay.txt"


def test_fixture_days_replay_to_the_golden_state(database_url: str, conn: db.Connection) -> None:
    """day1..dayN on a fresh database give exactly tests/golden/replay.txt."""
    replay_days(database_url, FIXTURES)
    assert dump_state(conn) == GOLDEN.read_text()


def test_batches_of_two_records_replay_to_the_same_state(
    database_url: str, conn: db.Connection
) -> None:
    """With --batch-size 2 every record and array lands in a batch of its own or shares one with
    a neighbour, so duplicates, unknown ids and reported elements span batches: the final state,
    error rows and ledger included, is still exactly the golden one."""
    replay_days(database_url, FIXTURES, "--batch-size", "2")
    assert dump_state(conn) == GOLDEN.read_text()


def test_the_serial_path_replays_to_the_same_state(
    database_url: str, conn: db.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--serial is the reference path: one thing at a time, no thread (but the one each
    command has to hear SIGTERM) and no second connection started, and still exactly the
    golden state."""
    started: list[str] = []
    start = threading.Thread.start

    def recorded(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("a serial sync opened a second connection")

    monkeypatch.setattr(threading.Thread, "start", recorded)
    monkeypatch.setattr(db, "clone", refused)
    replay_days(database_url, FIXTURES, "--serial")
    days = len(source.list_days(FIXTURES))
    assert [name for name in started if name.startswith("etl-")] == ["etl-sigterm"] * days
    assert dump_state(conn) == GOLDEN.read_text()


def test_reapplying_the_last_day_changes_no_final_table(
    database_url: str, conn: db.Connection
) -> None:
    """After the replay, running the last day again changes no final table."""
    replay_days(database_url, FIXTURES)
    tables = STATE_TABLES
    before = dump_state(conn, tables)
    last = source.list_days(FIXTURES)[-1]
    assert main(["--day", last, "--data-dir", str(FIXTURES), "--database-url", database_url]) == 0
    assert dump_state(conn, tables) == before
