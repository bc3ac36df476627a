"""A fleet worker that dies (exit code 3) in the apply of account alpha's agents (or of any
account named in DYING_WORKER_ACCOUNTS, separated by commas), before its transaction commits: a
worker killed in the middle of a task (by the kernel, short of memory, say). With
DYING_WORKER_AT=take it dies as soon as it takes such an account's task; with connect, every
worker but the first cannot connect; with connect-late, every worker but the first says so only
once three accounts have synced their groups (the first has ended its tasks by then); with
connect-all, none can. Tests put it in
place of etl.fleet's worker_main; the processes it runs in import it by name."""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from etl import db, fleet_worker, hooks
from etl.fleet_worker import FleetSettings, Job

holding: set[str] = set()  # the accounts of the task under way


def worker_main(
    number: int,
    settings: FleetSettings,
    tasks: multiprocessing.Queue[list[Job] | None],
    results: multiprocessing.Queue[tuple[str, int, Any]],
) -> None:
    real_sync_task = fleet_worker.sync_task

    dying = set(os.environ.get("DYING_WORKER_ACCOUNTS", "alpha").split(","))
    at = os.environ.get("DYING_WORKER_AT")
    at_once = at == "take"  # before a word to the parent
    if (at in ("connect", "connect-late") and number > 0) or at == "connect-all":
        real_connect = db.connect  # worker 0 alone connects

        def refused(url: str) -> Any:
            if at == "connect-late":
                wait_for_three_synced(real_connect(url))
            real_connect("postgresql://etl@127.0.0.1:1/etl")  # raises: nothing listens there

        db.connect = refused  # type: ignore[assignment]

    def sync_task(conn: Any, task: list[Job], task_settings: FleetSettings) -> Any:
        holding.clear()
        holding.update(job.key for job in task)
        if at_once and dying & holding:
            os._exit(3)
        return real_sync_task(conn, task, task_settings)

    def die(point: str, entity: str) -> None:
        if dying & holding and (point, entity) == ("apply", "agents"):
            results.close()
            results.join_thread()  # what the worker said so far reaches the parent
            os._exit(3)

    hooks.add(die)
    fleet_worker.sync_task = sync_task  # type: ignore[assignment]
    fleet_worker.worker_main(number, settings, tasks, results)


def wait_for_three_synced(conn: Any) -> None:
    """Until three accounts have synced their groups (a minute at most), then ``conn`` closed."""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM etl.sync_runs WHERE entity = 'groups'"
                    " AND status = 'succeeded'"
                )
                synced = cur.fetchone()[0]
            conn.commit()
            if synced >= 3:
                return
            time.sleep(0.1)
    finally:
        conn.close()
