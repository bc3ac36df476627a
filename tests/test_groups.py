"""Groups end to end on a real database: upserts, memberships, hierarchy reports, inactive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    default_account,
    last_line,
    of_clean_run,
    rows,
    sync,
    sync_days,
    write_day,
)
from replay import STATE_TABLES, dump_state

from etl import db
from etl.apply import apply_run
from etl.errors import DatabaseError

H1, DEVOPS, ONBOARDING, HARDWARE, INFOSEC = (
    69000521031,
    69000630118,
    69000630324,
    69000632384,
    69000639671,
)
CHAIN = tuple(69000700001 + n for n in range(12))  # CHAIN[0] is the root, CHAIN[11] the leaf
CYCLE_X, CYCLE_Y, CYCLE_Z, BELOW_CYCLE, OWN_PARENT, ORPHAN = (69000800001 + n for n in range(6))
UNKNOWN_AGENT = 79030996455


def groups(conn: db.Connection) -> list[tuple[object, ...]]:
    """(group_id, parent_group_id, present, inactive, synced_at) by id."""
    return rows(
        conn,
        "SELECT group_id, parent_group_id, present, inactive, synced_at"
        " FROM etl.groups ORDER BY group_id",
    )


def members(conn: db.Connection) -> list[tuple[object, ...]]:
    return rows(
        conn,
        "SELECT group_id, agent_id, synced_at FROM etl.group_membership ORDER BY 1, 2",
    )


def group_errors(conn: db.Connection, day: str) -> list[tuple[object, ...]]:
    return rows(
        conn,
        "SELECT error_type, field, record_id, source_file, record_index, error_message"
        " FROM etl.group_pipeline_errors WHERE sync_day = $1"
        " ORDER BY source_file, record_index, field",
        (day,),
    )


def group(gid: int, parent: int | None = None, agents: Any = (), **fields: Any) -> dict[str, Any]:
    """A group record as the export writes it."""
    agent_ids = list(agents) if isinstance(agents, tuple | list) else agents
    return {
        "id": gid,
        "name": f"group {gid}",
        "parent_group_id": parent,
        "agent_ids": agent_ids,
        **fields,
    }


def test_upstream_sample_day1_then_day2(database_url: str, conn: db.Connection) -> None:
    """The real sample: all five groups active on both days, DevOps active on day2 only through
    its re-parented child, and exactly one INVALID_AGENT_ID error on day2."""
    sync_days(database_url, "day1")
    assert groups(conn) == [
        (H1, None, True, False, T(1)),
        (DEVOPS, H1, True, False, T(1)),
        (ONBOARDING, H1, True, False, T(1)),
        (HARDWARE, H1, True, False, T(1)),
        (INFOSEC, H1, True, False, T(1)),
    ]
    sync_days(database_url, "day2")
    # DevOps's own members (agents 4 and 6) left the list: the agents step turned it inactive,
    # then the groups step put Information Security under it and it is active again.
    assert groups(conn) == [
        (H1, None, True, False, T(1)),
        (DEVOPS, H1, True, False, T(2)),
        (ONBOARDING, H1, True, False, T(1)),
        (HARDWARE, H1, True, False, T(1)),
        (INFOSEC, DEVOPS, True, False, T(2)),
    ]
    assert rows(
        conn,
        "SELECT m.agent_id, a.active FROM etl.group_membership m JOIN etl.agents a USING (agent_id)"
        " WHERE m.group_id = $1 ORDER BY 1",
        (DEVOPS,),
    ) == [(A4, False), (A6, False)]
    assert [m[:2] for m in members(conn) if m[0] == H1] == [(H1, A2), (H1, A3), (H1, A4), (H1, A5)]
    assert rows(conn, "SELECT sync_day, error_type FROM etl.group_pipeline_errors") == [
        ("day2", "INVALID_AGENT_ID")
    ]
    assert group_errors(conn, "day2") == [
        (
            "INVALID_AGENT_ID",
            "agent_ids[4]",
            H1,
            "sync-day2/admin_groups/1.json",
            1,
            f"$[1].agent_ids[4]: agent {UNKNOWN_AGENT} is not a known agent",
        )
    ]


def test_day3_groups_rows_and_inactive(database_url: str, conn: db.Connection) -> None:
    """Day3: a missing group leaves (inactive, row kept), a group whose members all left turns
    inactive, a held group keeps its parent and keeps DevOps active, a chain is active through
    its leaf, a cycle through its member, and a group below the cycle without active members
    is inactive."""
    sync_days(database_url, "day1", "day2", "day3")
    assert groups(conn) == [
        (H1, None, True, False, T(3)),  # description changed by the later duplicate
        (DEVOPS, H1, True, False, T(2)),
        (ONBOARDING, H1, False, True, T(3)),  # missing today
        (HARDWARE, H1, True, True, T(3)),  # every member left
        (INFOSEC, DEVOPS, True, False, T(2)),  # quarantined: kept as it was
        (CHAIN[0], None, True, False, T(3)),
        *[(CHAIN[n], CHAIN[n - 1], True, False, T(3)) for n in range(1, 12)],
        (CYCLE_X, CYCLE_Y, True, False, T(3)),
        (CYCLE_Y, CYCLE_Z, True, False, T(3)),
        (CYCLE_Z, CYCLE_X, True, False, T(3)),
        (BELOW_CYCLE, CYCLE_X, True, True, T(3)),
        (OWN_PARENT, OWN_PARENT, True, True, T(3)),
        (ORPHAN, 69000899999, True, False, T(3)),
    ]
    assert rows(conn, "SELECT description FROM etl.groups WHERE group_id = $1", (H1,)) == [
        ("Internal H1 IT support team (renamed on day3).",)
    ]


def test_day3_memberships_are_replaced_per_group(database_url: str, conn: db.Connection) -> None:
    """Each valid group's members become exactly its valid agent_ids; an absent group has none;
    a held group keeps its members; unchanged memberships keep their synced_at."""
    sync_days(database_url, "day1", "day2", "day3")
    assert members(conn) == [
        (H1, A2, T(1)),
        (H1, A3, T(1)),
        (H1, A5, T(1)),  # A4 dropped; the null and the unknown id skipped
        (DEVOPS, A4, T(1)),
        (DEVOPS, A6, T(1)),
        (INFOSEC, A2, T(1)),  # held
        (INFOSEC, A5, T(1)),
        (CHAIN[11], A7, T(3)),
        (CYCLE_Y, A1, T(3)),
        (BELOW_CYCLE, A9, T(3)),
        (OWN_PARENT, A3, T(3)),
        (ORPHAN, A2, T(3)),
    ]


def test_day3_group_errors_are_recorded_exactly(database_url: str, conn: db.Connection) -> None:
    """Validation, duplicate, element and hierarchy reports, each located precisely."""
    sync_days(database_url, "day1", "day2", "day3")
    cycle = "69000800001, 69000800002, 69000800003"
    page = "sync-day3/admin_groups/1.json"
    assert group_errors(conn, "day3") == [
        (
            "DUPLICATE_RECORD",
            "id",
            H1,
            page,
            1,
            f"$[1].id: duplicate group id {H1}; the occurrence at "
            "sync-day3/admin_groups/2.json $[0] wins (latest updated_at, then last in file order)",
        ),
        (
            "VALIDATION_ERROR",
            "agent_ids",
            INFOSEC,
            page,
            3,
            "$[3].agent_ids: Expected `array | null`, got `str`",
        ),
        *[
            (
                "HIERARCHY_CYCLE",
                "parent_group_id",
                gid,
                page,
                index,
                f"$[{index}].parent_group_id: group {gid} is on a parent cycle of 3 groups: "
                + cycle,
            )
            for gid, index in ((CYCLE_X, 16), (CYCLE_Y, 17), (CYCLE_Z, 18))
        ],
        (
            "HIERARCHY_CYCLE",
            "parent_group_id",
            OWN_PARENT,
            page,
            20,
            f"$[20].parent_group_id: group {OWN_PARENT} is its own parent",
        ),
        (
            "ORPHAN_PARENT",
            "parent_group_id",
            ORPHAN,
            page,
            21,
            "$[21].parent_group_id: parent group 69000899999 is not a known group",
        ),
        (
            "VALIDATION_ERROR",
            "name",
            69000800007,
            page,
            22,
            "$[22].name: NUL character (\\u0000) in a string; PostgreSQL text cannot hold it",
        ),
        (
            "VALIDATION_ERROR",
            "parent_group_id",
            69000800008,
            page,
            23,
            "$[23].parent_group_id: Expected `int | null`, got `str`",
        ),
        (
            "INVALID_MAPPING",
            "agent_ids[3]",
            H1,
            "sync-day3/admin_groups/2.json",
            0,
            "$[0].agent_ids[3]: Expected an integer id in 1..2^63-1, got null",
        ),
        (
            "INVALID_AGENT_ID",
            "agent_ids[4]",
            H1,
            "sync-day3/admin_groups/2.json",
            0,
            f"$[0].agent_ids[4]: agent {UNKNOWN_AGENT} is not a known agent",
        ),
    ]
    assert rows(conn, "SELECT count(*) FROM etl.groups WHERE group_id >= 69000800007") == [(0,)]


def test_group_back_after_a_missing_day_gets_its_members_again(
    database_url: str, conn: db.Connection
) -> None:
    """Onboarding, missing on day3, is present and active on day4 with its members re-added at
    T(4); the broken cycle leaves X without an active descendant."""
    sync_days(database_url, "day1", "day2", "day3", "day4")
    assert [g for g in groups(conn) if g[0] in (ONBOARDING, CYCLE_X, CYCLE_Y, CYCLE_Z)] == [
        (ONBOARDING, H1, True, False, T(4)),
        (CYCLE_X, CYCLE_Y, True, True, T(4)),  # its subtree is itself and BELOW_CYCLE now
        (CYCLE_Y, CYCLE_Z, True, False, T(3)),
        (CYCLE_Z, None, True, False, T(4)),  # the cycle is broken here
    ]
    assert [m for m in members(conn) if m[0] == ONBOARDING] == [
        (ONBOARDING, a, T(4)) for a in (A2, A3, A4, A6)
    ]
    assert [e[:3] for e in group_errors(conn, "day4")] == [
        ("INVALID_AGENT_ID", "agent_ids[4]", H1),
        ("HIERARCHY_CYCLE", "parent_group_id", OWN_PARENT),
        ("ORPHAN_PARENT", "parent_group_id", ORPHAN),
    ]


def test_chain_flips_when_its_only_active_agent_leaves_and_returns(
    database_url: str, conn: db.Connection
) -> None:
    """The 12-level chain's only active agent sits in the leaf: deactivated on day4, every
    ancestor turns inactive in the agents step; back on day5, every one is active again."""
    sync_days(database_url, "day1", "day2", "day3")
    chain = "SELECT inactive, synced_at FROM etl.groups WHERE group_id = ANY($1) ORDER BY group_id"
    assert rows(conn, chain, (list(CHAIN),)) == [(False, T(3))] * 12
    sync_days(database_url, "day4")
    assert rows(conn, chain, (list(CHAIN),)) == [(True, T(4))] * 12
    assert rows(
        conn,
        "SELECT entity, (details ->> 'groups_turned_inactive')::int FROM etl.sync_runs"
        " WHERE sync_day = 'day4' AND entity = 'agents'",
    ) == [("agents", 12)]
    sync_days(database_url, "day5")
    assert rows(conn, chain, (list(CHAIN),)) == [(False, T(5))] * 12


def test_twelve_level_chain_flips_on_the_leaf_agent_alone(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """A chain built from scratch: the leaf's agent alone decides all 12 levels, both ways; on
    day2 the groups input fails, and the agents step alone still turns the chain inactive."""
    chain = [group(100 + n, 100 + n - 1 if n else None, [1] if n == 11 else []) for n in range(12)]
    for day, deactivated in (("day1", False), ("day2", True), ("day3", False)):
        write_day(
            tmp_path,
            day,
            agents={"1.json": [{"id": 1, "deactivated": deactivated}, {"id": 2}]},
            admin_groups={"1.json": b"[{" if day == "day2" else chain},
        )
    inactive = "SELECT group_id, inactive, synced_at FROM etl.groups ORDER BY group_id"
    assert sync(database_url, "day1", "--entity", "agents", data_dir=tmp_path) == 0
    assert sync(database_url, "day1", "--entity", "groups", data_dir=tmp_path) == 0
    assert rows(conn, inactive) == [(100 + n, False, T(1)) for n in range(12)]
    assert sync(database_url, "day2", "--entity", "agents", data_dir=tmp_path) == 0
    assert sync(database_url, "day2", "--entity", "groups", data_dir=tmp_path) == 1
    assert rows(conn, inactive) == [(100 + n, True, T(2)) for n in range(12)]
    assert sync(database_url, "day3", "--entity", "agents", data_dir=tmp_path) == 0
    assert rows(conn, inactive) == [(100 + n, False, T(3)) for n in range(12)]


def test_rerunning_a_day_changes_no_group_table(database_url: str, conn: db.Connection) -> None:
    """Same day, same input, twice: groups, memberships and inactive flags identical, no
    timestamp moves; the day's group error rows are replaced, not duplicated."""
    sync_days(database_url, "day1", "day2", "day3")
    before = dump_state(conn, STATE_TABLES)
    errors = rows(conn, "SELECT count(*) FROM etl.group_pipeline_errors WHERE sync_day = 'day3'")
    assert sync(database_url, "day3") == 0
    assert dump_state(conn, STATE_TABLES) == before
    assert (
        rows(conn, "SELECT count(*) FROM etl.group_pipeline_errors WHERE sync_day = 'day3'")
        == errors
    )
    assert rows(
        conn,
        "SELECT rows_inserted, rows_updated, rows_removed, details ->> 'members_added',"
        " details ->> 'members_removed', details ->> 'groups_turned_inactive',"
        " details ->> 'groups_turned_active' FROM etl.sync_runs"
        " WHERE entity = 'groups' ORDER BY run_id DESC LIMIT 1",
    ) == [(0, 0, 0, "0", "0", "0", "0")]


def test_group_quarantined_on_day2_keeps_its_day1_state(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """A group fine on day1 and quarantined on day2 keeps its row, parent, members and presence;
    the rest of day2 loads."""
    write_day(
        tmp_path,
        "day1",
        agents={"1.json": [{"id": 1}, {"id": 2}, {"id": 3}]},
        admin_groups={"1.json": [group(10, None, [1]), group(11, 10, [2]), group(12, None, [3])]},
    )
    write_day(
        tmp_path,
        "day2",
        agents={"1.json": [{"id": 1}, {"id": 2}, {"id": 3, "deactivated": True}]},
        admin_groups={
            "1.json": [
                group(10, "not a number", [3]),
                group(11, 10, [2]),
                group(12, None, [1, 3]),
            ]
        },
    )
    for day in ("day1", "day2"):
        for entity in ("agents", "groups"):
            assert sync(database_url, day, "--entity", entity, data_dir=tmp_path) == 0
    # Group 12 went inactive in day2's agents step (its one member was deactivated) and active
    # again in the groups step (a new member): both are changes made at T(2).
    assert rows(
        conn,
        "SELECT group_id, name, parent_group_id, present, inactive, synced_at"
        " FROM etl.groups ORDER BY 1",
    ) == [
        (10, "group 10", None, True, False, T(1)),
        (11, "group 11", 10, True, False, T(1)),
        (12, "group 12", None, True, False, T(2)),
    ]
    assert members(conn) == [(10, 1, T(1)), (11, 2, T(1)), (12, 1, T(2)), (12, 3, T(1))]
    assert group_errors(conn, "day2") == [
        (
            "VALIDATION_ERROR",
            "parent_group_id",
            10,
            "sync-day2/admin_groups/1.json",
            0,
            "$[0].parent_group_id: Expected `int | null`, got `str`",
        )
    ]
    assert rows(conn, "SELECT record_kind, record_id FROM etl.stg_held_ids") == [("group", 10)]


def test_absent_groups_leave_their_memberships(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """A group missing from the snapshot keeps its row (present = false, inactive) and loses
    its memberships; its former child, still present, becomes a root in effect."""
    write_day(
        tmp_path,
        "day1",
        agents={"1.json": [{"id": 1}, {"id": 2}]},
        admin_groups={"1.json": [group(10, None, [1]), group(11, 10, [2]), group(12, None, [1])]},
    )
    write_day(
        tmp_path,
        "day2",
        agents={"1.json": [{"id": 1}, {"id": 2}]},
        admin_groups={"1.json": [group(11, 10, [2]), group(12, None, [1])]},
    )
    for day in ("day1", "day2"):
        assert sync(database_url, day, "--entity", "agents", data_dir=tmp_path) == 0
        assert sync(database_url, day, "--entity", "groups", data_dir=tmp_path) == 0
    assert groups(conn) == [
        (10, None, False, True, T(2)),
        (11, 10, True, False, T(1)),
        (12, None, True, False, T(1)),
    ]
    assert members(conn) == [(11, 2, T(1)), (12, 1, T(1))]
    assert group_errors(conn, "day2") == []  # the absent parent is still a known group


def test_inactive_needs_an_active_member_below_through_present_groups(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """Activeness climbs only through present groups: a present child of an absent group does
    not make the absent group's parent active; inactive and absent agents count as inactive."""
    write_day(
        tmp_path,
        "day1",
        agents={"1.json": [{"id": 1}, {"id": 2, "deactivated": True}, {"id": 3}]},
        admin_groups={"1.json": [group(1), group(2, 1), group(3, 2, [1]), group(4, None, [2, 3])]},
    )
    write_day(
        tmp_path,
        "day2",
        agents={"1.json": [{"id": 1}, {"id": 2, "contact": {"active": False}}]},  # 3 leaves
        admin_groups={"1.json": [group(1), group(3, 2, [1]), group(4, None, [2, 3])]},
    )
    present_inactive = "SELECT group_id, present, inactive FROM etl.groups ORDER BY 1"
    for entity in ("agents", "groups"):
        assert sync(database_url, "day1", "--entity", entity, data_dir=tmp_path) == 0
    assert rows(conn, present_inactive) == [(g, True, False) for g in (1, 2, 3, 4)]
    for entity in ("agents", "groups"):
        assert sync(database_url, "day2", "--entity", entity, data_dir=tmp_path) == 0
    assert rows(conn, present_inactive) == [
        (1, True, True),  # its only path down runs through absent group 2
        (2, False, True),
        (3, True, False),
        (4, True, True),  # agent 2 inactive, agent 3 absent
    ]


def test_mass_removal_of_groups_is_refused_unless_allowed(
    tmp_path: Path, database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A groups snapshot that loses or inactivates most present groups is refused (nothing of
    the step applied, the agents step before it stays) until --allow-mass-removal."""
    page = [group(n, None, [1]) for n in range(1, 7)]
    agents = {"1.json": [{"id": 1}, {"id": 2}]}
    write_day(tmp_path, "day1", agents=agents, admin_groups={"1.json": page})
    write_day(
        tmp_path, "day2", agents=agents, admin_groups={"1.json": [*page[:2], group(3, None, [])]}
    )
    for entity in ("agents", "groups"):
        assert sync(database_url, "day1", "--entity", entity, data_dir=tmp_path) == 0
    assert sync(database_url, "day2", "--entity", "agents", data_dir=tmp_path) == 0
    before = dump_state(conn, ("groups", "group_membership"))
    capsys.readouterr()
    assert sync(database_url, "day2", "--entity", "groups", data_dir=tmp_path) == 1
    assert last_line(capsys.readouterr().err) == (
        "etl: error: mass removal refused: 4 of 6 present groups would leave the snapshot or "
        "turn inactive (if the export really lost them, re-run with --allow-mass-removal)"
    )
    assert dump_state(conn, ("groups", "group_membership")) == before
    assert rows(
        conn, "SELECT entity, status FROM etl.sync_runs WHERE sync_day = 'day2' ORDER BY run_id"
    ) == [("agents", "succeeded"), ("groups", "refused")]
    assert (
        sync(database_url, "day2", "--entity", "groups", "--allow-mass-removal", data_dir=tmp_path)
        == 0
    )
    assert rows(conn, "SELECT group_id, present, inactive FROM etl.groups ORDER BY 1") == [
        (1, True, False),
        (2, True, False),
        (3, True, True),
        (4, False, True),
        (5, False, True),
        (6, False, True),
    ]


def test_groups_input_failure_keeps_groups_and_reevaluates_after_agents(
    tmp_path: Path, database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated groups page fails the groups step (exit 1, file and offset named, no group
    changed by it); the agents step before it still recomputed inactive."""
    sync_days(database_url, "day1")
    day2 = tmp_path / "sync-day2"
    for folder in ("agents", "roles", "agent_details"):
        for file in (FIXTURES / "sync-day2" / folder).iterdir():
            (day2 / folder).mkdir(parents=True, exist_ok=True)
            (day2 / folder / file.name).write_bytes(file.read_bytes())
    (day2 / "admin_groups").mkdir()
    (day2 / "admin_groups" / "1.json").write_bytes(
        (FIXTURES / "sync-day2/admin_groups/1.json").read_bytes()[:500]
    )
    capsys.readouterr()
    assert sync(database_url, "day2", data_dir=tmp_path) == 1
    assert last_line(capsys.readouterr().err) == (
        "etl: error: sync-day2/admin_groups/1.json: not valid JSON: input ends early, truncated "
        "at byte 500 (end of file)"
    )
    # DevOps's members left in the agents step; its child is still InfoSec's old parent's.
    assert groups(conn) == [
        (H1, None, True, False, T(1)),
        (DEVOPS, H1, True, True, T(2)),
        (ONBOARDING, H1, True, False, T(1)),
        (HARDWARE, H1, True, False, T(1)),
        (INFOSEC, H1, True, False, T(1)),
    ]
    assert rows(
        conn, "SELECT entity, status FROM etl.sync_runs WHERE sync_day = 'day2' ORDER BY run_id"
    ) == [("agents", "succeeded"), ("roles", "succeeded"), ("groups", "failed")]


def test_groups_step_alone_uses_the_stored_agents(database_url: str, conn: db.Connection) -> None:
    """`--entity groups` checks agent_ids against the agents already stored."""
    assert sync(database_url, "day1", "--entity", "agents") == 0
    assert sync(database_url, "day1", "--entity", "groups") == 0
    assert len(members(conn)) == 17
    assert rows(conn, "SELECT count(*) FROM etl.group_pipeline_errors") == [(0,)]


def test_ledger_counts_group_steps(database_url: str, conn: db.Connection) -> None:
    """The groups ledger row: staged, inserted, updated, unchanged, removed, quarantined and the
    membership and inactive moves in details (its seconds per stage vary, so they are left
    out here; test_views checks they are there)."""
    sync_days(database_url, "day1", "day2")
    assert rows(
        conn,
        "SELECT sync_day, rows_staged, rows_inserted, rows_updated, rows_unchanged, rows_removed,"
        " rows_quarantined, (details - 'seconds')::text FROM etl.sync_runs"
        " WHERE entity = 'groups'"
        " ORDER BY run_id",
    ) == [
        (
            "day1",
            5,
            5,
            0,
            0,
            0,
            0,
            '{"errors": {}, "members_added": 17, "members_staged": 17, "members_removed": 0, '
            '"groups_turned_active": 0, "groups_turned_inactive": 0, '
            '"left_or_turned_inactive": 0}',
        ),
        (
            "day2",
            5,
            0,
            1,
            4,
            0,
            1,
            '{"errors": {"INVALID_AGENT_ID": 1}, "members_added": 0, "members_staged": 16, '
            '"members_removed": 1, "groups_turned_active": 1, "groups_turned_inactive": 0, '
            '"left_or_turned_inactive": 0}',
        ),
    ]


def test_raw_record_of_a_group_error_is_its_exact_json(
    database_url: str, conn: db.Connection
) -> None:
    """Group error rows carry the record's exact text and its jsonb form."""
    sync_days(database_url, "day1", "day2")
    page = (FIXTURES / "sync-day2/admin_groups/1.json").read_text()
    record = json.loads(page)[1]
    raw_text, raw_record = rows(
        conn, "SELECT raw_text, raw_record::text FROM etl.group_pipeline_errors"
    )[0]
    assert raw_text in page
    assert json.loads(raw_text) == record
    assert json.loads(raw_record) == record


@pytest.mark.parametrize("stored", [False, True], ids=["first load", "memberships stored"])
@pytest.mark.parametrize(
    ("pair", "named"), [((1, 42), "(1, 42)"), ((9, 5), "(9, 5)")], ids=["agent", "group"]
)
def test_apply_refuses_memberships_naming_unknown_agents_or_groups(
    conn: db.Connection, stored: bool, pair: tuple[int, int], named: str
) -> None:
    """The procedure checks staged memberships as a set (in place of row-by-row foreign keys):
    a membership naming no stored agent, or no staged group, stops the apply with the pair
    named, on a first load as on a later one."""
    account = default_account(conn)
    rows(conn, "SELECT etl.start_run_v3(1, 'day1', 'groups', now(), false, NULL)")
    rows(
        conn,
        "INSERT INTO etl.agents (account_id, agent_id, present, active, synced_at, ingested_at)"
        " VALUES ($1, 5, true, true, now(), now())",
        (account,),
    )
    rows(
        conn,
        "INSERT INTO etl.stg_groups (account_id, group_id, name, source_file, record_index)"
        " VALUES ($1, 1, 'g', 'g.json', 0)",
        (account,),
    )
    if stored:
        rows(
            conn,
            "INSERT INTO etl.groups (account_id, group_id, name, present, inactive, synced_at,"
            " ingested_at) VALUES ($1, 1, 'g', true, false, now(), now())",
            (account,),
        )
        rows(conn, "INSERT INTO etl.group_membership VALUES (1, 5, now(), $1)", (account,))
    group, agent = pair
    rows(conn, "INSERT INTO etl.stg_group_members VALUES (1, ARRAY[5::bigint], $1)", (account,))
    rows(
        conn,
        "INSERT INTO etl.stg_group_members VALUES ($1, ARRAY[$2::bigint], $3)",
        (group, agent, account),
    )
    with pytest.raises(DatabaseError) as raised:
        apply_run(conn, account, 1, allow_mass_removal=False)
    assert str(raised.value) == (
        "database error during apply: staged memberships (group, agent) name no stored agent or "
        f"no staged group: {named}"
    )
    assert rows(conn, "SELECT count(*) FROM etl.group_membership") == [(1 if stored else 0,)]


DAY1_MEMBERS = 17  # the (group, agent) pairs of day1 whose agent is in day1's agents


@pytest.mark.parametrize("first_load", [True, False])
def test_a_repeated_staged_membership_fails_the_apply(
    conn: db.Connection, first_load: bool
) -> None:
    """Staging has no key of its own: a pair staged twice (which the plan never does) still
    fails on group_membership's key, on the first load and later, and changes nothing."""
    account = default_account(conn)
    for agent in (A1, A2):
        rows(
            conn,
            "INSERT INTO etl.agents VALUES ($1, 'a', NULL, false, true, true, true, NULL, NULL,"
            " now(), now(), $2)",
            (agent, account),
        )
    if not first_load:  # a stored pair that stays
        rows(
            conn,
            "INSERT INTO etl.groups VALUES (1, 'g', NULL, NULL, true, false, NULL, NULL,"
            " now(), now(), $1)",
            (account,),
        )
        rows(conn, "INSERT INTO etl.group_membership VALUES (1, $1, now(), $2)", (A2, account))
    db.commit(conn)
    before = dump_state(conn, STATE_TABLES)
    rows(conn, "SELECT etl.start_run_v3($1, 'day1', 'groups', now(), false, NULL)", (account,))
    rows(
        conn,
        "INSERT INTO etl.stg_groups (account_id, group_id, name, source_file, record_index)"
        " VALUES ($1, 1, 'g', 'g.json', 0)",
        (account,),
    )
    rows(
        conn,
        "INSERT INTO etl.stg_group_members VALUES (1, ARRAY[$1, $2, $2]::bigint[], $3)",
        (A2, A1, account),
    )
    with pytest.raises(DatabaseError) as raised:
        apply_run(conn, account, 1, allow_mass_removal=True)
    db.rollback(conn)
    assert str(raised.value).startswith(
        "database error during apply: duplicate key value violates unique constraint "
        '"group_membership_pkey"'
    )
    assert dump_state(conn, STATE_TABLES) == before


def test_group_staging_keeps_the_last_run(database_url: str, conn: db.Connection) -> None:
    """After a run, stg_groups and stg_group_membership show exactly what the groups step staged."""
    sync_days(database_url, "day1", "day2")
    assert rows(
        conn,
        "SELECT group_id, parent_group_id, source_file, record_index FROM etl.stg_groups"
        " ORDER BY 1",
    ) == [
        (H1, None, "sync-day2/admin_groups/1.json", 1),
        (DEVOPS, H1, "sync-day2/admin_groups/1.json", 0),
        (ONBOARDING, H1, "sync-day2/admin_groups/1.json", 4),
        (HARDWARE, H1, "sync-day2/admin_groups/1.json", 2),
        (INFOSEC, DEVOPS, "sync-day2/admin_groups/1.json", 3),
    ]
    assert rows(conn, "SELECT * FROM etl.stg_group_membership WHERE group_id = $1", (H1,)) == [
        (1, H1, A2),
        (1, H1, A3),
        (1, H1, A4),
        (1, H1, A5),
    ]
    assert rows(conn, "SELECT count(*) FROM etl.stg_group_membership") == [(16,)]


def test_a_leaving_pair_whose_row_moved_since_the_diff_is_removed_by_its_key(
    database_url: str, conn: db.Connection
) -> None:
    """The groups step deletes leaving pairs by the ctid its diff read them at; a row rewritten
    in between (here by a trigger of the test on the diff's helper table, right after the diff,
    as another session's write would) is no longer there, and goes by its key instead: the
    state is that of a clean run."""
    sync_days(database_url, "day1")
    rows(conn, "CREATE TABLE public.moved_once (done boolean)")
    rows(
        conn,
        """CREATE FUNCTION public.move_every_pair() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM public.moved_once) THEN
                INSERT INTO public.moved_once VALUES (true);
                UPDATE etl.group_membership SET synced_at = synced_at;
            END IF;
            RETURN NULL;
        END $$""",
    )
    rows(
        conn,
        "CREATE TRIGGER move_every_pair AFTER INSERT ON etl.stg_membership_changes"
        " FOR EACH STATEMENT EXECUTE FUNCTION public.move_every_pair()",
    )
    sync_days(database_url, "day2")
    assert rows(conn, "SELECT done FROM public.moved_once") == [(True,)]  # the rows did move
    assert rows(
        conn,
        "SELECT details->>'members_removed' FROM etl.sync_runs"
        " WHERE sync_day = 'day2' AND entity = 'groups'",
    ) == [("1",)]
    assert member_pairs(conn) == member_pairs_of_clean_run("day1", "day2")


def member_pairs(conn: db.Connection) -> list[tuple[Any, ...]]:
    return rows(conn, "SELECT group_id, agent_id FROM etl.group_membership ORDER BY 1, 2")


def member_pairs_of_clean_run(*days: str) -> list[tuple[Any, ...]]:
    return of_clean_run(member_pairs, *days)
