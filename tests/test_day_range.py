"""A range of days: `etl sync --day FIRST..LAST` syncs each day in turn and stops at the first
failure, saying what was synced and how to go on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, rows, state_alone, sync
from replay import DUMPED_TABLES, dump_state

from etl import db
from etl.log import mask_url

T = "2026-01-01T06:00:00Z"


def ledger(url: str) -> list[tuple[str, str, str]]:
    conn = db.connect(url)
    try:
        return rows(conn, "SELECT sync_day, entity, status FROM etl.sync_runs ORDER BY run_id")
    finally:
        conn.close()


def test_a_range_syncs_each_day_in_order(database_url: str) -> None:
    """day1..day3: the three days, in order, each as its own run would leave them."""
    assert sync(database_url, "day1..day3", "--synced-at", T) == 0
    assert ledger(database_url) == [
        (day, entity, "succeeded")
        for day in ("day1", "day2", "day3")
        for entity in ("agents", "roles", "groups")
    ]
    conn = db.connect(database_url)
    try:
        state = dump_state(conn, DUMPED_TABLES, "default")
    finally:
        conn.close()
    assert state == state_alone(FIXTURES, "day1", "day2", "day3")


def test_a_range_stops_at_the_first_failure(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated page on day3 of day1..day5: day1 and day2 land, day3 fails as its own run
    would, day4 and day5 are not touched; exit 1, and the command that goes on from day3."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    page = data / "sync-day3" / "agents" / "1.json"
    page.write_bytes(page.read_bytes()[:40])
    assert sync(database_url, "day1..day5", "--synced-at", T, data_dir=data) == 1
    days = ledger(database_url)
    assert {day for day, _, _ in days} == {"day1", "day2", "day3"}
    assert next(row for row in days if row[0] == "day3") == ("day3", "agents", "failed")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == (
        "etl: day1, day2 synced, nothing of day3; once fixed, go on with "
        f"`etl sync --day day3..day5 --data-dir {data} --synced-at 2026-01-01T06:00:00+00:00 "
        f"--database-url {mask_url(database_url)}`"
    )
    assert err[-1] == (
        "etl: error: sync-day3/agents/1.json: not valid JSON: input ends early, truncated at "
        "byte 40 (end of file)"
    )


def test_a_later_entity_failing_in_a_range_names_every_command_left(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Groups of day2 fail in day1..day3: the commands that finish day2, then the rest."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    page = data / "sync-day2" / "admin_groups" / "1.json"
    page.write_bytes(page.read_bytes()[:40])
    assert sync(database_url, "day1..day3", "--synced-at", T, data_dir=data) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == (
        "etl: agents and roles of day2 applied; once fixed, finish with "
        f"`etl sync --day day2 --data-dir {data} --synced-at 2026-01-01T06:00:00+00:00 "
        f"--database-url {mask_url(database_url)} --entity groups`, then "
        f"`etl sync --day day3 --data-dir {data} --synced-at 2026-01-01T06:00:00+00:00 "
        f"--database-url {mask_url(database_url)}`"
    )


def test_a_range_whose_end_is_not_there(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An end that is no day of the data folder: the days there are listed, nothing synced."""
    assert sync(database_url, "day2..day9", "--synced-at", T) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"etl: error: no day day9 in {FIXTURES} (no folder sync-day9); the days there: day1, "
        "day2, day3, day4, day5"
    )
    assert ledger(database_url) == []
