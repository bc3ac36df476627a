"""Big input: peak memory follows the batch size, not the bytes read or the records kept.

A run reads one file at a time and big pages a chunk at a time, so input bytes that end up in no
column (the many fields etl does not store) cost no memory however many there are; decoded
records go to disk in batches, and the plan works on one batch at a time. Each test runs etl in
a child process that reports its own peak RSS, and compares a big day with a small day of the
same shape. Each limit is at least 33 MB above the difference measured; three runs of each
varied by at most 9 MB.

The child runs ``--serial`` with ``MALLOC_ARENA_MAX=2``: one thread does all the work (no
apply thread, no spare connection), so the peak is the plain path's own and glibc does not add
an arena per thread that happened to allocate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import rows

from bench.scale import run_day
from etl import db

FILLER = "x" * 2_000  # an unstored field, as the real API's pages are full of them
FIRST_ID = 90_000_000_000


@pytest.fixture(autouse=True)
def few_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measured children allocate from at most two malloc arenas."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")


def peak_rss_mb(url: str, data_dir: Path, entity: str) -> int:
    """Sync day1 of ``data_dir`` for one entity, serially, in a child process; its peak RSS in
    MB."""
    return int(run_day(url, data_dir, "day1", "--entity", entity, "--serial")["peak_rss_mb"])


def agent(n: int) -> dict[str, object]:
    return {"id": FIRST_ID + n, "contact": {"name": f"Agent {n}"}, "signature": FILLER}


def write_agents_page(data_dir: Path, count: int) -> int:
    """One agents page of ``count`` agents; returns its size in bytes."""
    folder = data_dir / "sync-day1" / "agents"
    folder.mkdir(parents=True)
    page = folder / "1.json"
    with page.open("w") as out:
        out.write("[" + ",".join(json.dumps(agent(n)) for n in range(count)) + "]")
    return page.stat().st_size


def write_detail_files(data_dir: Path, count: int) -> None:
    """A roles page and one agent_details file per agent, with ``count`` agents."""
    day = data_dir / "sync-day1"
    (day / "roles").mkdir(parents=True)
    (day / "roles" / "1.json").write_text(json.dumps([{"id": 7, "name": "Agent"}]))
    (day / "agent_details").mkdir()
    for n in range(count):
        record = {"id": FIRST_ID + n, "role_ids": [7], "signature": FILLER}
        (day / "agent_details" / f"{FIRST_ID + n}.json").write_text(json.dumps(record))


def test_a_100_mb_page_costs_no_more_memory_than_its_records(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """A 100 MB agents page of 50,000 agents peaks within 100 MB of a 1 MB page of 500 agents
    (67 MB in each of three runs on 2026-12-06): the page is read 8 MB at a time, and the
    records' kept columns are a few MB."""
    write_agents_page(tmp_path / "small", 500)
    small = peak_rss_mb(database_url, tmp_path / "small", "agents")
    size = write_agents_page(tmp_path / "big", 50_000)
    assert size > 100_000_000
    big = peak_rss_mb(database_url, tmp_path / "big", "agents")
    assert rows(conn, "SELECT count(*) FROM etl.agents") == [(50_000,)]
    assert big - small < 100, (small, big)


def test_50_000_files_cost_no_more_memory_than_their_records(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """50,000 agent_details files (100 MB) peak within 100 MB of 500 such files (56-59 MB in
    three runs on 2026-12-06): each file is read, hashed and decoded on its own, and its ledger
    entry leaves memory in batches."""
    write_agents_page(tmp_path / "agents", 50_000)
    peak_rss_mb(database_url, tmp_path / "agents", "agents")
    write_detail_files(tmp_path / "small", 500)
    small = peak_rss_mb(database_url, tmp_path / "small", "roles")
    write_detail_files(tmp_path / "big", 50_000)
    big = peak_rss_mb(database_url, tmp_path / "big", "roles")
    assert rows(
        conn,
        "SELECT count(*) FROM etl.sync_run_files"
        " WHERE run_id = (SELECT max(run_id) FROM etl.sync_runs)",
    ) == [(50_001,)]
    assert rows(conn, "SELECT count(*) FROM etl.agent_role_mapping") == [(50_000,)]
    assert big - small < 100, (small, big)


def write_groups(data_dir: Path, groups: int, members: int, agents: int) -> None:
    """Pages of 100 groups, each holding ``members`` distinct ids of the ``agents`` agents."""
    folder = data_dir / "sync-day1" / "admin_groups"
    folder.mkdir(parents=True)
    for page in range(0, groups, 100):
        records = [
            {
                "id": FIRST_ID + g,
                "name": f"Group {g}",
                "agent_ids": [FIRST_ID + (g * 7 + k) % agents for k in range(members)],
            }
            for g in range(page, min(page + 100, groups))
        ]
        (folder / f"{page // 100 + 1}.json").write_text(json.dumps(records))


def test_half_a_million_memberships_cost_integers_not_strings(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """500,000 memberships (1,000 groups of 500 agents) peak within 100 MB of 5,000 (34-36 MB
    in three runs on 2026-12-06): exploded mapping elements are (record, group, agent)
    integers, and only the few reported ones get a file and JSON path. When every element
    carried its file and paths as strings and known ids were a semi join, the big day took
    249 MB more."""
    write_agents_page(tmp_path / "agents", 10_000)
    peak_rss_mb(database_url, tmp_path / "agents", "agents")
    write_groups(tmp_path / "small", 10, 500, 10_000)
    small = peak_rss_mb(database_url, tmp_path / "small", "groups")
    write_groups(tmp_path / "big", 1_000, 500, 10_000)
    big = peak_rss_mb(database_url, tmp_path / "big", "groups")
    assert rows(conn, "SELECT count(*) FROM etl.group_membership") == [(500_000,)]
    assert big - small < 100, (small, big)


def write_agent_pages(data_dir: Path, count: int) -> None:
    """Pages of 1,000 small agents (no unstored fields: only records, no filler bytes)."""
    folder = data_dir / "sync-day1" / "agents"
    folder.mkdir(parents=True)
    for page in range(0, count, 1_000):
        records = [
            {"id": FIRST_ID + n, "contact": {"name": f"Agent {n}"}}
            for n in range(page, min(page + 1_000, count))
        ]
        (folder / f"{page // 1_000 + 1}.json").write_text(json.dumps(records))


def test_more_records_cost_no_more_memory_once_batches_are_full(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """800,000 agents peak within 50 MB of 200,000 (7-16 MB in three runs on 2026-12-06; both
    days fill many batches): decoded batches wait on disk, and only an id per record is held
    at once, to find duplicates. While a day's records stayed in memory as one frame, the big
    day took 119 MB more."""
    write_agent_pages(tmp_path / "small", 200_000)
    small = peak_rss_mb(database_url, tmp_path / "small", "agents")
    write_agent_pages(tmp_path / "big", 800_000)
    big = peak_rss_mb(database_url, tmp_path / "big", "agents")
    assert rows(conn, "SELECT count(*) FROM etl.agents") == [(800_000,)]
    assert big - small < 50, (small, big)
