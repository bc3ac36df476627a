"""Hierarchy reports without a database: cycles by pointer doubling, orphans, held groups."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.decode import decode_files
from etl.hierarchy import cycles
from etl.plan import plan_groups
from etl.records import GROUP
from etl.source import InputFile

NO_GROUPS = pa.table(
    {"group_id": [], "parent_group_id": [], "present": []},
    schema=pa.schema(
        [("group_id", pa.int64()), ("parent_group_id", pa.int64()), ("present", pa.bool_())]
    ),
)


def edges(parents: dict[int, int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"group_id": list(parents), "parent_group_id": list(parents.values())},
        schema={"group_id": pl.Int64, "parent_group_id": pl.Int64},
    )


def brute_force_cycles(parents: dict[int, int | None]) -> dict[int, tuple[int, list[int]]]:
    """Each group from which following parents comes back to itself, with its cycle's size and
    ten smallest ids."""
    found = {}
    for start in parents:
        path, node = [], parents.get(start)
        while node is not None and node in parents and node != start and node not in path:
            path.append(node)
            node = parents.get(node)
        if node == start:
            found[start] = (len(path) + 1, sorted([start, *path])[:10])
    return found


def test_cycles_finds_cycles_and_self_parents_but_not_their_tails() -> None:
    """1 -> 2 -> 3 -> 1 is a cycle, 4 hangs below it, 5 is its own parent, 6..9 end somewhere."""
    found = cycles(edges({1: 2, 2: 3, 3: 1, 4: 1, 5: 5, 6: None, 7: 6, 8: 100, 9: 8}))
    assert found.rows() == [
        (1, 3, [1, 2, 3]),
        (2, 3, [1, 2, 3]),
        (3, 3, [1, 2, 3]),
        (5, 1, [5]),
    ]


def test_cycles_of_a_long_cycle_and_an_empty_hierarchy() -> None:
    """A 50,000-group ring is found whole (each member carries only the ten ids a report shows,
    so memory stays linear); no groups, no cycles."""
    ring = {n: n % 50_000 + 1 for n in range(1, 50_001)}
    found = cycles(edges(ring))
    assert found.height == 50_000
    assert set(found["cycle_size"]) == {50_000}
    assert found["cycle_ids"][49_999].to_list() == list(range(1, 11))
    assert cycles(edges({})).rows() == []


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.integers(1, 40), st.one_of(st.none(), st.integers(1, 42)), min_size=0, max_size=40
    )
)
def test_cycles_match_brute_force(parents: dict[int, int | None]) -> None:
    """On any parent map (forests, cycles, tails, parents outside the map) pointer doubling
    finds exactly the groups a walk comes back to."""
    found = {gid: (size, ids) for gid, size, ids in cycles(edges(parents)).rows()}
    assert found == brute_force_cycles(parents)


def page(*records: dict[str, Any]) -> list[InputFile]:
    return [InputFile("admin_groups/1.json", json.dumps(list(records)).encode())]


def stored(*rows: tuple[int, int | None, bool]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"group_id": g, "parent_group_id": p, "present": present} for g, p, present in rows],
        schema=NO_GROUPS.schema,
    )


def reports(plan: Any) -> list[tuple[Any, ...]]:
    return plan.errors.select("error_type", "record_id", "error_message").rows()


def test_orphan_parent_is_a_parent_neither_stored_nor_in_the_snapshot() -> None:
    """A parent stored earlier (even absent) or listed today is known; any other is an orphan."""
    plan = plan_groups(
        decode_files(
            GROUP,
            page(
                {"id": 1, "name": "a", "parent_group_id": 2},
                {"id": 2, "name": "b", "parent_group_id": 9},
                {"id": 3, "name": "c", "parent_group_id": 8},
            ),
        ),
        pa.array([], pa.int64()),
        stored((9, None, False)),
    )
    assert reports(plan) == [
        ("ORPHAN_PARENT", 3, "$[2].parent_group_id: parent group 8 is not a known group")
    ]


def test_a_cycle_through_a_held_group_uses_its_stored_parent() -> None:
    """Group 2 is quarantined and keeps its stored parent 1, closing the cycle 1 -> 2 -> 1:
    only group 1, which has a valid record, is reported."""
    plan = plan_groups(
        decode_files(
            GROUP,
            page(
                {"id": 1, "name": "a", "parent_group_id": 2},
                {"id": 2, "name": "", "parent_group_id": 3},
            ),
        ),
        pa.array([], pa.int64()),
        stored((1, None, True), (2, 1, True)),
    )
    assert reports(plan) == [
        (
            "HIERARCHY_CYCLE",
            1,
            "$[0].parent_group_id: group 1 is on a parent cycle of 2 groups: 1, 2",
        ),
        ("VALIDATION_ERROR", 2, "$[1].name: Expected a non-empty `str`, got an empty or blank one"),
    ]
    assert plan.tables["stg_held_ids"].frame().rows() == [("groups", "group", 2)]


def test_absent_groups_do_not_close_cycles() -> None:
    """Group 2 is not in today's snapshot: its stored parent edge is not part of the hierarchy."""
    plan = plan_groups(
        decode_files(GROUP, page({"id": 1, "name": "a", "parent_group_id": 2})),
        pa.array([], pa.int64()),
        stored((1, None, True), (2, 1, True)),
    )
    assert reports(plan) == []


def test_long_cycles_list_their_first_ten_ids() -> None:
    """A cycle of 12 groups names its size and its ten smallest ids."""
    plan = plan_groups(
        decode_files(
            GROUP,
            page(*[{"id": n, "name": "g", "parent_group_id": n % 12 + 1} for n in range(1, 13)]),
        ),
        pa.array([], pa.int64()),
        NO_GROUPS,
    )
    assert reports(plan)[0] == (
        "HIERARCHY_CYCLE",
        1,
        "$[0].parent_group_id: group 1 is on a parent cycle of 12 groups: "
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...",
    )


def test_memberships_keep_known_agents_and_report_the_rest() -> None:
    """A group's agent_ids stage as one list of its known agents; unknown ids and bad elements
    are reported, repeats collapse."""
    plan = plan_groups(
        decode_files(GROUP, page({"id": 1, "name": "a", "agent_ids": [5, 6, 5, None, 7]})),
        pa.array([5, 7], pa.int64()),
        NO_GROUPS,
    )
    assert plan.tables["stg_group_members"].frame().rows() == [(1, [5, 7])]
    assert reports(plan) == [
        ("INVALID_AGENT_ID", 1, "$[0].agent_ids[1]: agent 6 is not a known agent"),
        ("INVALID_MAPPING", 1, "$[0].agent_ids[3]: Expected an integer id in 1..2^63-1, got null"),
    ]


@pytest.mark.parametrize("strangers", [False, True], ids=["all known", "an unknown agent"])
def test_groups_without_a_known_member_stage_no_member_list(strangers: bool) -> None:
    """Member lists are staged only for groups with a known member, repeats and nulls dropped,
    whether or not some group names an unknown agent (the lists are then rebuilt from pairs)."""
    records = [
        {"id": 1, "name": "a", "agent_ids": [7, 5, 7, None]},
        {"id": 2, "name": "b", "agent_ids": [6] if strangers else []},
        {"id": 3, "name": "c", "agent_ids": None},
        {"id": 4, "name": "d", "agent_ids": [None]},
    ]
    plan = plan_groups(decode_files(GROUP, page(*records)), pa.array([5, 7], pa.int64()), NO_GROUPS)
    assert plan.tables["stg_group_members"].frame().rows() == [(1, [7, 5])]
