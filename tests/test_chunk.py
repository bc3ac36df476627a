"""Chunks: which small accounts of a fleet are planned as one, and that the joint plan splits
back into each account's own plan exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from conftest import fresh_database, rows, state_alone, sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replay import DUMPED_TABLES, dump_state

from etl import (
    BATCH_VALUES,
    ENTITIES,
    chunk,
    db,
    fleet,
    fleet_worker,
    joint_plan,
    ledger,
    log,
    run,
    synth,
)
from etl.batches import JointTable, Table
from etl.decode import Decoded, decode_files
from etl.errors import DatabaseError
from etl.joint_plan import apart, day_ids, plans_of
from etl.migrate import migrate
from etl.plan import AccountDay, Plan, plan_day
from etl.records import AGENT, AGENT_DETAILS, GROUP, ROLE
from etl.run import EntityRun, SyncOptions
from etl.source import InputFile

# Every run's account, entity, status and message, by account and in run order.
RUNS_BY_ACCOUNT = (
    "SELECT a.account_key, r.entity, r.status, r.message FROM etl.sync_runs r"
    " JOIN etl.accounts a USING (account_id) ORDER BY a.account_key, r.run_id"
)

STAGED_AGENTS_OF_ONE = (
    "SELECT count(*) FROM etl.stg_agents JOIN etl.accounts USING (account_id)"
    " WHERE account_key = 'one'"
)

NO_GROUPS = pa.table(
    {"group_id": pa.array([], pa.int64()), "parent_group_id": pa.array([], pa.int64()),
     "present": pa.array([], pa.bool_())}
)  # fmt: skip


def groups_day(groups: list[dict[str, object]], known_agents: list[int]) -> AccountDay:
    page = InputFile("sync-d/admin_groups/1.json", json.dumps(groups).encode())
    known = pa.array(known_agents, pa.int64())
    return AccountDay({GROUP.name: decode_files(GROUP, [page])}, known, stored_groups=NO_GROUPS)


def test_days_that_define_apart_are_planned_together() -> None:
    """An id a day defines (a record's id, a stored id) must not be touched by another day; an
    id that days only name (an unknown member, say) may be shared."""
    a = groups_day([{"id": 1, "name": "a", "agent_ids": [10, 99]}], known_agents=[10])
    b = groups_day([{"id": 2, "name": "b", "agent_ids": [20, 99]}], known_agents=[20])
    c = groups_day([{"id": 3, "name": "c", "agent_ids": [10]}], known_agents=[30])  # names a's
    d = groups_day([{"id": 1, "name": "d"}], known_agents=[])  # defines a's group id
    e = groups_day([{"id": 5, "name": "e", "parent_group_id": 2}], known_agents=[])
    f = groups_day([{"id": 6, "name": "f", "parent_group_id": 99}], known_agents=[])

    def places(*days: AccountDay) -> tuple[list[int], list[int]]:
        return apart([day_ids(day) for day in days])

    assert places(a, b, c, d, e) == ([0, 1], [2, 3, 4])
    assert places(a, b, f) == ([0, 1, 2], [])
    assert places(c, a) == ([0], [1])
    assert places(e, b) == ([0], [1])
    assert places(b) == ([0], [])
    assert plans_of("groups", []) == []  # every member of the chunk failed before its plan


def test_a_joint_table_stages_the_rows_of_the_days_still_staged() -> None:
    """Staged together, a joint table's rows go with their day's account id: those of a day
    left out (failed after its plan) and a row of no day do not go."""
    frame = pl.DataFrame(
        {"group_id": [1, 2, 3, 4, 5], "place": [0, 1, 2, 0, None]},
        schema={"group_id": pl.Int64, "place": pl.Int32},
    )
    joint = JointTable(frame, days=3)
    assert joint.rows_of({0: 100, 2: 300}).to_pylist() == [
        {"account_id": 100, "group_id": 1},
        {"account_id": 300, "group_id": 3},
        {"account_id": 100, "group_id": 4},
    ]
    assert [Table.share_of(joint, n).frame().rows() for n in range(3)] == [
        [(1,), (4,)],
        [(2,)],
        [(3,)],
    ]


def agents_day(agents: list[dict[str, object]], batch_values: int) -> AccountDay:
    page = InputFile("sync-d/agents/1.json", json.dumps(agents).encode())
    return AccountDay({AGENT.name: decode_files(AGENT, [page], batch_values=batch_values)})


def test_a_joint_plan_of_days_in_several_batches_splits_into_each_days_own_plan() -> None:
    """A day whose records come in several batches keeps its own rows in a joint plan: the next
    day's ordinals come after all of its batches, so that the next day's losing duplicate does
    not take one of its records with it."""
    a = [{"id": n} for n in (101, 102, 103)]  # batches of 2 + 1 rows
    b = [
        {"id": 201, "updated_at": "2026-02-01T00:00:00Z"},
        {"id": 201, "updated_at": "2026-01-01T00:00:00Z"},  # loses
    ]
    alone = [plan_day("agents", agents_day(day, batch_values=2)) for day in (a, b)]
    joint = plans_of("agents", [agents_day(day, batch_values=2) for day in (a, b)])
    assert [p.tables["stg_agents"].frame().get_column("agent_id").to_list() for p in joint] == [
        [101, 102, 103],
        [201],
    ]
    assert_each_as_alone(joint, alone)


def assert_each_as_alone(joint: list[Plan | Exception], alone: list[Plan]) -> None:
    """Each day's part of the joint plan has the tables and errors of the day planned alone."""
    for own, split in zip(alone, joint, strict=True):
        assert isinstance(split, Plan)
        assert split.errors.equals(own.errors)
        assert sorted(split.tables) == sorted(own.tables)
        for name, table in own.tables.items():
            assert split.tables[name].frame().equals(table.frame()), name


def test_a_joint_plan_splits_into_each_days_own_plan() -> None:
    """Tables and errors of the joint plan, split back, equal each day planned alone: unknown
    members, a duplicate (its message naming the winner's file), a cycle, an orphan, a held id."""
    a = groups_day(
        [
            {"id": 1, "name": "a", "agent_ids": [10, 99]},
            {"id": 2, "name": "b", "parent_group_id": 3},
            {"id": 3, "name": "c", "parent_group_id": 2},
            {"id": 1, "name": "a2", "updated_at": "2026-01-01T00:00:00Z"},
        ],
        known_agents=[10],
    )
    b = groups_day(
        [
            {"id": 7, "name": "x", "agent_ids": [20, 99], "parent_group_id": 42},
            {"id": 8, "name": ""},
        ],
        known_agents=[20],
    )
    alone = [plan_day("groups", day) for day in (a, b)]
    joint = plans_of("groups", [a, b])
    assert_each_as_alone(joint, alone)
    assert [p.errors.select("error_type", "record_id", "error_message").rows() for p in joint] == [
        [
            (
                "DUPLICATE_RECORD",
                1,
                "$[0].id: duplicate group id 1; the occurrence at sync-d/admin_groups/1.json $[3] "
                "wins (latest updated_at, then last in file order)",
            ),
            ("HIERARCHY_CYCLE", 2, "$[1].parent_group_id: group 2 is on a parent cycle of 2 "
             "groups: 2, 3"),
            ("HIERARCHY_CYCLE", 3, "$[2].parent_group_id: group 3 is on a parent cycle of 2 "
             "groups: 2, 3"),
        ],
        [
            ("INVALID_AGENT_ID", 7, "$[0].agent_ids[1]: agent 99 is not a known agent"),
            ("ORPHAN_PARENT", 7, "$[0].parent_group_id: parent group 42 is not a known group"),
            ("VALIDATION_ERROR", 8, "$[1].name: Expected a non-empty `str`, got an empty or "
             "blank one"),
        ],
    ]  # fmt: skip
    assert joint[1].tables["stg_held_ids"].frame().rows() == [("groups", "group", 8)]
    assert joint[1].tables["stg_group_members"].frame().rows() == [(7, [20])]


def two_accounts(folder: Path) -> None:
    """Accounts one and two: small synthetic day1s with bad records, each of its own ids."""
    for number, key in enumerate(("one", "two"), 1):
        world = synth.first_day(synth.account_scale(30), number, id_base=number * 10**7)
        synth.generate_world(world, 1, number, folder / key, bad_rate=0.05)


def sync_as_a_chunk(
    conn: db.Connection, url: str, folder: Path, batch_values: int = BATCH_VALUES
) -> dict[str, tuple[str, str | None]]:
    """Day1 of accounts one and two as one task of a fleet worker: account -> (status, message)."""
    log.configure(fmt="json", quiet=True)  # not the stream an earlier test captured
    migrate(conn)
    synced_at = datetime(2026, 1, 1, 6, tzinfo=UTC)
    options = SyncOptions(data_dir=folder, synced_at=synced_at, batch_values=batch_values)
    settings = fleet_worker.FleetSettings(url, "day1", ENTITIES, options, 30, "json", False)
    jobs = fleet.weigh(conn, folder, "day1", ["one", "two"])
    return {o.key: (o.status, o.message) for o in fleet_worker.sync_task(conn, jobs, settings)}


def test_a_chunk_whose_joint_staging_fails_stages_each_account_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should one COPY for the chunk's accounts fail, each account is staged on its own: both
    land exactly as their single-account runs."""
    two_accounts(tmp_path)

    def refuse(*args: object) -> None:
        raise DatabaseError("database error during staging: the chunk's COPY failed")

    monkeypatch.setattr(chunk, "stage_together", refuse)
    both_land_as_alone(database_url, tmp_path)


def test_members_whose_records_fill_several_batches_land_as_alone(
    database_url: str, tmp_path: Path
) -> None:
    """A chunk's members decoded in batches of a few records each (--batch-size) both land as
    their single-account runs (made with the default batch size)."""
    two_accounts(tmp_path)
    both_land_as_alone(database_url, tmp_path, batch_values=5)


def both_land_as_alone(database_url: str, tmp_path: Path, batch_values: int = BATCH_VALUES) -> None:
    """The two accounts, synced as a chunk, both succeed, each as its single-account run."""
    conn = db.connect(database_url)
    try:
        assert sync_as_a_chunk(conn, database_url, tmp_path, batch_values) == {
            "one": ("succeeded", None),
            "two": ("succeeded", None),
        }
        shared = {key: dump_state(conn, DUMPED_TABLES, key) for key in ("one", "two")}
    finally:
        conn.close()
    for key, state in shared.items():
        assert state == state_alone(tmp_path / key, "day1"), key


def test_a_member_whose_error_files_cannot_be_placed_fails_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should placing one member's error files in its reading fail (a bug), that member's run
    fails with the message, and the other member lands as its single-account run."""
    two_accounts(tmp_path)
    real_error_files = chunk.error_files

    def misplaced(plan: Plan, inputs: Any) -> dict[str, int]:
        if plan.entity == "agents" and inputs["agent"].root.name == "one":
            raise ValueError(
                "sync-day1/agents/9.json: an error row names a file this run did not read"
            )
        return real_error_files(plan, inputs)

    monkeypatch.setattr(chunk, "error_files", misplaced)
    conn = db.connect(database_url)
    try:
        outcomes = sync_as_a_chunk(conn, database_url, tmp_path)
        message = (
            "unexpected ValueError: sync-day1/agents/9.json: an error row names a file this run"
            " did not read"
        )
        assert outcomes == {"one": ("failed", message), "two": ("succeeded", None)}
        assert rows(conn, RUNS_BY_ACCOUNT) == [
            ("one", "agents", "failed", message),
            ("two", "agents", "succeeded", None),
            ("two", "roles", "succeeded", None),
            ("two", "groups", "succeeded", None),
        ]
        two = dump_state(conn, DUMPED_TABLES, "two")
    finally:
        conn.close()
    assert two == state_alone(tmp_path / "two", "day1")


def test_a_member_whose_rows_the_chunks_copy_refuses_fails_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Account one's agents come to staging with an agent twice (a bug): the chunk's one COPY
    is refused, each member is then staged on its own, one fails with the database's message
    in its ledger row, and two lands as its single-account run."""
    two_accounts(tmp_path)
    real_with_bad_records = chunk.with_bad_records

    def twice(plan: Plan, *args: Any) -> dict[str, Table]:
        tables = real_with_bad_records(plan, *args)
        if plan.entity == "agents":
            agents = tables["stg_agents"].frame()
            if agents.get_column("agent_id").min() < synth.FIRST_AGENT + 2 * 10**7:
                tables["stg_agents"] = Table(agents, agents.head(1))
        return tables

    monkeypatch.setattr(chunk, "with_bad_records", twice)
    conn = db.connect(database_url)
    try:
        outcomes = sync_as_a_chunk(conn, database_url, tmp_path)
        refused = outcomes["one"][1]
        assert outcomes == {"one": ("failed", refused), "two": ("succeeded", None)}
        assert refused is not None and refused.startswith("database error during staging: "), (
            refused
        )
        assert 'duplicate key value violates unique constraint "stg_agents_pkey"' in refused
        assert rows(conn, RUNS_BY_ACCOUNT) == [
            ("one", "agents", "failed", refused),
            ("two", "agents", "succeeded", None),
            ("two", "roles", "succeeded", None),
            ("two", "groups", "succeeded", None),
        ]
        staged_by_account = (
            "SELECT a.account_key, count(*) FROM etl.{} s"
            " JOIN etl.accounts a USING (account_id) GROUP BY 1 ORDER BY 1"
        )
        # one's refused rows left nothing staged; two's staged agents are the agents it stores
        assert rows(conn, staged_by_account.format("stg_agents")) == rows(
            conn, staged_by_account.format("agents")
        )
        assert [key for key, _ in rows(conn, staged_by_account.format("agents"))] == ["two"]
        two = dump_state(conn, DUMPED_TABLES, "two")
    finally:
        conn.close()
    assert two == state_alone(tmp_path / "two", "day1")


def test_a_bug_in_one_accounts_plan_fails_that_account_only(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the joint plan fail, and then one account's own plan too (a bug), that account
    fails with the bug's message in its ledger row and the other lands as its single-account
    run would."""
    two_accounts(tmp_path)
    real_plan_day = joint_plan.plan_day

    def buggy(entity: str, day: AccountDay) -> Plan:
        """Fails for any plan of account one's agents: the joint plan, then its own."""
        if AGENT.name in day.decoded:
            ids = day.decoded[AGENT.name].records.frame().get_column("agent_id")
            if ids.min() < synth.FIRST_AGENT + 2 * 10**7:
                raise RuntimeError("a bug")
        return real_plan_day(entity, day)

    monkeypatch.setattr(joint_plan, "plan_day", buggy)
    conn = db.connect(database_url)
    try:
        assert sync_as_a_chunk(conn, database_url, tmp_path) == {
            "one": ("failed", "unexpected RuntimeError: a bug"),
            "two": ("succeeded", None),
        }
        assert rows(conn, RUNS_BY_ACCOUNT) == [
            ("one", "agents", "failed", "unexpected RuntimeError: a bug"),
            ("two", "agents", "succeeded", None),
            ("two", "roles", "succeeded", None),
            ("two", "groups", "succeeded", None),
        ]
        # planned with the other member's rows, staged without them
        assert rows(conn, STAGED_AGENTS_OF_ONE) == [(0,)]
        two = dump_state(conn, DUMPED_TABLES, "two")
    finally:
        conn.close()
    assert two == state_alone(tmp_path / "two", "day1")


def accounts(folder: Path, keys: tuple[str, ...]) -> None:
    """Small synthetic accounts of two days each, with bad records, each of its own ids."""
    for number, key in enumerate(keys, 1):
        world = synth.first_day(synth.account_scale(30), number, id_base=number * 10**7)
        synth.generate_world(world, 2, number, folder / key, bad_rate=0.05)


def state_of_runs(data_dir: Path, runs: list[tuple[str, int]]) -> str:
    """An account's state after single-account runs (day, expected exit status) of
    ``data_dir`` on a database of its own, synced at 2026-01-01T06:00Z."""
    with fresh_database() as url:
        for day, status in runs:
            argv = ("--synced-at", "2026-01-01T06:00:00Z")
            assert sync(url, day, *argv, data_dir=data_dir) == status, day
        conn = db.connect(url)
        try:
            return dump_state(conn)
        finally:
            conn.close()


def sync_task(
    conn: db.Connection, url: str, folder: Path, day: str, keys: list[str], lock_timeout: float = 30
) -> dict[str, tuple[str, str | None]]:
    """The day of ``keys`` as one task of a fleet worker (a chunk, for more than one):
    account -> (status, message)."""
    log.configure(fmt="json", quiet=True)
    options = SyncOptions(data_dir=folder, synced_at=datetime(2026, 1, 1, 6, tzinfo=UTC))
    settings = fleet_worker.FleetSettings(url, day, ENTITIES, options, lock_timeout, "json", False)
    jobs = fleet.weigh(conn, folder, day, keys)
    return {o.key: (o.status, o.message) for o in fleet_worker.sync_task(conn, jobs, settings)}


def test_each_member_of_a_chunk_ends_as_its_single_account_run(
    database_url: str, tmp_path: Path
) -> None:
    """A chunk of four on day1: "three" applied day2 already (refused for the day order),
    "two" has a page cut short (failed), "one" and "four" land. Each member's tables, errors and
    ledger rows (status, counts, files, messages, sync times) are its single-account runs'."""
    keys = ("one", "two", "three", "four")
    accounts(tmp_path, keys)
    page = tmp_path / "two" / "sync-day1" / "agents" / "1.json"
    page.write_bytes(page.read_bytes()[:50])
    conn = db.connect(database_url)
    try:
        assert sync_task(conn, database_url, tmp_path, "day2", ["three"]) == {
            "three": ("succeeded", None)
        }
        assert sync_task(conn, database_url, tmp_path, "day1", list(keys)) == {
            "one": ("succeeded", None),
            "two": (
                "failed",
                "sync-day1/agents/1.json: not valid JSON: input ends early, truncated at byte 50 "
                "(end of file)",
            ),
            "three": (
                "refused",
                "agents: day day1 sorts before day2, which is already applied; re-apply an older "
                "day only with --force",
            ),
            "four": ("succeeded", None),
        }
        assert rows(
            conn,
            "SELECT a.account_key, r.sync_day, r.entity, r.status, r.forced,"
            " (SELECT count(*) FROM etl.sync_run_files f"
            "   WHERE f.account_id = r.account_id AND f.run_id = r.run_id)"
            " FROM etl.sync_runs r JOIN etl.accounts a USING (account_id)"
            " ORDER BY a.account_key, r.run_id",
        ) == [
            ("four", "day1", "agents", "succeeded", False, 1),
            ("four", "day1", "roles", "succeeded", False, 31),
            ("four", "day1", "groups", "succeeded", False, 1),
            ("one", "day1", "agents", "succeeded", False, 1),
            ("one", "day1", "roles", "succeeded", False, 31),
            ("one", "day1", "groups", "succeeded", False, 1),
            ("three", "day2", "agents", "succeeded", False, 1),
            ("three", "day2", "roles", "succeeded", False, 31),
            ("three", "day2", "groups", "succeeded", False, 1),
            ("three", "day1", "agents", "refused", False, 0),
            ("two", "day1", "agents", "failed", False, 1),
        ]
        shared = {key: dump_state(conn, DUMPED_TABLES, key) for key in keys}
    finally:
        conn.close()
    assert shared["one"] == state_of_runs(tmp_path / "one", [("day1", 0)])
    assert shared["two"] == state_of_runs(tmp_path / "two", [("day1", 1)])
    assert shared["three"] == state_of_runs(tmp_path / "three", [("day2", 0), ("day1", 1)])
    assert shared["four"] == state_of_runs(tmp_path / "four", [("day1", 0)])


def test_a_chunk_whose_joint_ledger_statements_fail_does_each_member_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the statement that starts every member's run, or the one that records every
    member's files, fail, each member's is done on its own: both land as their single-account
    runs."""
    two_accounts(tmp_path)
    real_start_runs = ledger.start_runs

    def start_alone(
        conn: db.Connection,
        day: str,
        entity: str,
        accounts: list[tuple[int, datetime | None, bool]],
        now: datetime,
        applying: int | None = None,
    ) -> dict[int, ledger.StartedRun]:
        if len(accounts) > 1:
            raise DatabaseError("database error during start runs: refused")
        return real_start_runs(conn, day, entity, accounts, now, applying)

    def refuse(*args: object) -> None:
        raise DatabaseError("database error during the ledger write: refused")

    monkeypatch.setattr(chunk, "start_runs", start_alone)  # the joint statement
    monkeypatch.setattr(ledger.FileLedger, "flush_together", refuse)
    both_land_as_alone(database_url, tmp_path)


def test_ctrl_c_in_a_chunk_ends_every_started_run_as_interrupted(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the second member decodes: every member's agents run, started together,
    ends 'interrupted' (the files read so far recorded), and KeyboardInterrupt goes on up."""
    two_accounts(tmp_path)
    real_decode = chunk.decode_entity
    calls: list[int] = []

    def decode(run: EntityRun, *args: Any, **kwargs: Any) -> dict[str, Decoded]:
        calls.append(run.account_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_decode(run, *args, **kwargs)

    monkeypatch.setattr(chunk, "decode_entity", decode)
    conn = db.connect(database_url)
    try:
        with pytest.raises(KeyboardInterrupt):
            sync_as_a_chunk(conn, database_url, tmp_path)
        assert rows(
            conn,
            "SELECT a.account_key, r.entity, r.status, r.message,"
            " (SELECT count(*) FROM etl.sync_run_files f"
            "   WHERE f.account_id = r.account_id AND f.run_id = r.run_id)"
            " FROM etl.sync_runs r JOIN etl.accounts a USING (account_id)"
            " ORDER BY a.account_key, r.run_id",
        ) == [
            ("one", "agents", "interrupted", INTERRUPTED, 1),
            ("two", "agents", "interrupted", INTERRUPTED, 0),
        ]
    finally:
        conn.close()


INTERRUPTED = "stopped by the user (Ctrl-C); nothing of it was applied"


def test_runs_start_together_with_their_sync_times_and_applied_days(
    conn: db.Connection,
) -> None:
    """One statement starts each account's run: a given sync time is kept, else the day's first
    succeeded run's is taken, else the moment given; each with the days its entity was applied
    for, and its forced flag."""
    a, b, c = (db.ensure_account(conn, key) for key in ("a", "b", "c"))
    t1, t2, now = (datetime(2026, 1, n, 6, tzinfo=UTC) for n in (1, 2, 9))
    first = ledger.start_runs(conn, "day1", "agents", [(a, t1, False)], now)[a].run_id
    rows(conn, "UPDATE etl.sync_runs SET status = 'succeeded' WHERE run_id = $1", (first,))
    started = ledger.start_runs(
        conn, "day1", "agents", [(a, None, False), (b, None, True), (c, t2, False)], now
    )
    assert {k: (s.synced_at, s.applied_days) for k, s in started.items()} == {
        a: (t1, ["day1"]),
        b: (now, []),
        c: (t2, []),
    }
    assert rows(
        conn,
        "SELECT account_id, run_id, sync_day, entity, status, synced_at, forced"
        " FROM etl.sync_runs WHERE run_id <> $1 ORDER BY account_id",
        (first,),
    ) == [
        (a, started[a].run_id, "day1", "agents", "running", t1, False),
        (b, started[b].run_id, "day1", "agents", "running", now, True),
        (c, started[c].run_id, "day1", "agents", "running", t2, False),
    ]


def test_a_member_whose_lock_another_run_holds_fails_alone(
    database_url: str, tmp_path: Path
) -> None:
    """Another run holds account one's lock past the lock timeout: one fails, its entities
    recorded as failed runs that never started, and two lands as its single-account run."""
    two_accounts(tmp_path)
    holder, conn = db.connect(database_url), db.connect(database_url)
    try:
        assert db.execute(holder, "try_lock", ("one",)) == [(True,)]
        outcomes = sync_task(conn, database_url, tmp_path, "day1", ["one", "two"], lock_timeout=0)
        held = (
            "another etl run holds the sync lock of account one on this database; gave up after "
            "0 s (see --lock-timeout)"
        )
        assert outcomes == {"one": ("failed", held), "two": ("succeeded", None)}
        assert rows(conn, RUNS_BY_ACCOUNT) == [
            ("one", "agents", "failed", held),
            ("one", "roles", "failed", held),
            ("one", "groups", "failed", held),
            ("two", "agents", "succeeded", None),
            ("two", "roles", "succeeded", None),
            ("two", "groups", "succeeded", None),
        ]
        assert db.execute(conn, "try_lock", ("two",)) == [(True,)]  # released
        two = dump_state(conn, DUMPED_TABLES, "two")
    finally:
        holder.close()
        conn.close()
    assert two == state_alone(tmp_path / "two", "day1")


def test_members_whose_files_are_recorded_a_batch_at_a_time_land_as_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the file ledger writing every 2 files as decoding goes on, the chunk's members,
    which share one connection, record their files in order and land as their single-account
    runs."""
    two_accounts(tmp_path)

    class SmallBatches(ledger.FileLedger):
        def __init__(self, conn: db.Connection, account_id: int, run_id: int) -> None:
            super().__init__(conn, account_id, run_id, batch=2)

    monkeypatch.setattr(run, "FileLedger", SmallBatches)  # where entity_run makes it
    conn = db.connect(database_url)
    try:
        assert sync_as_a_chunk(conn, database_url, tmp_path) == {
            "one": ("succeeded", None),
            "two": ("succeeded", None),
        }
        shared = {key: dump_state(conn, DUMPED_TABLES, key) for key in ("one", "two")}
    finally:
        conn.close()
    for key, state in shared.items():
        assert state == state_alone(tmp_path / key, "day1"), key


STAMPS = [None, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]


@st.composite
def small_day(draw: st.DrawFn, entity: str, base: int) -> dict[str, Any]:
    """One account's day of ``entity``, its ids from ``base`` on (a few of each, so that ids
    repeat), with the ids it stores: duplicates, unknown members and roles, cycles and orphans
    come by chance."""
    ids = st.integers(base + 1, base + 6)

    def stamped(record: dict[str, Any]) -> dict[str, Any]:
        stamp = draw(st.sampled_from(STAMPS))
        return record if stamp is None else {**record, "updated_at": stamp}

    day: dict[str, Any] = {"known": draw(st.lists(ids, max_size=5, unique=True))}
    if entity == "agents":
        day["agent"] = [stamped({"id": draw(ids)}) for _ in range(draw(st.integers(0, 6)))]
    elif entity == "roles":
        day["roles"] = draw(st.lists(ids, max_size=4, unique=True))
        day["role"] = [
            stamped({"id": draw(ids), "name": "r", "agent_ids": draw(st.lists(ids, max_size=4))})
            for _ in range(draw(st.integers(0, 4)))
        ]
        day["agent_details"] = [
            stamped({"id": draw(ids), "role_ids": draw(st.lists(ids, max_size=3))})
            for _ in range(draw(st.integers(0, 6)))
        ]
    else:
        parents = st.one_of(st.none(), ids)
        day["stored"] = draw(st.lists(ids, max_size=3, unique=True))
        day["group"] = [
            stamped(
                {
                    "id": draw(ids),
                    "name": "g",
                    "parent_group_id": draw(parents),
                    "agent_ids": draw(st.lists(ids, max_size=4)),
                }
            )
            for _ in range(draw(st.integers(0, 5)))
        ]
    return day


def planned_day(entity: str, day: dict[str, Any], batch_values: int) -> AccountDay:
    """The day decoded in batches of ``batch_values`` values, with its stored ids."""

    def decoded(kind: Any) -> Decoded:
        page = InputFile(f"sync-d/{kind.folder}/1.json", json.dumps(day[kind.name]).encode())
        return decode_files(kind, [page], batch_values=batch_values)

    known = pa.array(day["known"], pa.int64())
    if entity == "agents":
        return AccountDay({AGENT.name: decoded(AGENT)})
    if entity == "roles":
        roles = pa.array(day["roles"], pa.int64())
        both = {ROLE.name: decoded(ROLE), AGENT_DETAILS.name: decoded(AGENT_DETAILS)}
        return AccountDay(both, known, known_roles=roles)
    stored = pa.table(
        {
            "group_id": pa.array(day["stored"], pa.int64()),
            "parent_group_id": pa.array([None] * len(day["stored"]), pa.int64()),
            "present": pa.array([True] * len(day["stored"]), pa.bool_()),
        }
    )
    return AccountDay({GROUP.name: decoded(GROUP)}, known, stored_groups=stored)


@st.composite
def chunk_days(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], int]:
    """An entity, two to four accounts' days of it (mostly with ids apart, sometimes on the
    same ids, which are then planned alone) and a batch size."""
    entity = draw(st.sampled_from(["agents", "roles", "groups"]))
    bases = [draw(st.sampled_from([n * 100, 0])) for n in range(draw(st.integers(2, 4)))]
    return entity, [draw(small_day(entity, base)) for base in bases], draw(st.integers(1, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunk_days())
def test_a_joint_plan_is_each_days_own_plan(case: tuple[str, list[dict[str, Any]], int]) -> None:
    """Planned as a chunk, in batches of any size, every day's tables and errors are those of
    the day planned alone."""
    entity, days, batch_values = case
    alone = [plan_day(entity, planned_day(entity, day, batch_values)) for day in days]
    joint = plans_of(entity, [planned_day(entity, day, batch_values) for day in days])
    assert_each_as_alone(joint, alone)
