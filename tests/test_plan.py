"""Plan stage: NUL rejection, duplicate resolution, mapping explosion, known ids, held ids."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.decode import decode_files
from etl.plan import plan_agents, plan_roles
from etl.records import AGENT, AGENT_DETAILS, ROLE
from etl.source import InputFile


def files(folder: str, *pages: list[Any]) -> list[InputFile]:
    return [InputFile(f"{folder}/{n}.json", json.dumps(p).encode()) for n, p in enumerate(pages, 1)]


def ids(*values: int) -> pa.Array:
    return pa.array(values, pa.int64())


def errors_of(plan: Any) -> list[tuple[Any, ...]]:
    return plan.errors.select(
        "record_kind",
        "error_type",
        "field",
        "record_id",
        "source_file",
        "record_index",
        "error_message",
    ).rows()


def test_latest_updated_at_wins_and_losers_are_reported() -> None:
    """Same id twice: the later updated_at wins whatever the order; the other is a duplicate."""
    plan = plan_agents(
        decode_files(
            AGENT,
            files(
                "agents",
                [{"id": 1, "contact": {"name": "new"}, "updated_at": "2026-01-02T00:00:00Z"}],
                [{"id": 1, "contact": {"name": "old"}, "updated_at": "2026-01-01T00:00:00Z"}],
            ),
        )
    )
    assert plan.tables["stg_agents"].frame().select("agent_id", "name", "source_file").rows() == [
        (1, "new", "agents/1.json")
    ]
    assert errors_of(plan) == [
        (
            "agent",
            "DUPLICATE_RECORD",
            "id",
            1,
            "agents/2.json",
            0,
            "$[0].id: duplicate agent id 1; the occurrence at agents/1.json $[0] wins (latest "
            "updated_at, then last in file order)",
        )
    ]


def test_tie_goes_to_the_last_in_record_order_and_missing_updated_at_is_oldest() -> None:
    """Equal updated_at: the last record wins; a null updated_at loses to any timestamp."""
    plan = plan_agents(
        decode_files(
            AGENT,
            files(
                "agents",
                [
                    {"id": 1, "contact": {"name": "a"}, "updated_at": "2026-01-01T00:00:00Z"},
                    {"id": 2, "contact": {"name": "c"}, "updated_at": "2026-01-01T00:00:00Z"},
                ],
                [
                    {"id": 1, "contact": {"name": "b"}, "updated_at": "2026-01-01T01:00:00+01:00"},
                    {"id": 2, "contact": {"name": "d"}},
                ],
            ),
        )
    )
    assert plan.tables["stg_agents"].frame().select("agent_id", "name").rows() == [
        (2, "c"),
        (1, "b"),
    ]
    assert [(e[3], e[4], e[5]) for e in errors_of(plan)] == [
        (1, "agents/1.json", 0),
        (2, "agents/2.json", 1),
    ]


def test_only_valid_occurrences_compete() -> None:
    """An invalid occurrence never wins nor holds the id when a valid one exists."""
    plan = plan_agents(
        decode_files(
            AGENT,
            files(
                "agents",
                [
                    {"id": 1, "deactivated": "x", "updated_at": "2030-01-01T00:00:00Z"},
                    {"id": 1, "contact": {"name": "ok"}, "updated_at": "2020-01-01T00:00:00Z"},
                ],
            ),
        )
    )
    assert plan.tables["stg_agents"].frame().select("agent_id", "name").rows() == [(1, "ok")]
    assert plan.tables["stg_held_ids"].frame().rows() == []
    assert [e[1] for e in errors_of(plan)] == ["VALIDATION_ERROR"]


def test_quarantined_ids_without_a_valid_occurrence_are_held() -> None:
    """A readable id whose every record is bad is held: it keeps its previous state."""
    plan = plan_agents(
        decode_files(
            AGENT,
            files(
                "agents",
                [
                    {"id": 5, "deactivated": "x"},
                    {"id": "6"},
                    {"id": 7, "contact": {"name": "\x00"}},
                ],
            ),
        )
    )
    assert plan.tables["stg_agents"].frame().height == 0
    assert plan.tables["stg_held_ids"].frame().rows() == [
        ("agents", "agent", 5),
        ("agents", "agent", 7),
    ]
    assert errors_of(plan)[2] == (
        "agent",
        "VALIDATION_ERROR",
        "contact.name",
        7,
        "agents/1.json",
        2,
        "$[2].contact.name: NUL character (\\u0000) in a string; PostgreSQL text cannot hold it",
    )


def test_roles_snapshot_is_the_union_of_details_and_role_agent_ids() -> None:
    """Pairs come from details' role_ids and roles' agent_ids; repeats collapse silently."""
    plan = plan_roles(
        decode_files(
            ROLE,
            files(
                "roles", [{"id": 10, "name": "A", "agent_ids": [1, 2, 2]}, {"id": 11, "name": "B"}]
            ),
        ),
        decode_files(AGENT_DETAILS, files("details", {"id": 1, "role_ids": [10, 11, 11]})),
        known_agents=ids(1, 2),
        known_roles=ids(),
    )
    assert plan.tables["stg_agent_roles"].frame().rows() == [
        (1, 10, True, True),
        (1, 11, True, False),
        (2, 10, False, True),
    ]
    assert plan.errors.height == 0


def test_unknown_ids_are_element_errors() -> None:
    """Unknown role in role_ids, unknown agent in agent_ids or as details id: skipped, recorded."""
    plan = plan_roles(
        decode_files(ROLE, files("roles", [{"id": 10, "name": "A", "agent_ids": [1, 99]}])),
        decode_files(
            AGENT_DETAILS,
            files("details", [{"id": 1, "role_ids": [10, 77, 12]}, {"id": 98, "role_ids": [10]}]),
        ),
        known_agents=ids(1),
        known_roles=ids(12),
    )
    assert plan.tables["stg_agent_roles"].frame().rows() == [
        (1, 10, True, True),
        (1, 12, True, False),
    ]
    assert errors_of(plan) == [
        (
            "agent_details",
            "INVALID_ROLE_ID",
            "role_ids[1]",
            1,
            "details/1.json",
            0,
            "$[0].role_ids[1]: role 77 is not a known role",
        ),
        (
            "agent_details",
            "INVALID_AGENT_ID",
            "id",
            98,
            "details/1.json",
            1,
            "$[1].id: agent 98 is not a known agent",
        ),
        (
            "role",
            "INVALID_AGENT_ID",
            "agent_ids[1]",
            10,
            "roles/1.json",
            0,
            "$[0].agent_ids[1]: agent 99 is not a known agent",
        ),
    ]


def test_repeated_unknown_ids_are_reported_once() -> None:
    """Repeats within one array collapse before the checks: one error per distinct unknown id."""
    plan = plan_roles(
        decode_files(ROLE, files("roles", [{"id": 10, "name": "A", "agent_ids": [99, 1, 99]}])),
        decode_files(AGENT_DETAILS, files("details", {"id": 1, "role_ids": [77, 77, 10]})),
        known_agents=ids(1),
        known_roles=ids(),
    )
    assert [(e[1], e[2]) for e in errors_of(plan)] == [
        ("INVALID_ROLE_ID", "role_ids[0]"),
        ("INVALID_AGENT_ID", "agent_ids[0]"),
    ]
    assert plan.tables["stg_agent_roles"].frame().rows() == [(1, 10, True, True)]


def test_held_roles_and_details_are_listed_per_kind() -> None:
    """Quarantined roles and details records hold their ids under their own kinds."""
    plan = plan_roles(
        decode_files(ROLE, files("roles", [{"id": 10, "name": ""}])),
        decode_files(AGENT_DETAILS, files("details", {"id": 1, "role_ids": "10"})),
        known_agents=ids(1),
        known_roles=ids(10),
    )
    assert plan.tables["stg_held_ids"].frame().rows() == [
        ("roles", "role", 10),
        ("roles", "agent_details", 1),
    ]


records = st.lists(
    st.tuples(st.integers(1, 4), st.one_of(st.none(), st.integers(0, 3))), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_duplicate_resolution_matches_brute_force(rows: list[tuple[int, int | None]]) -> None:
    """Property: the winner per id is the max of (updated_at, position), nulls lowest; every
    other occurrence is reported once."""
    page = [
        {
            "id": i,
            "contact": {"name": str(n)},
            "updated_at": None if u is None else f"2026-01-0{u + 1}T00:00:00Z",
        }
        for n, (i, u) in enumerate(rows)
    ]
    plan = plan_agents(decode_files(AGENT, files("agents", page)))
    expected = {}
    for n, (i, u) in enumerate(rows):
        key = (-1 if u is None else u, n)
        if i not in expected or key > expected[i][0]:
            expected[i] = (key, str(n))
    assert sorted(plan.tables["stg_agents"].frame().select("agent_id", "name").rows()) == sorted(
        (i, name) for i, (_, name) in expected.items()
    )
    assert plan.errors.height == len(rows) - len(expected)
