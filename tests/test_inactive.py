"""Property: the stored inactive flags equal a brute-force reachability over random hierarchies."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import default_account, fresh_database, rows, write_day
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import db
from etl.cli import main
from etl.errors import DatabaseError
from etl.server import wrapped

AGENTS = (1, 2, 3, 4)
GROUPS = tuple(range(1, 11))


@st.composite
def day_snapshot(draw: st.DrawFn) -> dict[str, Any]:
    """One day: which agents are active, and the groups present with parent and members. The
    parents form a forest (a parent with a smaller id) with some extra edges to any group,
    itself or an unknown id, which make cycles, self-parents and orphans."""
    active = {a: draw(st.booleans()) for a in AGENTS}
    groups = {}
    for g in draw(st.sets(st.sampled_from(GROUPS))):
        forest = st.sampled_from(range(1, g)) if g > 1 else st.none()
        parent = draw(st.one_of(st.none(), forest, forest, st.sampled_from((*GROUPS, 99))))
        groups[g] = (parent, draw(st.lists(st.sampled_from(AGENTS), max_size=3)))
    return {"active": active, "groups": groups}


def write_snapshot(data_dir: Path, day: str, snapshot: dict[str, Any]) -> None:
    write_day(
        data_dir,
        day,
        agents={
            "1.json": [{"id": a, "deactivated": not on} for a, on in snapshot["active"].items()]
        },
        admin_groups={
            "1.json": [
                {"id": g, "name": f"g{g}", "parent_group_id": parent, "agent_ids": members}
                for g, (parent, members) in sorted(snapshot["groups"].items())
            ]
        },
    )


def brute_force_inactive(snapshot: dict[str, Any], known: set[int]) -> dict[int, bool]:
    """SEMANTICS section 7 read literally: a present group is active iff a search down its
    child edges through present groups, itself included, meets an active member."""
    present = snapshot["groups"]
    children = {g: [c for c, (p, _) in present.items() if p == g] for g in present}

    def active(g: int) -> bool:
        seen, todo = set(), [g]
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            if any(snapshot["active"][a] for a in present[node][1]):
                return True
            todo.extend(children[node])
        return False

    return {g: not (g in present and active(g)) for g in known}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(day_snapshot(), min_size=1, max_size=3))
def test_inactive_matches_brute_force_reachability(template_url: str, days: list[dict]) -> None:
    """Over random days of hierarchies with cycles, self-parents, orphans and absent groups,
    after the agents step (today's agents, yesterday's groups) and after the groups step, every
    stored inactive flag equals the brute-force answer, and so do the memberships and each
    group's count of active members."""
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        data_dir = Path(tmp)
        conn = db.connect(url)
        try:
            known: set[int] = set()
            stored_groups: dict[int, Any] = {}
            for n, snapshot in enumerate(days, 1):
                write_snapshot(data_dir, f"day{n}", snapshot)
                synced_at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=n)
                for entity in ("agents", "groups"):
                    argv = ["--day", f"day{n}", "--entity", entity, "--data-dir", str(data_dir)]
                    argv += ["--database-url", url, "--synced-at", synced_at.isoformat()]
                    assert main([*argv, "--allow-mass-removal"]) == 0
                    if entity == "groups":
                        stored_groups = snapshot["groups"]
                        known |= set(stored_groups)
                    state = {"active": snapshot["active"], "groups": stored_groups}
                    assert dict(rows(conn, "SELECT group_id, inactive FROM etl.groups")) == (
                        brute_force_inactive(state, known)
                    ), entity
                    assert stored_active_members(conn) == brute_force_active_members(state)
                assert rows(
                    conn, "SELECT group_id, agent_id FROM etl.group_membership ORDER BY 1, 2"
                ) == sorted(
                    {(g, a) for g, (_, agents) in snapshot["groups"].items() for a in agents}
                )
        finally:
            conn.close()


def stored_active_members(conn: db.Connection) -> dict[int, int]:
    """The bookkeeping counts the inactive walk starts from, leaving out zeros."""
    return dict(
        rows(
            conn,
            "SELECT group_id, active_members FROM etl.group_active_members"
            " WHERE active_members <> 0",
        )
    )


def brute_force_active_members(snapshot: dict[str, Any]) -> dict[int, int]:
    """Per group with any, its distinct members that are active."""
    counts = {
        g: len({a for a in members if snapshot["active"][a]})
        for g, (_, members) in snapshot["groups"].items()
    }
    return {g: n for g, n in counts.items() if n}


def test_brute_force_sanity() -> None:
    """The model itself: activeness climbs a chain and a cycle, not a tail or an absent group."""
    snapshot = {
        "active": {1: True, 2: False},
        "groups": {1: (None, []), 2: (1, [1]), 3: (3, [2]), 4: (5, []), 5: (4, []), 6: (4, [1])},
    }
    assert brute_force_inactive(snapshot, {1, 2, 3, 4, 5, 6, 7}) == {
        1: False,
        2: False,
        3: True,
        4: False,
        5: False,
        6: False,
        7: True,
    }


def test_active_member_counts_follow_changes_made_outside_etl(conn: db.Connection) -> None:
    """The counts are kept by triggers, so a manual fix or a restore keeps them right too:
    pairs and agents inserted, updated and deleted, and TRUNCATE. An agent id never changes,
    a count below zero stops the inactive walk with the groups named, and a recount repairs
    counts that writes racing outside etl left wrong."""
    account = default_account(conn)
    rows(
        conn,
        "INSERT INTO etl.agents (account_id, agent_id, present, active, synced_at, ingested_at)"
        " VALUES ($1, 1, true, true, now(), now()), ($1, 2, true, false, now(), now()),"
        " ($1, 3, true, true, now(), now())",
        (account,),
    )
    rows(
        conn,
        "INSERT INTO etl.group_membership VALUES (10, 1, now(), $1), (10, 2, now(), $1),"
        " (10, 3, now(), $1), (11, 2, now(), $1)",
        (account,),
    )
    assert stored_active_members(conn) == {10: 2}
    rows(conn, "UPDATE etl.agents SET active = true WHERE agent_id = 2")
    assert stored_active_members(conn) == {10: 3, 11: 1}
    # one statement turning agents both ways: 1 inactive (group 10), 2 inactive (10 and 11),
    # then 1 and 2 active again while 3 turns inactive
    rows(conn, "UPDATE etl.agents SET active = false WHERE agent_id IN (1, 2)")
    assert stored_active_members(conn) == {10: 1}
    rows(conn, "UPDATE etl.agents SET active = NOT active")
    assert stored_active_members(conn) == {10: 2, 11: 1}
    rows(conn, "UPDATE etl.agents SET active = true WHERE agent_id = 3")
    assert stored_active_members(conn) == {10: 3, 11: 1}
    rows(conn, "UPDATE etl.group_membership SET group_id = 11 WHERE agent_id = 1")
    assert stored_active_members(conn) == {10: 2, 11: 2}
    rows(conn, "DELETE FROM etl.agents WHERE agent_id = 3")
    assert stored_active_members(conn) == {10: 1, 11: 2}
    rows(conn, "DELETE FROM etl.group_membership WHERE agent_id = 2")
    assert stored_active_members(conn) == {11: 1}
    db.commit(conn)

    never_change = (
        r"agent ids never change \(agent 1 of account 1 would become agent 9 of account 1\)"
    )
    with pytest.raises(DatabaseError, match=never_change), wrapped("the test"):
        rows(conn, "UPDATE etl.agents SET agent_id = 9 WHERE agent_id = 1")
    db.rollback(conn)

    rows(conn, "UPDATE etl.group_active_members SET active_members = -1 WHERE group_id = 11")
    below_zero = r"active-member counts below zero \(groups 11\)"
    with pytest.raises(DatabaseError, match=below_zero), wrapped("the test"):
        rows(
            conn,
            "SELECT etl.refresh_group_inactive_v1("
            "jsonb_populate_record(NULL::etl.sync_runs, '{\"account_id\": 1}'))",
        )
    db.rollback(conn)

    rows(conn, "UPDATE etl.group_active_members SET active_members = 7 WHERE group_id = 11")
    rows(conn, "SELECT etl.recount_active_members_v2(1)")  # the repair after racing writes
    assert stored_active_members(conn) == {11: 1}

    rows(conn, "TRUNCATE etl.group_membership")
    assert stored_active_members(conn) == {}
    rows(conn, "INSERT INTO etl.group_membership VALUES (12, 1, now(), 1)")
    assert stored_active_members(conn) == {12: 1}
    rows(conn, "TRUNCATE etl.agents")
    assert stored_active_members(conn) == {}


def test_one_statement_over_two_accounts_counts_each_accounts_members(
    conn: db.Connection,
) -> None:
    """Agents of two accounts with the same ids, flipped both ways by one statement: each
    account's counts follow its own agents and memberships, and equal a recount."""
    first = default_account(conn)
    second = int(rows(conn, "SELECT etl.ensure_account_v1('second')")[0][0])
    for account, one, two in ((first, True, False), (second, False, True)):
        rows(
            conn,
            "INSERT INTO etl.agents (account_id, agent_id, present, active, synced_at,"
            " ingested_at) VALUES ($1, 1, true, $2, now(), now()), ($1, 2, true, $3, now(), now())",
            (account, one, two),
        )
    rows(
        conn,
        "INSERT INTO etl.group_membership VALUES (10, 1, now(), $1), (10, 2, now(), $1),"
        " (11, 2, now(), $1), (10, 1, now(), $2), (12, 1, now(), $2), (12, 2, now(), $2)",
        (first, second),
    )
    counts = (
        "SELECT account_id, group_id, active_members FROM etl.group_active_members"
        " WHERE active_members <> 0 ORDER BY 1, 2"
    )
    assert rows(conn, counts) == [(first, 10, 1), (second, 12, 1)]
    rows(conn, "UPDATE etl.agents SET active = NOT active")
    after = [(first, 10, 1), (first, 11, 1), (second, 10, 1), (second, 12, 1)]
    assert rows(conn, counts) == after
    rows(
        conn,
        "SELECT etl.recount_active_members_v2($1), etl.recount_active_members_v2($2)",
        (first, second),
    )
    assert rows(conn, counts) == after
