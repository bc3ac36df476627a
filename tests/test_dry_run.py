"""--dry-run: every stage runs and applies in one transaction, the difference is printed, and
all of it is rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bare_database, rows, sync, sync_days
from replay import DUMPED_TABLES, dump_state

from etl import db

DAY4_DIFF = """\
dry run of day4: rolled back, nothing was stored
agents: 2 changed, 1 turned inactive
  changed: 69010960305 (email, updated_at), 69040000001 (deactivated, updated_at)
  turned inactive: 69040000001
roles: 2 pairs removed, 2 pairs re-assigned
  pairs removed: 69010941952/69000378066, 69030996455/69000378067
  pairs re-assigned: 69010941952/69000378065, 69030996455/69000378068
groups: 2 changed, 1 back, 13 turned inactive, 1 turned active, 5 members added
  changed: 69000521031 (description, updated_at), 69000800003 (parent_group_id)
  back: 69000630324
  turned inactive: 69000700001, 69000700002, 69000700003, 69000700004, 69000700005 and 8 more
  turned active: 69000630324
  members added: 69000521031/69013042475, 69000630324/69010960305, 69000630324/69011813336, \
69000630324/69013042475, 69000630324/69030996455
"""


def test_dry_run_prints_the_difference_and_stores_nothing(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Day4 after days 1-3: the printed difference is what the real run then does (its ledger
    counts agree), and before it nothing changed: not a table, not the ledger."""
    sync_days(database_url, "day1", "day2", "day3")
    before = dump_state(conn, DUMPED_TABLES)
    staged = "SELECT (SELECT count(*) FROM etl.stg_agents), (SELECT count(*) FROM etl.stg_groups)"
    staged_before = rows(conn, staged)
    capsys.readouterr()
    assert sync(database_url, "day4", "--dry-run") == 0
    assert capsys.readouterr().out == DAY4_DIFF
    assert dump_state(conn, DUMPED_TABLES) == before
    assert rows(conn, staged) == staged_before == [(5, 21)]  # day3's, as its run left them
    assert sync(database_url, "day4") == 0
    assert rows(
        conn,
        "SELECT entity, rows_updated, details -> 'pairs_removed', details -> 'pairs_reassigned',"
        " details -> 'members_added' FROM etl.sync_runs WHERE sync_day = 'day4' ORDER BY run_id",
    ) == [
        ("agents", 2, None, None, None),
        ("roles", 0, "2", "2", None),
        ("groups", 3, None, None, "5"),
    ]


def test_a_failing_dry_run_leaves_no_ledger_row(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    sync_days(database_url, "day1")
    data_dir = Path(__file__).parent / "data" / "missing-details"
    assert sync(database_url, "day2", "--dry-run", data_dir=data_dir) == 1
    assert "agent_details: folder not found" in capsys.readouterr().err
    assert rows(conn, "SELECT count(*), max(sync_day) FROM etl.sync_runs") == [(3, "day1")]


def test_a_dry_run_on_a_database_etl_never_touched_leaves_it_untouched(
    template_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Day1 on a database without etl's schema: the migrations run inside the dry run too, so
    everything is new, and afterwards there is still no schema etl."""
    with bare_database("dry") as (url, conn):
        assert sync(url, "day1", "--dry-run") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1:4] == [
            "agents: 6 new",
            "  new: 69010941952, 69010960305, 69011813336, 69013042475, 69015615959 and 1 more",
            "roles: 6 new, 9 pairs assigned",
        ]
        assert rows(conn, "SELECT to_regnamespace('etl') IS NULL") == [(True,)]
