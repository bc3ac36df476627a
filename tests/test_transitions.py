"""Property: assignment transitions over random day sequences equal a brute-force model."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import fresh_database, open_run, rows, write_day
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import db
from etl.apply import apply_run
from etl.cli import main
from etl.errors import DatabaseError

AGENT_IDS = (1, 2, 3, 4)
ROLE_IDS = (10, 11, 12)
# One day: per agent, its role_ids, or None when the agent has no agent_details record. At least
# one agent has one: an empty agent_details folder is an incomplete snapshot, not an empty one.
day_snapshot = st.fixed_dictionaries(
    {a: st.one_of(st.none(), st.lists(st.sampled_from(ROLE_IDS), max_size=4)) for a in AGENT_IDS}
).filter(lambda day: any(roles is not None for roles in day.values()))


def write_snapshot(data_dir: Path, day: str, snapshot: dict[int, list[int] | None]) -> None:
    write_day(
        data_dir,
        day,
        agents={"1.json": [{"id": a} for a in AGENT_IDS]},
        roles={"1.json": [{"id": r, "name": f"role {r}"} for r in ROLE_IDS]},
        agent_details={
            f"{a}.json": {"id": a, "role_ids": roles}
            for a, roles in snapshot.items()
            if roles is not None
        },
        admin_groups={"1.json": []},
    )


Pair = tuple[int, int]


def model(
    days: list[dict[int, list[int] | None]], times: list[datetime]
) -> tuple[dict[Pair, tuple[str, datetime, datetime | None]], list[tuple[object, ...]]]:
    """SEMANTICS section 6, written as plainly as possible: (final mapping, history rows)."""
    state: dict[Pair, tuple[str, datetime, datetime | None]] = {}
    history: list[tuple[object, ...]] = []
    for snapshot, t in zip(days, times, strict=True):
        pairs = {(a, r) for a, roles in snapshot.items() for r in roles or []}
        for pair in sorted(set(state) | pairs):
            status = state[pair][0] if pair in state else None
            if pair in pairs and status != "assigned":
                state[pair] = ("assigned", t, None)
                history.append((*pair, status, "assigned", t))
            elif pair not in pairs and status == "assigned":
                state[pair] = ("removed", state[pair][1], t)
                history.append((*pair, "assigned", "removed", t))
    return state, history


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(day_snapshot, min_size=1, max_size=4))
def test_transitions_match_the_model(template_url: str, days: list[dict]) -> None:
    """Random snapshots over days give the model's mapping and history rows; re-running the
    last day moves nothing."""
    times = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=n) for n in range(len(days))]
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        data_dir = Path(tmp)
        for n, snapshot in enumerate(days):
            write_snapshot(data_dir, f"day{n + 1}", snapshot)
        argv = ["--data-dir", str(data_dir), "--database-url", url, "--allow-mass-removal"]
        for n, t in enumerate(times):
            assert main(["--day", f"day{n + 1}", "--synced-at", t.isoformat(), *argv]) == 0
        conn = db.connect(url)
        try:
            query = (
                "SELECT agent_id, role_id, status, assigned_at, removed_at"
                " FROM etl.agent_role_mapping ORDER BY 1, 2"
            )
            history_query = (
                "SELECT agent_id, role_id, from_status, to_status, changed_at"
                " FROM etl.agent_role_history ORDER BY changed_at, agent_id, role_id"
            )
            mapping = rows(conn, query)
            expected, expected_history = model(days, times)
            assert mapping == [(a, r, *expected[(a, r)]) for a, r in sorted(expected)]
            assert rows(conn, history_query) == expected_history
            assert main(["--day", f"day{len(days)}", *argv]) == 0
            assert rows(conn, query) == mapping
            assert rows(conn, history_query) == expected_history
        finally:
            conn.close()


def test_model_sanity() -> None:
    """The model itself: assign, remove, re-assign."""
    t = [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    days = [{1: [10]}, {1: []}, {1: [10, 10]}]
    assert model(days, t) == (
        {(1, 10): ("assigned", t[2], None)},
        [
            (1, 10, None, "assigned", t[0]),
            (1, 10, "assigned", "removed", t[1]),
            (1, 10, "removed", "assigned", t[2]),
        ],
    )


def test_apply_refuses_pairs_naming_unknown_agents(conn: db.Connection) -> None:
    """The procedure checks staged pairs as a set (in place of row-by-row foreign keys): a pair
    naming no stored agent stops the apply with the pair named, and nothing is written."""
    open_run(conn, "day1", "roles")
    rows(
        conn,
        "INSERT INTO etl.stg_roles (account_id, role_id, name, source_file, record_index)"
        " VALUES (1, 7, 'r', 'r.json', 0)",
    )
    rows(
        conn,
        "INSERT INTO etl.stg_agent_roles VALUES (42, 7, true, false, 1), (41, 7, true, false, 1)",
    )
    with pytest.raises(DatabaseError) as raised:
        apply_run(conn, 1, 1, allow_mass_removal=False)
    assert str(raised.value) == (
        "database error during apply: staged pairs (agent, role) name no stored agent or role: "
        "(41, 7), (42, 7)"
    )
    assert rows(conn, "SELECT count(*) FROM etl.roles") == [(0,)]


@pytest.mark.database
def test_a_first_pair_load_and_the_next_day(tmp_path: Path) -> None:
    """The first day's pairs and history go in in (agent, role) order; the next day moves them
    as the contract says."""
    write_snapshot(tmp_path, "day1", {1: [10, 11], 2: [10]})
    write_snapshot(tmp_path, "day2", {1: [11], 2: [10, 12]})
    with fresh_database() as url:
        conn = db.connect(url)
        try:
            argv = ["--data-dir", str(tmp_path), "--database-url", url]
            assert main(["--day", "day1", *argv]) == 0
            assert main(["--day", "day2", *argv]) == 0
            assert rows(
                conn,
                "SELECT agent_id, role_id, status FROM etl.agent_role_mapping ORDER BY 1, 2",
            ) == [(1, 10, "removed"), (1, 11, "assigned"), (2, 10, "assigned"), (2, 12, "assigned")]
            assert rows(
                conn,
                "SELECT history_id, agent_id, role_id, from_status, to_status"
                " FROM etl.agent_role_history ORDER BY 1",
            ) == [
                (1, 1, 10, None, "assigned"),
                (2, 1, 11, None, "assigned"),
                (3, 2, 10, None, "assigned"),
                (4, 1, 10, "assigned", "removed"),
                (5, 2, 12, None, "assigned"),
            ]
        finally:
            db.close(conn)
