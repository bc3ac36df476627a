"""End to end on a real database, through the CLI: agents, roles and assignment transitions."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import (
    A1,
    A2,
    A3,
    A4,
    A5,
    A6,
    A7,
    A9,
    FIXTURES,
    T,
    bare_database,
    default_account,
    last_line,
    open_run,
    rows,
    sync,
    sync_days,
    write_day,
)
from replay import FINAL_TABLES, STATE_TABLES, dump_state

from etl import db, decode, records
from etl.bad_records import attach_raw, error_files
from etl.cli import main
from etl.errors import InputError
from etl.log import mask_url
from etl.plan import Plan, plan_agents
from etl.run import RunResult
from etl.source import InputFile, list_files
from etl.sync import day_summary

ACCOUNT_ADMIN, ADMIN, SUPERVISOR, AGENT = 69000378065, 69000378066, 69000378067, 69000378068
TICKET_COLLAB, ANALYTICS, BILLING = 69000447817, 69000449269, 69000500001


def agents(conn: db.Connection) -> list[tuple[object, ...]]:
    return rows(
        conn,
        "SELECT agent_id, name, email, deactivated, contact_active, present, active,"
        " synced_at FROM etl.agents ORDER BY agent_id",
    )


def mapping(conn: db.Connection) -> list[tuple[object, ...]]:
    return rows(
        conn,
        "SELECT agent_id, role_id, status, assigned_at, removed_at"
        " FROM etl.agent_role_mapping ORDER BY agent_id, role_id",
    )


def history(conn: db.Connection, day: str) -> list[tuple[object, ...]]:
    return rows(
        conn,
        "SELECT agent_id, role_id, from_status, to_status, changed_at"
        " FROM etl.agent_role_history WHERE sync_day = $1"
        " ORDER BY agent_id, role_id",
        (day,),
    )


def test_day1_loads_agents_with_the_active_rule(database_url: str, conn: db.Connection) -> None:
    """Active = listed, not deactivated, contact active; every field as exported."""
    sync_days(database_url, "day1")
    assert agents(conn) == [
        (A1, "Agent 1", "agent1@example.com", False, True, True, True, T(1)),
        (A2, "Agent 2", "agent2@example.com", False, True, True, True, T(1)),
        (A3, "Agent 3", "agent3@example.com", True, True, True, False, T(1)),
        (A4, "Agent 4", "agent4@example.com", False, True, True, True, T(1)),
        (A5, "Agent 5", "agent5@example.com", False, True, True, True, T(1)),
        (A6, "Agent 6", "agent6@example.com", False, True, True, True, T(1)),
    ]


def test_day1_loads_roles_and_assigns_every_pair(database_url: str, conn: db.Connection) -> None:
    """Roles upserted with is_default/agent_type; each details pair assigned at T."""
    sync_days(database_url, "day1")
    assert rows(
        conn,
        "SELECT role_id, name, is_default, agent_type, present, created_at"
        " FROM etl.roles ORDER BY role_id",
    ) == [
        (
            ACCOUNT_ADMIN,
            "Account Administrator",
            True,
            1,
            True,
            datetime(2021, 8, 13, 11, 50, 17, tzinfo=UTC),
        ),
        (ADMIN, "Administrator", True, 1, True, datetime(2021, 8, 13, 11, 50, 17, tzinfo=UTC)),
        (SUPERVISOR, "Supervisor", True, 1, True, datetime(2021, 8, 13, 11, 50, 17, tzinfo=UTC)),
        (AGENT, "Agent", True, 1, True, datetime(2021, 8, 13, 11, 50, 17, tzinfo=UTC)),
        (
            TICKET_COLLAB,
            "Ticket Collaborator",
            True,
            3,
            True,
            datetime(2021, 11, 19, 16, 32, 15, tzinfo=UTC),
        ),
        (
            ANALYTICS,
            "Analytics Collaborator",
            True,
            3,
            True,
            datetime(2022, 1, 7, 7, 35, 20, tzinfo=UTC),
        ),
    ]
    assert mapping(conn) == [
        (A1, ACCOUNT_ADMIN, "assigned", T(1), None),
        (A2, ACCOUNT_ADMIN, "assigned", T(1), None),
        (A3, ACCOUNT_ADMIN, "assigned", T(1), None),
        (A4, ACCOUNT_ADMIN, "assigned", T(1), None),
        (A5, ACCOUNT_ADMIN, "assigned", T(1), None),
        (A5, ADMIN, "assigned", T(1), None),
        (A6, ADMIN, "assigned", T(1), None),
        (A6, SUPERVISOR, "assigned", T(1), None),
        (A6, AGENT, "assigned", T(1), None),
    ]
    assert history(conn, "day1") == [(a, r, None, "assigned", T(1)) for a, r, *_ in mapping(conn)]


def test_day2_agents_leaving_the_list_turn_inactive(database_url: str, conn: db.Connection) -> None:
    """Absent agents keep their row with present = active = false, changed at day2's T."""
    sync_days(database_url, "day1", "day2")
    assert [(a, present, active, synced) for a, *_, present, active, synced in agents(conn)] == [
        (A1, True, True, T(1)),
        (A2, True, True, T(1)),
        (A3, True, False, T(1)),
        (A4, False, False, T(2)),
        (A5, True, True, T(1)),
        (A6, False, False, T(2)),
    ]
    assert history(conn, "day2") == []


def test_day3_role_churn_transitions(database_url: str, conn: db.Connection) -> None:
    """New, removed and held pairs on day3: SEMANTICS section 6 transitions with history."""
    sync_days(database_url, "day1", "day2", "day3")
    assert mapping(conn) == [
        (A1, ACCOUNT_ADMIN, "removed", T(1), T(3)),  # moved to Administrator
        (A1, ADMIN, "assigned", T(3), None),
        (A2, ACCOUNT_ADMIN, "assigned", T(1), None),  # unchanged: no timestamp moves
        (A2, BILLING, "assigned", T(3), None),  # from the new role's agent_ids
        (A3, ACCOUNT_ADMIN, "assigned", T(1), None),
        (A4, ACCOUNT_ADMIN, "assigned", T(1), None),  # details quarantined: left as it was
        (A5, ACCOUNT_ADMIN, "assigned", T(1), None),
        (A5, ADMIN, "assigned", T(1), None),
        (A6, ADMIN, "removed", T(1), T(3)),  # no details record today
        (A6, SUPERVISOR, "assigned", T(1), None),  # Supervisor quarantined: left as it was
        (A6, AGENT, "removed", T(1), T(3)),
        (A7, AGENT, "assigned", T(3), None),  # new agent
    ]
    assert history(conn, "day3") == [
        (A1, ACCOUNT_ADMIN, "assigned", "removed", T(3)),
        (A1, ADMIN, None, "assigned", T(3)),
        (A2, BILLING, None, "assigned", T(3)),
        (A6, ADMIN, "assigned", "removed", T(3)),
        (A6, AGENT, "assigned", "removed", T(3)),
        (A7, AGENT, None, "assigned", T(3)),
    ]


def test_day4_removed_pairs_come_back_assigned(database_url: str, conn: db.Connection) -> None:
    """A removed pair back in the snapshot is assigned again at T, removed_at cleared."""
    sync_days(database_url, "day1", "day2", "day3", "day4")
    assert [m for m in mapping(conn) if m[0] in (A1, A6)] == [
        (A1, ACCOUNT_ADMIN, "assigned", T(4), None),
        (A1, ADMIN, "removed", T(3), T(4)),
        (A6, ADMIN, "removed", T(1), T(3)),  # still absent: unchanged
        (A6, SUPERVISOR, "removed", T(1), T(4)),
        (A6, AGENT, "assigned", T(4), None),
    ]
    assert history(conn, "day4") == [
        (A1, ACCOUNT_ADMIN, "removed", "assigned", T(4)),
        (A1, ADMIN, "assigned", "removed", T(4)),
        (A6, SUPERVISOR, "assigned", "removed", T(4)),
        (A6, AGENT, "removed", "assigned", T(4)),
    ]
    full = rows(
        conn,
        "SELECT from_status, to_status, changed_at FROM etl.agent_role_history"
        " WHERE agent_id = $1 AND role_id = $2 ORDER BY history_id",
        (A1, ACCOUNT_ADMIN),
    )
    assert full == [
        (None, "assigned", T(1)),
        ("assigned", "removed", T(3)),
        ("removed", "assigned", T(4)),
    ]


def test_day3_quarantined_records_keep_previous_state(
    database_url: str, conn: db.Connection
) -> None:
    """Agent 5 (bad type) and roles Supervisor (NUL) / Analytics (bad type) keep their rows;
    the NUL agent 69040000002 is never created; the rest of the day loads."""
    sync_days(database_url, "day1", "day2")
    before = {r[0]: r for r in agents(conn)}
    roles_before = rows(
        conn,
        "SELECT * FROM etl.roles WHERE role_id IN ($1, $2) ORDER BY 1",
        (SUPERVISOR, ANALYTICS),
    )
    sync_days(database_url, "day3")
    after = {r[0]: r for r in agents(conn)}
    assert after[A5] == before[A5]
    assert 69040000002 not in after
    assert after[A2][2] == "agent2@new.example.com"  # the later duplicate won
    assert after[A9] == (A9, "Agent 9", "agent9@example.com", False, False, True, False, T(3))
    assert (
        rows(
            conn,
            "SELECT * FROM etl.roles WHERE role_id IN ($1, $2) ORDER BY 1",
            (SUPERVISOR, ANALYTICS),
        )
        == roles_before
    )


def test_day3_errors_are_recorded_exactly(database_url: str, conn: db.Connection) -> None:
    """Each bad record or element: type, field, id, file, index, message and its exact JSON."""
    sync_days(database_url, "day1", "day2", "day3")
    agent_errors = rows(
        conn,
        "SELECT record_kind, error_type, field, record_id, source_file,"
        " record_index, error_message FROM etl.agent_pipeline_errors"
        " ORDER BY source_file, record_index",
    )
    assert agent_errors == [
        (
            "agent",
            "DUPLICATE_RECORD",
            "id",
            A2,
            "sync-day3/agents/1.json",
            1,
            "$[1].id: duplicate agent id 69010960305; the occurrence at "
            "sync-day3/agents/2.json $[1] "
            "wins (latest updated_at, then last in file order)",
        ),
        (
            "agent",
            "VALIDATION_ERROR",
            "deactivated",
            A5,
            "sync-day3/agents/2.json",
            0,
            "$[0].deactivated: Expected `bool | null`, got `str`",
        ),
        (
            "agent",
            "VALIDATION_ERROR",
            "contact.name",
            69040000002,
            "sync-day3/agents/2.json",
            2,
            "$[2].contact.name: NUL character (\\u0000) in a string; "
            "PostgreSQL text cannot hold it",
        ),
    ]
    role_errors = rows(
        conn,
        "SELECT record_kind, error_type, field, record_id, source_file,"
        " record_index, error_message FROM etl.role_pipeline_errors"
        " ORDER BY source_file, record_index",
    )
    assert role_errors == [
        (
            "agent_details",
            "DUPLICATE_RECORD",
            "id",
            A2,
            "sync-day3/agent_details/69010960305.json",
            0,
            "$.id: duplicate agent_details id 69010960305; the occurrence at "
            "sync-day3/agent_details/zz-late-export.json $[0] wins (latest updated_at, then last "
            "in file order)",
        ),
        (
            "agent_details",
            "VALIDATION_ERROR",
            "role_ids",
            A4,
            "sync-day3/agent_details/69013042475.json",
            0,
            "$.role_ids: Expected `array | null`, got `str`",
        ),
        (
            "agent_details",
            "INVALID_ROLE_ID",
            "role_ids[2]",
            A5,
            "sync-day3/agent_details/69015615959.json",
            0,
            "$.role_ids[2]: role 69000999999 is not a known role",
        ),
        (
            "agent_details",
            "INVALID_MAPPING",
            "role_ids[1]",
            A7,
            "sync-day3/agent_details/69040000001.json",
            0,
            "$.role_ids[1]: Expected an integer id in 1..2^63-1, got null",
        ),
        (
            "role",
            "VALIDATION_ERROR",
            "description",
            SUPERVISOR,
            "sync-day3/roles/1.json",
            2,
            "$[2].description: NUL character (\\u0000) in a string; PostgreSQL text cannot hold it",
        ),
        (
            "role",
            "DUPLICATE_RECORD",
            "id",
            AGENT,
            "sync-day3/roles/1.json",
            3,
            "$[3].id: duplicate role id 69000378068; the occurrence at sync-day3/roles/2.json $[0] "
            "wins (latest updated_at, then last in file order)",
        ),
        (
            "role",
            "VALIDATION_ERROR",
            "agent_type",
            ANALYTICS,
            "sync-day3/roles/1.json",
            5,
            "$[5].agent_type: Expected `int | null`, got `str`",
        ),
        (
            "role",
            "INVALID_AGENT_ID",
            "agent_ids[1]",
            BILLING,
            "sync-day3/roles/2.json",
            1,
            "$[1].agent_ids[1]: agent 79999999999 is not a known agent",
        ),
    ]


def test_raw_record_is_the_exact_original_json(database_url: str, conn: db.Connection) -> None:
    """raw_text is byte-exact; raw_record is the jsonb form, null where jsonb can't hold \\u0000."""
    sync_days(database_url, "day1", "day2", "day3")
    page = json.loads((FIXTURES / "sync-day3/agents/2.json").read_text())
    raw = (FIXTURES / "sync-day3/agents/2.json").read_text()
    texts = rows(
        conn,
        "SELECT record_index, raw_text, raw_record::text IS NULL, sync_day, run_id"
        " FROM etl.agent_pipeline_errors WHERE source_file = $1 ORDER BY 1",
        ("sync-day3/agents/2.json",),
    )
    assert [t[1] for t in texts] == [json.dumps(page[i], separators=(",", ":")) for i in (0, 2)]
    assert all(t[1] in raw for t in texts)
    assert [(t[0], t[2], t[3], t[4]) for t in texts] == [
        (0, False, "day3", 7),
        (2, True, "day3", 7),
    ]
    jsonb = rows(
        conn,
        "SELECT raw_record -> 'contact' ->> 'email' FROM etl.agent_pipeline_errors"
        " WHERE record_index = 0 AND source_file = $1",
        ("sync-day3/agents/2.json",),
    )
    assert jsonb == [("agent5@example.com",)]


def test_rerunning_a_day_changes_nothing(database_url: str, conn: db.Connection) -> None:
    """Same day, same input, twice: every final table identical, no new history, errors replaced."""
    sync_days(database_url, "day1", "day2", "day3")
    before = dump_state(conn, STATE_TABLES)
    errors_before = rows(conn, "SELECT count(*) FROM etl.role_pipeline_errors")
    assert sync(database_url, "day3", "--synced-at", "2027-01-01T00:00:00Z") == 0
    assert sync(database_url, "day3") == 0
    assert dump_state(conn, STATE_TABLES) == before
    assert rows(conn, "SELECT count(*) FROM etl.role_pipeline_errors") == errors_before
    assert rows(conn, "SELECT DISTINCT run_id FROM etl.role_pipeline_errors") == [(14,)]


def test_rerun_reuses_the_first_sync_time(database_url: str, conn: db.Connection) -> None:
    """Without --synced-at a re-run takes T from the day's first successful run."""
    assert sync(database_url, "day1", "--synced-at", "2026-03-01T12:00:00+02:00") == 0
    assert main(["--day", "day1", "--data-dir", str(FIXTURES), "--database-url", database_url]) == 0
    assert rows(conn, "SELECT DISTINCT synced_at FROM etl.sync_runs") == [
        (datetime(2026, 3, 1, 10, tzinfo=UTC),)
    ]


def test_truncated_page_fails_the_entity_and_changes_nothing(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1, one line naming file and byte offset, no final table changes, ledger says failed,
    and later entities of the run are not applied."""
    sync_days(database_url, "day1")
    capsys.readouterr()
    before = dump_state(conn, FINAL_TABLES)
    code = sync(database_url, "day2", data_dir=Path(__file__).parent / "data" / "truncated")
    assert code == 1
    message = (
        "sync-day2/agents/1.json: not valid JSON: input ends early, truncated at byte 1000 "
        "(end of file)"
    )
    assert last_line(capsys.readouterr().err) == f"etl: error: {message}"
    assert dump_state(conn, FINAL_TABLES) == before
    assert rows(
        conn,
        "SELECT sync_day, entity, status, message, finished_at IS NOT NULL, file, bytes"
        " FROM etl.sync_runs JOIN etl.sync_run_files USING (run_id) WHERE sync_day = 'day2'",
    ) == [("day2", "agents", "failed", message, True, "sync-day2/agents/1.json", 1000)]


def test_truncated_roles_page_keeps_the_agents_step(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing later entity leaves earlier entities of the run applied; the line before the
    reason says so and how to finish the day."""
    sync_days(database_url, "day1")
    data_dir = Path(__file__).parent / "data" / "truncated-roles"
    assert sync(database_url, "day2", data_dir=data_dir) == 1
    err = capsys.readouterr().err.splitlines()
    assert "sync-day2/roles/1.json: not valid JSON" in err[-1]
    rerun = (
        f"etl sync --day day2 --data-dir {data_dir} --synced-at {T(2).isoformat()} "
        f"--database-url {mask_url(database_url)}"
    )
    assert err[-2] == (
        f"etl: agents of day2 applied; once fixed, finish with `{rerun} --entity roles`, "
        f"then `{rerun} --entity groups`"
    )
    assert rows(
        conn, "SELECT entity, status FROM etl.sync_runs WHERE sync_day = 'day2' ORDER BY run_id"
    ) == [("agents", "succeeded"), ("roles", "failed")]
    assert rows(conn, "SELECT count(*) FROM etl.agents WHERE NOT present") == [(2,)]


def test_a_page_that_is_no_readable_file_fails_the_entity_and_changes_nothing(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An agents page that is a broken link is a page of the snapshot that cannot be read: the
    agents step fails naming it, and no agent of the earlier day is marked absent (left out of
    the listing, its agents would have been)."""
    sync_days(database_url, "day1")
    capsys.readouterr()
    before = dump_state(conn, FINAL_TABLES)
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURES / "sync-day2", data_dir / "sync-day2")
    (data_dir / "sync-day2" / "agents" / "2.json").symlink_to(tmp_path / "gone.json")
    assert sync(database_url, "day2", data_dir=data_dir) == 1
    message = "sync-day2/agents/2.json: cannot read: No such file or directory"
    assert last_line(capsys.readouterr().err) == f"etl: error: {message}"
    assert dump_state(conn, FINAL_TABLES) == before
    assert rows(
        conn, "SELECT entity, status, message FROM etl.sync_runs WHERE sync_day = 'day2'"
    ) == [("agents", "failed", message)]


def test_missing_entity_folder_fails_without_removing_anything(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """No agent_details folder: the roles step fails; no pair is marked removed."""
    sync_days(database_url, "day1")
    before = mapping(conn)
    data_dir = Path(__file__).parent / "data" / "missing-details"
    assert sync(database_url, "day2", "--entity", "roles", data_dir=data_dir) == 1
    assert last_line(capsys.readouterr().err) == (
        f"etl: error: {data_dir}/sync-day2/agent_details: folder not found; the agent_details "
        "snapshot of day2 is missing"
    )
    assert mapping(conn) == before


def test_empty_entity_folder_fails(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder without .json files is an incomplete snapshot too."""
    (tmp_path / "sync-day1" / "agents").mkdir(parents=True)
    assert sync(database_url, "day1", data_dir=tmp_path) == 1
    assert last_line(capsys.readouterr().err) == (
        f"etl: error: {tmp_path}/sync-day1/agents: no .json files; the agents snapshot of day1 "
        "is empty"
    )


def test_older_day_is_refused_unless_forced(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A day sorting before the last applied one exits 1 (refused); --force applies it."""
    sync_days(database_url, "day1", "day2")
    capsys.readouterr()
    assert sync(database_url, "day1", "--entity", "agents") == 1
    assert last_line(capsys.readouterr().err) == (
        "etl: error: agents: day day1 sorts before day2, which is already applied; re-apply an "
        "older day only with --force"
    )
    assert rows(conn, "SELECT status FROM etl.sync_runs ORDER BY run_id DESC LIMIT 1") == [
        ("refused",)
    ]
    assert sync(database_url, "day1", "--entity", "agents", "--force") == 0
    assert rows(conn, "SELECT count(*) FROM etl.agents WHERE present") == [(6,)]


def test_days_sort_naturally(tmp_path: Path, database_url: str) -> None:
    """day10 sorts after day9, so applying day9 after day10 is refused."""
    for day in ("day9", "day10"):
        (tmp_path / f"sync-{day}" / "agents").mkdir(parents=True)
        (tmp_path / f"sync-{day}" / "agents" / "1.json").write_text('[{"id": 1}]')
    assert sync(database_url, "day10", "--entity", "agents", data_dir=tmp_path) == 0
    assert sync(database_url, "day9", "--entity", "agents", data_dir=tmp_path) == 1


def test_mass_removal_of_agents_is_refused_unless_allowed(
    tmp_path: Path, database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list that drops most active agents is refused (nothing applied) until allowed."""
    sync_days(database_url, "day1")
    before = agents(conn)
    page = json.loads((FIXTURES / "sync-day1/agents/1.json").read_text())[:1]
    (tmp_path / "sync-day2" / "agents").mkdir(parents=True)
    (tmp_path / "sync-day2" / "agents" / "1.json").write_text(json.dumps(page))
    capsys.readouterr()
    assert sync(database_url, "day2", "--entity", "agents", data_dir=tmp_path) == 1
    assert last_line(capsys.readouterr().err) == (
        "etl: error: mass removal refused: 5 of 6 present agents would leave the list or turn "
        "inactive (if the export really lost them, re-run with --allow-mass-removal)"
    )
    assert agents(conn) == before
    assert (
        sync(database_url, "day2", "--entity", "agents", "--allow-mass-removal", data_dir=tmp_path)
        == 0
    )
    assert rows(conn, "SELECT agent_id FROM etl.agents WHERE active") == [(A6,)]


def test_a_refused_agents_step_applies_no_later_entity(
    tmp_path: Path, database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """roles starts reading its input while agents applies; agents refused, roles is closed
    unapplied with the reason, groups never starts, and nothing of the day is stored."""
    sync_days(database_url, "day1")
    before = dump_state(conn, FINAL_TABLES)
    page = json.loads((FIXTURES / "sync-day1/agents/1.json").read_text())[:1]
    day2 = tmp_path / "sync-day2"
    for folder in ("roles", "agent_details", "admin_groups"):
        shutil.copytree(FIXTURES / "sync-day1" / folder, day2 / folder)
    (day2 / "agents").mkdir()
    (day2 / "agents" / "1.json").write_text(json.dumps(page))
    capsys.readouterr()
    assert sync(database_url, "day2", data_dir=tmp_path) == 1
    refused = (
        "mass removal refused: 5 of 6 present agents would leave the list or turn inactive (if "
        "the export really lost them, re-run with --allow-mass-removal)"
    )
    assert last_line(capsys.readouterr().err) == f"etl: error: {refused}"
    assert dump_state(conn, FINAL_TABLES) == before
    assert rows(
        conn,
        "SELECT entity, status, message, finished_at IS NOT NULL FROM etl.sync_runs"
        " WHERE sync_day = 'day2' ORDER BY run_id",
    ) == [
        ("agents", "refused", refused, True),
        ("roles", "failed", "not applied: the agents step of this run was refused", True),
    ]


def test_mass_removal_of_assignments_is_refused_after_agents_applied(
    tmp_path: Path, database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Roles step removing most pairs is refused; the agents step before it stays applied."""
    sync_days(database_url, "day1")
    day2 = tmp_path / "sync-day2"
    for folder in ("agents", "roles"):
        (day2 / folder).mkdir(parents=True)
        (day2 / folder / "1.json").write_bytes(
            (FIXTURES / "sync-day1" / folder / "1.json").read_bytes()
        )
    (day2 / "agent_details").mkdir()
    (day2 / "agent_details" / "1.json").write_text(
        json.dumps({"id": A1, "role_ids": [ACCOUNT_ADMIN]})
    )
    before = mapping(conn)
    capsys.readouterr()
    assert sync(database_url, "day2", data_dir=tmp_path) == 1
    err = capsys.readouterr().err
    assert last_line(err) == (
        "etl: error: mass removal refused: 8 of 9 assigned agent-role pairs would be removed (if "
        "the export really lost them, re-run with --allow-mass-removal)"
    )
    assert mapping(conn) == before
    # groups started reading its input while roles applied, and is closed unapplied
    assert rows(
        conn,
        "SELECT entity, status, message FROM etl.sync_runs WHERE sync_day = 'day2' ORDER BY run_id",
    ) == [
        ("agents", "succeeded", None),
        ("roles", "refused", last_line(err)[len("etl: error: ") :]),
        ("groups", "failed", "not applied: the roles step of this run was refused"),
    ]


def test_ledger_records_files_counts_and_timing(database_url: str, conn: db.Connection) -> None:
    """sync_runs: day, entity, status, T, input files with size and sha256, row counts (the
    seconds per stage in details vary: test_views checks them)."""
    sync_days(database_url, "day1", "day2", "day3")
    run = rows(
        conn,
        "SELECT sync_day, entity, status, synced_at, rows_staged, rows_inserted,"
        " rows_updated, rows_unchanged, rows_removed, rows_quarantined,"
        " (details - 'seconds')::text, finished_at >= started_at FROM etl.sync_runs"
        " WHERE sync_day = 'day3' ORDER BY run_id",
    )
    assert run == [
        (
            "day3",
            "agents",
            "succeeded",
            T(3),
            5,
            2,
            1,
            2,
            0,
            3,
            '{"errors": {"DUPLICATE_RECORD": 1, "VALIDATION_ERROR": 2}, '
            '"groups_turned_active": 0, "groups_turned_inactive": 0, '
            '"left_or_turned_inactive": 0}',
            True,
        ),
        (
            "day3",
            "roles",
            "succeeded",
            T(3),
            5,
            1,
            1,
            3,
            3,
            8,
            '{"errors": {"INVALID_MAPPING": 1, "INVALID_ROLE_ID": 1, "DUPLICATE_RECORD": 2, '
            '"INVALID_AGENT_ID": 1, "VALIDATION_ERROR": 3}, "pairs_staged": 8, "roles_absent": 0, '
            '"pairs_removed": 3, "pairs_assigned": 3, "pairs_reassigned": 0}',
            True,
        ),
        (
            "day3",
            "groups",
            "succeeded",
            T(3),
            21,
            18,
            1,
            2,
            1,
            11,
            '{"errors": {"ORPHAN_PARENT": 1, "HIERARCHY_CYCLE": 4, "INVALID_MAPPING": 1, '
            '"DUPLICATE_RECORD": 1, "INVALID_AGENT_ID": 1, "VALIDATION_ERROR": 3}, '
            '"members_added": 5, "members_staged": 10, "members_removed": 9, '
            '"groups_turned_active": 0, "groups_turned_inactive": 2, '
            '"left_or_turned_inactive": 2}',
            True,
        ),
    ]
    files = rows(
        conn,
        "SELECT file_index, file, bytes, sha256 FROM etl.sync_run_files WHERE run_id = 7"
        " ORDER BY file_index",
    )
    assert files == [
        (index, name, len(data), hashlib.sha256(data).hexdigest())
        for index, name in enumerate(["sync-day3/agents/1.json", "sync-day3/agents/2.json"])
        for data in [(FIXTURES / name).read_bytes()]
    ]


def test_staging_keeps_the_last_run(database_url: str, conn: db.Connection) -> None:
    """After a run, the staging tables show exactly what it staged."""
    sync_days(database_url, "day1", "day2")
    assert rows(conn, "SELECT agent_id FROM etl.stg_agents ORDER BY 1") == [
        (A1,),
        (A2,),
        (A3,),
        (A5,),
    ]
    assert rows(conn, "SELECT count(*) FROM etl.stg_agent_roles") == [(9,)]


def test_stale_running_rows_are_marked_abandoned(database_url: str, conn: db.Connection) -> None:
    """A 'running' ledger row left by a killed process becomes 'abandoned' at the next run."""
    open_run(conn, "day1", "agents")
    sync_days(database_url, "day1")
    assert rows(conn, "SELECT run_id, status, message FROM etl.sync_runs ORDER BY run_id") == [
        (1, "abandoned", "the process running it stopped before it finished"),
        (2, "succeeded", None),
        (3, "succeeded", None),
        (4, "succeeded", None),
    ]


def test_a_run_starting_beside_an_apply_abandons_only_dead_runs(conn: db.Connection) -> None:
    """start_run_v3 leaves alone the run this process still applies, and marks every other
    'running' row abandoned."""
    # run 1: a dead process's; run 2: this process's, applying
    account = default_account(conn)
    rows(
        conn,
        "INSERT INTO etl.sync_runs (account_id, sync_day, entity, synced_at, forced)"
        " VALUES ($1, 'day1', 'agents', now(), false), ($1, 'day2', 'agents', now(), false)",
        (account,),
    )
    assert open_run(conn, "day2", "roles", 2) == 3
    assert rows(conn, "SELECT run_id, status, message FROM etl.sync_runs ORDER BY run_id") == [
        (1, "abandoned", "the process running it stopped before it finished"),
        (2, "running", None),
        (3, "running", None),
    ]


def test_a_held_lock_makes_the_run_wait_then_fail(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another run's advisory lock: this one says it waits, then fails cleanly after the timeout."""
    rows(conn, "SELECT pg_advisory_lock(hashtextextended('etl.sync:default', 0))")
    assert sync(database_url, "day1", "--lock-timeout", "0.3") == 1
    err = capsys.readouterr().err
    assert '"event": "waiting_for_lock"' in err
    assert last_line(err) == (
        "etl: error: another etl run holds the sync lock of account default on this database; "
        "gave up after 0.3 s (see --lock-timeout)"
    )
    assert rows(conn, "SELECT sync_day, entity, status, message FROM etl.sync_runs") == [
        (
            "day1",
            entity,
            "failed",
            "another etl run holds the sync lock of account default on this database; gave "
            "up after 0.3 s (see --lock-timeout)",
        )
        for entity in ("agents", "roles", "groups")
    ]


@pytest.mark.database
def test_a_run_waiting_for_the_lock_migrates_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """Migrations run under the sync lock: a run that cannot take it changes no schema, and
    says why it stopped (a database never migrated has no ledger for its rows)."""
    with bare_database("lock") as (url, holder):
        rows(holder, "SELECT pg_advisory_lock(hashtextextended('etl.sync:default', 0))")
        assert sync(url, "day1", "--lock-timeout", "0.3") == 1
        assert last_line(capsys.readouterr().err) == (
            "etl: error: another etl run holds the sync lock of account default on this database; "
            "gave up after 0.3 s (see --lock-timeout)"
        )
        assert rows(holder, "SELECT count(*) FROM pg_namespace WHERE nspname = 'etl'") == [(0,)]


def test_roles_only_runs_use_the_given_sync_time(database_url: str, conn: db.Connection) -> None:
    """`--entity roles` on day2, then day3: transitions stamped with each --synced-at given."""
    sync_days(database_url, "day1")
    t2, t3 = "2026-02-02T09:30:00+01:00", "2026-02-03T23:59:59.5Z"
    assert sync(database_url, "day2", "--entity", "roles", "--synced-at", t2) == 0
    assert sync(database_url, "day3", "--synced-at", t3) == 0
    at3 = datetime(2026, 2, 3, 23, 59, 59, 500000, tzinfo=UTC)
    assert [m for m in mapping(conn) if at3 in (m[3], m[4])] == [
        (A1, ACCOUNT_ADMIN, "removed", T(1), at3),
        (A1, ADMIN, "assigned", at3, None),
        (A2, BILLING, "assigned", at3, None),
        (A6, ADMIN, "removed", T(1), at3),
        (A6, AGENT, "removed", T(1), at3),
        (A7, AGENT, "assigned", at3, None),
    ]
    assert rows(conn, "SELECT sync_day, entity, synced_at FROM etl.sync_runs ORDER BY run_id") == [
        ("day1", "agents", T(1)),
        ("day1", "roles", T(1)),
        ("day1", "groups", T(1)),
        ("day2", "roles", datetime(2026, 2, 2, 8, 30, tzinfo=UTC)),
        ("day3", "agents", at3),
        ("day3", "roles", at3),
        ("day3", "groups", at3),
    ]
    assert history(conn, "day2") == []
    assert {h[4] for h in history(conn, "day3")} == {at3}


def test_entities_of_a_new_day_share_one_sync_time(database_url: str, conn: db.Connection) -> None:
    """Without --synced-at, the entities a run applies for the first time get the same T."""
    assert main(["--day", "day1", "--data-dir", str(FIXTURES), "--database-url", database_url]) == 0
    assert rows(conn, "SELECT count(DISTINCT synced_at) FROM etl.sync_runs") == [(1,)]


def test_present_but_inactive_agents_count_for_the_mass_removal_guard(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """Deactivated agents leaving the list count: 8 of 10 present leaving is refused."""
    page = [{"id": n, "deactivated": n > 2} for n in range(1, 11)]
    for day, agents_page in (("day1", page), ("day2", page[:2])):
        (tmp_path / f"sync-{day}" / "agents").mkdir(parents=True)
        (tmp_path / f"sync-{day}" / "agents" / "1.json").write_text(json.dumps(agents_page))
    assert sync(database_url, "day1", "--entity", "agents", data_dir=tmp_path) == 0
    assert sync(database_url, "day2", "--entity", "agents", data_dir=tmp_path) == 1
    assert rows(conn, "SELECT count(*) FROM etl.agents WHERE present") == [(10,)]


def test_raw_record_is_null_where_jsonb_cannot_hold_the_record(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """A quarantined record with a number beyond numeric's range keeps raw_text, raw_record is
    null, and the rest of the day loads."""
    data = b'[{"id":1},{"id":2,"deactivated":"x","score":1e200000},{"id":3,"deactivated":"y"}]'
    (tmp_path / "sync-day1" / "agents").mkdir(parents=True)
    (tmp_path / "sync-day1" / "agents" / "1.json").write_bytes(data)
    assert sync(database_url, "day1", "--entity", "agents", data_dir=tmp_path) == 0
    assert rows(conn, "SELECT agent_id FROM etl.agents") == [(1,)]
    assert rows(
        conn,
        "SELECT record_id, raw_text, raw_record::text FROM etl.agent_pipeline_errors ORDER BY 1",
    ) == [
        (2, '{"id":2,"deactivated":"x","score":1e200000}', None),
        (3, '{"id":3,"deactivated":"y"}', '{"id": 3, "deactivated": "y"}'),
    ]


def test_raw_text_is_read_again_only_from_an_unchanged_file(tmp_path: Path) -> None:
    """Error rows get their raw text by reading the file again; if its bytes changed since the
    run first read it, that is an InputError naming the file, not a wrong raw text."""
    data = b'[{"id": 1}, {"id": "x"}]'
    file = InputFile("sync-d/agents/1.json", data)
    plan = plan_agents(decode.decode_files(records.AGENT, [file]))
    inputs = {"agent": [file]}
    errors = attach_raw(plan, inputs, {file.name: hashlib.sha256(data).hexdigest()})
    assert errors.select("record_index", "raw_text").rows() == [(1, '{"id": "x"}')]
    with pytest.raises(InputError) as failure:
        attach_raw(plan, inputs, {file.name: hashlib.sha256(b"[]").hexdigest()})
    assert str(failure.value) == (
        "sync-d/agents/1.json: changed while this run read it (SHA-256 4f53cda18c2b... at first, "
        f"{hashlib.sha256(data).hexdigest()[:12]}... now); run the day again"
    )


def test_bad_records_files_are_placed_as_the_run_read_them(tmp_path: Path) -> None:
    """Each file holding an error row, with its place in the run's reading: the kinds one after
    another (the roles step reads roles, then agent_details), each folder's files in natural
    order."""
    write_day(
        tmp_path,
        "d",
        agent_details={f"{n}.json": {"id": n} for n in (10, 2, 1)},
        roles={"1.json": [], "2.json": []},
    )
    inputs = {
        "role": list_files(tmp_path, "d", "roles"),
        "agent_details": list_files(tmp_path, "d", "agent_details"),
    }
    errors = pl.DataFrame(
        {
            "record_kind": ["role", "agent_details", "agent_details", "role"],
            "source_file": [
                "sync-d/roles/2.json",
                "sync-d/agent_details/10.json",
                "sync-d/agent_details/2.json",
                "sync-d/roles/2.json",
            ],
        }
    )
    assert error_files(Plan("roles", {}, errors), inputs) == {
        "sync-d/roles/2.json": 1,
        "sync-d/agent_details/2.json": 3,
        "sync-d/agent_details/10.json": 4,
    }
    stray = errors.with_columns(source_file=pl.lit("sync-d/roles/9.json"))
    with pytest.raises(ValueError) as failure:
        error_files(Plan("roles", {}, stray), inputs)
    assert (
        str(failure.value) == "sync-d/roles/9.json: an error row names a file this run did not read"
    )


def test_bad_records_text_comes_from_the_files_the_ledger_recorded(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """A roles run with bad records in both of its folders: each error row gets its exact text,
    the files being found in the run's ledger by their place in its reading (the ledger's key),
    not by a search through every file the run, or the ledger, holds."""
    write_day(
        tmp_path,
        "day1",
        agents={"1.json": [{"id": 1}, {"id": 2}]},
        agent_details={
            "1.json": {"id": 1, "role_ids": [7]},
            "2.json": {"id": 2, "role_ids": [7]},
            "10.json": {"id": 3, "role_ids": "x"},
        },
        roles={"1.json": [{"id": 7, "name": "a"}], "2.json": [{"id": 8, "name": ""}]},
    )
    assert sync(database_url, "day1", "--entity", "agents", data_dir=tmp_path) == 0
    assert sync(database_url, "day1", "--entity", "roles", data_dir=tmp_path) == 0
    assert rows(
        conn,
        "SELECT source_file, record_id, raw_text FROM etl.role_pipeline_errors ORDER BY 1",
    ) == [
        ("sync-day1/agent_details/10.json", 3, '{"id": 3, "role_ids": "x"}'),
        ("sync-day1/roles/2.json", 8, '{"id": 8, "name": ""}'),
    ]
    run_id, account_id = rows(
        conn, "SELECT run_id, account_id FROM etl.sync_runs WHERE entity = 'roles'"
    )[0]
    assert rows(
        conn,
        "SELECT file_index, file FROM etl.sync_run_files WHERE run_id = $1 ORDER BY 1",
        (run_id,),
    ) == list(
        enumerate(
            ["sync-day1/roles/1.json", "sync-day1/roles/2.json"]
            + [f"sync-day1/agent_details/{n}.json" for n in (1, 2, 10)]
        )
    )
    # A ledger of many files: the lookup still probes the key, one file at a time.
    rows(
        conn,
        "INSERT INTO etl.sync_run_files (account_id, run_id, file_index, file, bytes, sha256)"
        " SELECT $1, $2, 4 + g, 'sync-day1/agent_details/x' || g || '.json', 2, ''"
        " FROM generate_series(1, 20000) g",
        (account_id, run_id),
    )
    rows(conn, "ANALYZE etl.sync_run_files")
    plan = "\n".join(
        line
        for (line,) in rows(
            conn,
            "EXPLAIN " + db.queries()["run_file_hashes"],
            ([account_id], [run_id], [4], ["sync-day1/agent_details/10.json"]),
        )
    )
    assert "Seq Scan" not in plan
    assert "file_index = w.file_index" in plan, plan


def test_a_first_load_leaves_planner_statistics(database_url: str, conn: db.Connection) -> None:
    """A step that fills its tables for the first time ANALYZEs them, the columns rows are
    found by (not the names), so that the next step or day plans its joins on statistics, not
    on guesses, before autovacuum comes round."""
    assert sync(database_url, "day1") == 0
    assert rows(
        conn,
        "SELECT tablename, attname FROM pg_stats WHERE schemaname = 'etl'"
        " AND tablename IN ('agents', 'agent_role_mapping', 'groups', 'group_membership')"
        " AND attname IN ('agent_id', 'role_id', 'group_id', 'active', 'name') ORDER BY 1, 2",
    ) == [
        ("agent_role_mapping", "agent_id"),
        ("agent_role_mapping", "role_id"),
        ("agents", "active"),
        ("agents", "agent_id"),
        ("group_membership", "agent_id"),
        ("group_membership", "group_id"),
        ("groups", "group_id"),
    ]


def first_load_day(data_dir: Path, day: str, cut: bool) -> None:
    """A day of 40 agents, 6 roles and 12 groups, with held ids (a quarantined role, agent
    details record and group) and skipped elements (an unknown agent, an unknown role). With
    ``cut``, every valid list of roles or members keeps only its first id: a part of the day."""

    def ids(values: list[int]) -> list[int]:
        return values[:1] if cut else values

    details: dict[str, Any] = {
        f"{n}.json": {"id": n, "role_ids": ids([101 + (n * k) % 6 for k in (1, 2, 5)])}
        for n in range(1, 36)
    }
    details["9.json"] = {"id": 9, "role_ids": "x"}  # held: its pairs stay as they were
    roles: list[dict[str, Any]] = [{"id": 100 + n, "name": f"r{n}"} for n in range(1, 6)]
    roles[4]["agent_ids"] = ids([3, 9, 99, 1, 2])  # 9 held, 99 unknown
    roles.append({"id": 106, "name": ""})  # held
    groups: list[dict[str, Any]] = [
        {
            "id": 200 + k,
            "name": f"g{k}",
            "parent_group_id": 999 if k == 11 else (200 + k // 2 if k > 1 else None),
            "agent_ids": ids([(k * 7 + j * 3) % 40 + 1 for j in range(k % 5 + 2)]),
        }
        for k in range(1, 12)
    ]
    groups[3]["agent_ids"] = ids([7, 99, 8, 12])  # inactive agents and an unknown one
    groups[9]["agent_ids"] = []
    groups.append({"id": 212, "name": ""})  # held
    write_day(
        data_dir,
        day,
        agents={
            "1.json": [
                {"id": n, "deactivated": n == 7, "contact": {"active": n != 8, "name": f"a{n}"}}
                for n in range(1, 41)
            ]
        },
        agent_details=details,
        roles={"1.json": roles},
        admin_groups={"1.json": groups},
    )


def test_a_first_load_ends_where_the_diff_ends(
    database_url: str, conn: db.Connection, tmp_path: Path
) -> None:
    """A first load inserts the staged pairs and memberships straight (nothing is stored, so all
    are new); it ends in exactly the state the diff reaches when the same day arrives after a
    day that stored a part of it, synced at the same time: every row, the history but for the
    day that logged it, and the active-member counts."""
    first_load_day(tmp_path / "first", "day2", cut=False)
    first_load_day(tmp_path / "later", "day1", cut=True)
    first_load_day(tmp_path / "later", "day2", cut=False)
    at = ("--synced-at", T(2).isoformat())
    assert sync(database_url, "day2", "--account", "first", *at, data_dir=tmp_path / "first") == 0
    assert sync(database_url, "day1", "--account", "later", *at, data_dir=tmp_path / "later") == 0
    stored = rows(
        conn,
        "SELECT (SELECT count(*) FROM etl.group_membership WHERE account_id = a.account_id),"
        " (SELECT count(*) FROM etl.agent_role_mapping WHERE account_id = a.account_id)"
        " FROM etl.accounts a WHERE account_key = 'later'",
    )
    assert stored == [(10, 29)]  # so day2 of account later goes through the diff
    assert sync(database_url, "day2", "--account", "later", *at, data_dir=tmp_path / "later") == 0

    tables = ("agents", "roles", "agent_role_mapping", "groups", "group_membership")
    first = dump_state(conn, tables, account="first")
    assert first == dump_state(conn, tables, account="later")
    assert first.count("\n") == 5 + 40 + 5 + 65 + 11 + 38  # headers, then rows

    def history(account: str) -> list[tuple[Any, ...]]:
        return rows(
            conn,
            "SELECT agent_id, role_id, from_status, to_status, changed_at, sync_day"
            " FROM etl.agent_role_history h JOIN etl.accounts a USING (account_id)"
            " WHERE a.account_key = $1 ORDER BY history_id",
            (account,),
        )

    def counts(account: str) -> list[tuple[Any, ...]]:
        return rows(
            conn,
            "SELECT group_id, active_members FROM etl.group_active_members c"
            " JOIN etl.accounts a USING (account_id) WHERE a.account_key = $1 ORDER BY 1",
            (account,),
        )

    assert history("first") == sorted(history("first"))  # in (agent, role) order
    assert sorted(h[:5] for h in history("first")) == sorted(h[:5] for h in history("later"))
    assert {h[5] for h in history("first")} == {"day2"}
    assert counts("first") == counts("later")
    assert counts("first")  # the counts of a first load are there too


def test_statistics_follow_a_growing_fleet(database_url: str, tmp_path: Path) -> None:
    """Statistics taken when one account filled a table would plan every later account as
    empty: a step whose tables have grown to more than twice the pages they had at their last
    analyze analyzes them again (the columns rows are found by), and one that has not leaves
    them be."""
    write_day(tmp_path / "small", "day1", agents={"1.json": [{"id": n} for n in range(1, 4)]})
    big = [{"id": n} for n in range(1, 401)]  # 3 agents fill one page; 403 fill more than two
    write_day(tmp_path / "big", "day1", agents={"1.json": big})
    write_day(tmp_path / "tiny", "day1", agents={"1.json": [{"id": 1}]})
    conn = db.connect(database_url)
    try:
        # 400 new rows are enough for autovacuum to analyze the table, every column, any time
        rows(conn, "ALTER TABLE etl.agents SET (autovacuum_enabled = off)")

        def accounts_in_statistics() -> list[tuple[Any, ...]]:
            return rows(
                conn,
                "SELECT a.account_key, round(s.n)::int FROM etl.accounts a JOIN ("
                " SELECT unnest(most_common_vals::text::bigint[]) AS account_id,"
                "  unnest(most_common_freqs) * (SELECT reltuples FROM pg_class"
                "   WHERE oid = 'etl.agents'::regclass) AS n"
                " FROM pg_stats WHERE schemaname = 'etl' AND tablename = 'agents'"
                " AND attname = 'account_id') s USING (account_id) ORDER BY 1",
            )

        for key, seen in [
            ("small", [("small", 3)]),
            ("big", [("big", 400), ("small", 3)]),
            ("tiny", [("big", 400), ("small", 3)]),  # one row more: no analyze
        ]:
            folder = tmp_path / key
            argv = ("--account", key, "--entity", "agents")
            assert sync(database_url, "day1", *argv, data_dir=folder) == 0
            assert accounts_in_statistics() == seen, key
        analyzed = rows(
            conn,
            "SELECT attname FROM pg_stats WHERE schemaname = 'etl' AND tablename = 'agents'"
            " ORDER BY attname",
        )
        assert analyzed == [("account_id",), ("active",), ("agent_id",), ("present",)]
    finally:
        conn.close()


def test_a_lone_surrogate_or_deep_nesting_costs_its_record_and_keeps_its_agent(
    database_url: str, conn: db.Connection, tmp_path: Path
) -> None:
    """Agents 2 and 3 come back on day2 with a lone surrogate escape and 3,000 levels of
    nesting: each record is quarantined with its field and exact text, the day succeeds, and
    both agents keep what day1 stored (held), beside agent 4, new."""
    write_day(
        tmp_path,
        "day1",
        agents={"1.json": [{"id": n, "contact": {"name": f"a{n}"}} for n in (1, 2, 3)]},
    )
    deep = b"[" * 3000 + b"]" * 3000
    deeper = b"[" * 50_000 + b"]" * 50_000  # deeper than PostgreSQL's jsonb can parse too
    page = (
        b'[{"id": 1, "contact": {"name": "a1"}}, {"id": 2, "contact": {"name": "b\\ud800"}},'
        b' {"id": 3, "contact": {"name": "a3"}, "extra": ' + deep + b'}, {"id": 4},'
        b' {"id": 5, "more": ' + deeper + b"}]"
    )
    write_day(tmp_path, "day2", agents={"1.json": page})
    argv = ("--entity", "agents")
    assert sync(database_url, "day1", *argv, data_dir=tmp_path) == 0
    assert sync(database_url, "day2", *argv, data_dir=tmp_path) == 0
    assert rows(conn, "SELECT agent_id, name, present FROM etl.agents ORDER BY 1") == [
        (1, "a1", True),
        (2, "a2", True),
        (3, "a3", True),
        (4, None, True),  # 5, new and quarantined, has no row to keep
    ]
    assert rows(
        conn,
        "SELECT record_id, field, error_message, raw_record IS NULL, length(raw_text)"
        " FROM etl.agent_pipeline_errors WHERE sync_day = 'day2' ORDER BY record_index",
    ) == [
        (
            2,
            "contact.name",
            "$[1].contact.name: lone surrogate escape \\ud800 in a string is not valid "
            "Unicode; PostgreSQL text cannot hold it",
            True,  # no jsonb can hold it either: the exact text is kept
            len(b'{"id": 2, "contact": {"name": "b\\ud800"}}'),
        ),
        (
            3,
            "extra",
            "$[2].extra: nested too deeply to read (deeper than the JSON parser allows)",
            False,
            len(b'{"id": 3, "contact": {"name": "a3"}, "extra": }') + len(deep),
        ),
        (
            5,
            "more",
            "$[4].more: nested too deeply to read (deeper than the JSON parser allows)",
            True,  # nor can PostgreSQL's jsonb read it: the exact text is kept
            len(b'{"id": 5, "more": }') + len(deeper),
        ),
    ]


def test_a_day_ends_with_its_totals_and_a_summary_for_a_person(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The day_synced event carries the status and the day's totals; a person at a terminal
    reads a few lines: per entity what changed, and the command that shows what was
    quarantined."""
    sync_days(database_url, "day1", "day2")
    capsys.readouterr()
    assert sync(database_url, "day3") == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    done = next(e for e in events if e["event"] == "day_synced")
    assert {k: v for k, v in done.items() if k not in ("seconds", "timestamp")} == {
        "event": "day_synced",
        "level": "info",
        "day": "day3",
        "status": "succeeded",
        "entities": 3,
        "staged": 31,
        "inserted": 21,
        "updated": 3,
        "unchanged": 7,
        "removed": 4,
        "quarantined": 22,
    }
    results = [
        RunResult(e["entity"], "day3", e["run_id"], e) for e in events if e["event"] == "synced"
    ]
    assert day_summary("day3", results, 0.26).splitlines() == [
        "day day3 synced in 0.3 s",
        "  agents: 5 staged, 2 inserted, 1 updated, 0 removed, 3 quarantined",
        "  roles: 5 staged, 1 inserted, 1 updated, 3 removed, 8 quarantined",
        "  groups: 21 staged, 18 inserted, 1 updated, 1 removed, 11 quarantined",
        "quarantined records: etl errors --day day3",
    ]
