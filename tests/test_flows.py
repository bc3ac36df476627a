"""The Prefect flows (extra etl[prefect]): a fleet's day split into shards, each a long-lived
fleet of worker processes, failed accounts retried, outcomes read from the ledger. Run against
Prefect's local test harness (its own server, offline)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import rows, state_alone
from replay import DUMPED_TABLES, dump_state

from etl import db, synth
from etl.fleet_worker import Job

pytest.importorskip("prefect", reason="the extra etl[prefect] is not installed")

from prefect.testing.utilities import prefect_test_harness

from etl import flows

pytestmark = pytest.mark.database  # Prefect's test harness runs a server of its own too

SIZES = {"alpha": 30, "bravo": 20, "charlie": 60, "delta": 25, "echo": 15}  # agents per account


@pytest.fixture(scope="module")
def harness() -> object:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def accounts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flow-fleet")
    for number, (key, agents) in enumerate(SIZES.items(), 1):
        world = synth.first_day(synth.account_scale(agents), number)
        synth.generate_world(world, 2, number, folder / key, bad_rate=0.02)
    return folder


def test_shards_are_of_about_equal_weight() -> None:
    jobs = [
        Job(key, Path(key), weight)
        for key, weight in zip("abcdef", [9, 7, 5, 3, 2, 1], strict=True)
    ]
    shards = flows.split_shards(jobs, 2)
    assert [[job.key for job in shard] for shard in shards] == [["a", "d", "e"], ["b", "c", "f"]]
    assert flows.split_shards(jobs[:1], 4) == [[jobs[0]]]


def test_the_flow_syncs_a_fleet_day_in_shards_and_retries_failed_accounts(
    harness: object,
    database_url: str,
    conn: db.Connection,
    accounts_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Day1 of five accounts in two shards of two workers: the flow completes, each account's
    tables are those of its single-account run. Day2 with bravo's page cut short (failed) and
    delta's agents lost (refused): the flow fails, its result names both, bravo was tried twice
    and delta once, and the three others landed."""
    folder = tmp_path / "accounts"
    shutil.copytree(accounts_dir, folder)
    monkeypatch.setenv("ETL_DATABASE_URL", database_url)
    synced_at = "2026-01-01T06:00:00Z"

    state = flows.fleet_day(str(folder), "day1", synced_at=synced_at, return_state=True)
    assert state.is_completed()
    document = state.result()
    assert (document["succeeded"], document["failed"], document["refused"]) == (5, 0, 0)
    for key in ("charlie", "echo"):
        assert dump_state(conn, DUMPED_TABLES, key) == state_alone(accounts_dir / key, "day1")

    page = folder / "bravo" / "sync-day2" / "agents" / "1.json"
    page.write_bytes(page.read_bytes()[:50])
    (folder / "delta" / "sync-day2" / "agents" / "1.json").write_text("[]")
    state = flows.fleet_day(str(folder), "day2", synced_at=synced_at, return_state=True)
    assert state.is_failed()
    assert state.message == "2 of 5 accounts did not succeed"
    document = state.result(raise_on_failure=False)
    outcomes = {a["key"]: (a["status"], a["message"]) for a in document["accounts"]}
    assert outcomes == {
        "charlie": ("succeeded", None),
        "alpha": ("succeeded", None),
        "delta": (
            "refused",
            "mass removal refused: 25 of 25 present agents would leave the list or turn "
            "inactive (if the export really lost them, re-run with --allow-mass-removal)",
        ),
        "bravo": (
            "failed",
            "sync-day2/agents/1.json: not valid JSON: input ends early, truncated at byte 50 "
            "(end of file)",
        ),
        "echo": ("succeeded", None),
    }
    assert rows(
        conn,
        "SELECT a.account_key, r.entity, r.status FROM etl.sync_runs r"
        " JOIN etl.accounts a USING (account_id)"
        " WHERE r.sync_day = 'day2' AND a.account_key IN ('bravo', 'delta', 'echo')"
        " ORDER BY a.account_key, r.run_id",
    ) == [
        ("bravo", "agents", "failed"),
        ("bravo", "agents", "failed"),
        ("delta", "agents", "refused"),
        ("echo", "agents", "succeeded"),
        ("echo", "roles", "succeeded"),
        ("echo", "groups", "succeeded"),
    ]


def test_the_flows_need_the_database_url_from_the_environment(
    harness: object, accounts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ETL_DATABASE_URL", raising=False)
    state = flows.fleet_day(str(accounts_dir), "day1", return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="the fleet flows need ETL_DATABASE_URL"):
        state.result()


def test_shards_run_on_a_work_pools_worker(
    harness: object,
    database_url: str,
    conn: db.Connection,
    accounts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deployed with `python -m etl.flows deploy`, the day flow runs each shard as a run of the
    shard deployment, which a process worker picks up from the work pool: two shard runs, every
    account synced."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("ETL_DATABASE_URL", database_url)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="etl-test-pool", type="process"))
    assert flows.main(["deploy", "--work-pool", "etl-test-pool", "--accounts-dir", "-"]) == 0
    environment = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "etl-test-pool"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        state = flows.fleet_day(
            str(accounts_dir),
            "day1",
            shard_deployment="etl-fleet-shard/shard",
            synced_at="2026-01-01T06:00:00Z",
            return_state=True,
        )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert state.is_completed()
    assert state.result()["succeeded"] == len(SIZES)
    with get_client(sync_client=True) as client:
        shard_runs = [run for run in client.read_flow_runs() if run.deployment_id is not None]
    assert len(shard_runs) == 2
    assert all(run.state is not None and run.state.is_completed() for run in shard_runs)
    assert rows(conn, "SELECT count(*) FROM etl.sync_runs WHERE status = 'succeeded'") == [
        (3 * len(SIZES),)
    ]
