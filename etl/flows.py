"""A fleet's day across machines, as Prefect 3 flows (the optional extra ``etl[prefect]``).

``etl-fleet-day`` lists the day's accounts, migrates the schema once, splits the accounts into
shards of about equal size and runs each shard as one ``etl-fleet-shard`` flow run: on a work
pool's workers when ``shard_deployment`` names that flow's deployment, else in this process. A
shard is one fleet (:func:`etl.fleet.run_fleet`): long-lived worker processes that each import
etl once, keep one connection and sync account after account. Never a run per account.

Accounts that failed are tried again in fresh shards, up to ``account_retries`` times: a re-run
is harmless. Refused accounts are not: a guard needs a person (``--allow-mass-removal``). The
outcomes are read back from the ledger, which every shard writes, so they hold wherever a shard
ran and whatever became of its process.

The database URL comes from each process's ``ETL_DATABASE_URL`` (or DATABASE_URL, or libpq's
PG* variables; set it on the work pool), never from a flow parameter: Prefect stores
parameters, and a URL may carry a password.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from etl import ENTITIES, db, fleet, fleet_report, fleet_worker, server
from etl.errors import UsageError
from etl.migrate import migrate

LOCK_TIMEOUT = 300.0


@flow(name="etl-fleet-day")
def fleet_day(
    accounts_dir: str,
    day: str | None = None,
    accounts: list[str] | None = None,
    shards: int = 2,
    workers: int = 2,
    shard_deployment: str | None = None,
    account_retries: int = 1,
    entity: str = "all",
    synced_at: datetime | None = None,
    force: bool = False,
    allow_mass_removal: bool = False,
) -> State:
    """Sync one day of every account of ``accounts_dir`` (or of ``accounts``); the flow fails
    when an account failed or was refused, and its result is the results document either way.

    ``day`` defaults to the date the run was scheduled for (UTC, ``YYYY-MM-DD``), so a daily
    schedule syncs ``sync-<date>`` folders, and a late run still syncs its own day."""
    day = day or scheduled_day()
    entities = ENTITIES if entity == "all" else (entity,)
    url = database_url()
    keys = fleet.find_accounts(Path(accounts_dir), day, accounts)
    missing = fleet.without_day(Path(accounts_dir), day, keys)
    keys = [key for key in keys if key not in missing]
    conn = db.connect(url)
    try:
        migrate(conn, LOCK_TIMEOUT)
        since = db.execute(conn, "server_now")[0][0]
        jobs = fleet.weigh(conn, Path(accounts_dir), day, keys)
    finally:
        db.close(conn)
    shard_args = dict(
        accounts_dir=accounts_dir,
        day=day,
        workers=workers,
        entity=entity,
        synced_at=synced_at,
        force=force,
        allow_mass_removal=allow_mass_removal,
    )
    started = time.perf_counter()
    pending = jobs
    for attempt in range(account_retries + 1):
        futures = [
            run_shard.submit(shard, shard_args, shard_deployment)
            for shard in split_shards(pending, shards)
        ]
        for future in futures:
            future.wait()
        outcomes = read_outcomes(url, day, keys, entities, since)
        retry = {o.key for o in outcomes if o.status == "failed"}
        pending = [job for job in jobs if job.key in retry]
        if not pending or attempt == account_retries:
            break
        get_run_logger().warning("retrying failed accounts: %s", ", ".join(sorted(retry)))
    seconds = time.perf_counter() - started
    outcomes = [fleet_report.Outcome(k, "failed", message=m) for k, m in missing.items()] + outcomes
    document = fleet_report.results_document(day, outcomes, seconds)
    report(day, outcomes, seconds)
    bad = len(outcomes) - document["succeeded"]
    if bad:
        return Failed(message=f"{bad} of {len(outcomes)} accounts did not succeed", data=document)
    return Completed(data=document)


@flow(name="etl-fleet-shard")
def fleet_shard(
    accounts_dir: str,
    day: str,
    accounts: list[str],
    workers: int = 2,
    entity: str = "all",
    synced_at: datetime | None = None,
    force: bool = False,
    allow_mass_removal: bool = False,
) -> dict[str, int]:
    """Sync ``accounts`` of the day on ``workers`` long-lived worker processes; the counts of
    how they ended (each account's own outcome is in the ledger)."""
    from etl.run import SyncOptions

    url = database_url()

    def weighed() -> list[fleet_worker.Job]:
        conn = db.connect(url)
        try:
            return fleet.weigh(conn, Path(accounts_dir), day, accounts)
        finally:
            db.close(conn)

    options = SyncOptions(
        data_dir=Path(accounts_dir),
        synced_at=synced_at,
        force=force,
        allow_mass_removal=allow_mass_removal,
    )
    entities = ENTITIES if entity == "all" else (entity,)
    settings = fleet_worker.FleetSettings(url, day, entities, options, LOCK_TIMEOUT, "json", False)
    logger = get_run_logger()
    outcomes = fleet.run_fleet(settings, weighed, min(workers, len(accounts)), lambda _: None)
    for outcome in outcomes:
        if outcome.status != "succeeded":
            logger.warning("%s %s: %s", outcome.key, outcome.status, outcome.message)
    return {s: sum(o.status == s for o in outcomes) for s in ("succeeded", "failed", "refused")}


@task(name="etl-shard")
def run_shard(jobs: list[fleet_worker.Job], args: dict[str, Any], deployment: str | None) -> None:
    """One shard: a run of the shard deployment on its work pool, or the shard flow here."""
    keys = [job.key for job in jobs]
    if deployment is None:
        fleet_shard(accounts=keys, **args)
        return
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync here, never a coroutine
        deployment, parameters={**args, "accounts": keys}, timeout=None
    )
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        get_run_logger().warning("shard %s ended %s", run.name, state)


def split_shards(jobs: list[fleet_worker.Job], count: int) -> list[list[fleet_worker.Job]]:
    """``jobs`` (largest first) in at most ``count`` shards of about equal weight: each job goes
    to the lightest shard so far."""
    shards: list[list[fleet_worker.Job]] = [[] for _ in range(max(1, min(count, len(jobs))))]
    weights = [0] * len(shards)
    for job in sorted(jobs, key=lambda job: (-job.weight, job.key)):
        lightest = weights.index(min(weights))
        shards[lightest].append(job)
        weights[lightest] += max(job.weight, 1)
    return shards


def read_outcomes(
    url: str, day: str, keys: list[str], entities: tuple[str, ...], since: datetime
) -> list[fleet_report.Outcome]:
    """Each account's outcome from the ledger: the last run of each entity of the day since the
    flow started. An entity that failed (or never ended) fails the account; else one refused
    refuses it; an account without every entity succeeded and no reason failed: not synced."""
    conn = db.connect(url)
    try:
        rows = db.execute(conn, "day_outcomes", (keys, day, since))
        db.commit(conn)
    finally:
        db.close(conn)
    runs: dict[str, dict[str, tuple[Any, ...]]] = {key: {} for key in keys}
    for key, entity, *rest in rows:
        runs[key][entity] = tuple(rest)
    return [account_outcome(key, runs[key], entities) for key in keys]


def account_outcome(
    key: str, runs: dict[str, tuple[Any, ...]], entities: tuple[str, ...]
) -> fleet_report.Outcome:
    statuses = {entity: run[0] for entity, run in runs.items()}
    rows = sum(int(run[2]) for run in runs.values())
    seconds = round(sum(run[3] or 0.0 for run in runs.values()), 3)
    outcome = fleet_report.Outcome(key, "succeeded", rows=rows, seconds=seconds, entities=statuses)
    for entity in entities:
        if entity not in runs:
            return replace(outcome, status="failed", message=f"not synced: no run of {entity}")
        status, message = runs[entity][0], runs[entity][1]
        if status == "refused":
            return replace(outcome, status="refused", message=message)
        if status != "succeeded":
            return replace(outcome, status="failed", message=message or f"{entity} {status}")
    return outcome


def report(day: str, outcomes: list[fleet_report.Outcome], seconds: float) -> None:
    """The summary in the flow's log, and as artifacts: the summary and a table of accounts."""
    text = fleet_report.summary(day, outcomes, seconds)
    get_run_logger().info(text)
    slug = "".join(c if c.isalnum() else "-" for c in day.lower())
    create_markdown_artifact(f"```\n{text}\n```", key=f"etl-fleet-{slug}", description=text)
    table = [
        {"account": o.key, "status": o.status, "rows": o.rows, "message": o.message or ""}
        for o in outcomes
    ]
    create_table_artifact(table, key=f"etl-fleet-{slug}-accounts")


def scheduled_day() -> str:
    start = flow_run.scheduled_start_time
    moment = start if isinstance(start, datetime) else datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def database_url() -> str:
    configured = server.configured_url(None)
    if configured is None:
        raise UsageError(
            "the fleet flows need ETL_DATABASE_URL (or DATABASE_URL, or libpq's PGHOST and "
            "friends) in the environment of every process that runs them (a work pool's job "
            "variables), naming the one database of the fleet"
        )
    return configured[0]


def deploy(
    work_pool: str,
    accounts_dir: str,
    *,
    cron: str | None = None,
    shards: int = 2,
    workers: int = 2,
) -> list[str]:
    """Register both flows on ``work_pool`` (they run from the installed etl package, so every
    worker machine needs ``pip install 'etl[prefect]'`` and ETL_DATABASE_URL): the shard flow,
    and the day flow with ``cron`` as its schedule (UTC). Returns the deployment names."""
    from prefect.types.entrypoint import EntrypointType

    common = dict(
        work_pool_name=work_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )
    fleet_shard.deploy(name="shard", **common)  # type: ignore[arg-type]
    shard_name = "etl-fleet-shard/shard"
    parameters = dict(
        accounts_dir=accounts_dir, shards=shards, workers=workers, shard_deployment=shard_name
    )
    fleet_day.deploy(name="daily", cron=cron, parameters=parameters, **common)  # type: ignore[arg-type]
    return [shard_name, "etl-fleet-day/daily"]


def main(argv: list[str] | None = None) -> int:
    """``python -m etl.flows deploy --work-pool POOL --accounts-dir DIR [--cron CRON]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m etl.flows", description="Register etl's fleet flows with Prefect."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("deploy", help="deploy the day and shard flows to a work pool")
    command.add_argument("--work-pool", required=True, help="a Prefect work pool (type process)")
    command.add_argument(
        "--accounts-dir", required=True, help="the accounts folder, as seen by every worker machine"
    )
    command.add_argument("--cron", help="the day flow's schedule, e.g. '0 3 * * *' (UTC)")
    command.add_argument("--shards", type=int, default=2, help="shards a day (default: 2)")
    command.add_argument("--workers", type=int, default=2, help="processes a shard (default: 2)")
    args = parser.parse_args(argv)
    # the flows of the module etl.flows: run as a script, this one is __main__, an entrypoint
    # that no worker could import
    from etl import flows

    names = flows.deploy(
        args.work_pool,
        args.accounts_dir,
        cron=args.cron,
        shards=args.shards,
        workers=args.workers,
    )
    print("deployed: " + ", ".join(names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
