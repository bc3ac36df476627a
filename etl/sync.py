"""One sync run: for each entity of a day, read -> decode -> plan -> stage -> apply.

Each (entity, day) gets a ledger row before any work, one staging transaction and one apply
transaction. The first entity that fails stops the run: later entities are not applied (the
next one may have started reading its input while the failing one applied; it is closed
unapplied).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from etl import db, hooks, source
from etl.bad_records import error_files, with_bad_records
from etl.batches import Table
from etl.decode import Decoded, decode_files
from etl.errors import EtlError, Interrupted, RefusedError
from etl.ledger import run_file_hashes, start_runs
from etl.log import get_logger
from etl.overlap import (
    Applying,
    Sessions,
    plan_waits_for,
    settle,
    wait_for_previous,
)
from etl.pages import FileDigest
from etl.plan import AccountDay, Plan, plan_day
from etl.records import AGENT, AGENT_DETAILS, GROUP, ROLE, RecordKind
from etl.run import (
    EntityRun,
    RunResult,
    SyncOptions,
    check_day_order,
    close_failed_run,
    entity_run,
    record_files,
)
from etl.source import InputFile
from etl.stage import stage_tables

ENTITY_KINDS: dict[str, tuple[RecordKind, ...]] = {
    "agents": (AGENT,),
    "roles": (ROLE, AGENT_DETAILS),
    "groups": (GROUP,),
}


def sync_day(
    conn: db.Connection,
    account_id: int,
    day: str,
    entities: tuple[str, ...],
    options: SyncOptions,
) -> list[RunResult]:
    """Sync the given entities of the account's ``day`` in order; raises on the first one that
    fails.

    Unless ``options.serial``, each entity's apply runs on a thread of its own while the next
    entity starts and reads its input on a second connection (the driver lets go of the GIL
    while the server works). The next entity plans once that apply has committed if its plan
    reads what that apply stores (roles after agents), else beside it (groups after roles); it
    is applied only after that apply has committed, and not at all if it failed. Serial, each
    entity is done before the next begins: a dry run needs that, as its one uncommitted
    transaction lives on ``conn`` alone.

    Entities applied for the first time share one sync time: the moment this run started."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    results: list[RunResult] = []
    try:
        run_entities(conn, account_id, day, entities, options, now, results)
    except KeyboardInterrupt:
        applied = [r.entity for r in results]
        under_way = next((e for e in entities if e not in applied), entities[-1])
        interrupted = Interrupted(day, under_way, applied)
        interrupted.results = tuple(results)
        raise interrupted from None
    except EtlError as error:
        error.applied = tuple(r.entity for r in results)
        error.results = tuple(results)
        raise
    seconds = round(time.perf_counter() - started, 4)
    totals = day_totals(results)
    get_logger().info(
        "day_synced", day=day, status="succeeded", entities=len(results), seconds=seconds, **totals
    )
    return results


TOTALS = ("staged", "inserted", "updated", "unchanged", "removed", "quarantined")


def day_totals(results: list[RunResult]) -> dict[str, int]:
    """The day's counts summed over its entities."""
    return {key: sum(int(r.counts.get(key) or 0) for r in results) for key in TOTALS}


def day_summary(day: str, results: list[RunResult], seconds: float) -> str:
    """A few lines for a person: per entity what changed, what was quarantined and the command
    that shows it, and the time."""
    lines = [f"day {day} synced in {seconds:.1f} s"]
    for result in results:
        counts = result.counts
        changed = [f"{counts.get(k) or 0} {k}" for k in ("inserted", "updated", "removed")]
        quarantined = counts.get("quarantined") or 0
        lines.append(
            f"  {result.entity}: {counts.get('staged') or 0} staged, {', '.join(changed)}, "
            f"{quarantined} quarantined"
        )
    if day_totals(results)["quarantined"]:
        lines.append(f"quarantined records: etl errors --day {day}")
    return "\n".join(lines)


def run_entities(
    conn: db.Connection,
    account_id: int,
    day: str,
    entities: tuple[str, ...],
    options: SyncOptions,
    now: datetime,
    results: list[RunResult],
) -> None:
    """The entities in order, each result added to ``results`` once applied."""
    applying: Applying | None = None
    with Sessions(conn) as sessions:
        overlap = not options.serial and len(entities) > 1 and sessions.open_spare()
        for entity in entities:
            previous, applying = applying, None
            try:
                conn_free = sessions.free(previous)
                run = begin_run(conn_free, account_id, day, entity, options, now, previous)
                prepare_run(run, options, previous, results)
            finally:
                settle(previous, results)  # at the latest; its failure is raised first
            background = overlap and entity != entities[-1]
            applying = Applying(run, options.allow_mass_removal, background=background)
            if not background:
                settle(applying, results)


def begin_run(
    conn: db.Connection,
    account_id: int,
    day: str,
    entity: str,
    options: SyncOptions,
    now: datetime,
    previous: Applying | None,
) -> EntityRun:
    """The run's ledger row ('running'), started while ``previous`` may still be applying."""
    applying = previous.run.run_id if previous is not None else None
    account = (account_id, options.synced_at, options.force)
    started = start_runs(conn, day, entity, [account], now, applying)
    return entity_run(conn, started[account_id], day, entity, options)


def prepare_run(
    run: EntityRun,
    options: SyncOptions,
    previous: Applying | None,
    results: list[RunResult],
) -> None:
    """Read, decode, plan and stage the run's input (staging committed). The input is read
    while ``previous`` applies. The plan waits for it if it reads what that apply stores
    (:data:`PLAN_READS`); otherwise the run plans and stages beside it, and waits before its
    own apply. On failure the run is closed, and a failure of ``previous`` is raised first."""
    try:
        waits = plan_waits_for(run.entity, previous)
        with tempfile.TemporaryDirectory(prefix="etl-batches-", dir=options.spill_dir) as spill:
            try:
                check_day_order(run, options.force)
                with run.watch.stage("list", "list files"):
                    inputs = list_inputs(options.data_dir, run.day, ENTITY_KINDS[run.entity])
                hooks.reached("decode", run.entity)
                decoded = decode_entity(run, inputs, Path(spill), options)
                record_files(run)
                if not waits:
                    plan_and_stage(run, decoded, inputs)
            finally:
                wait_for_previous(run, previous, results)
            if waits:
                plan_and_stage(run, decoded, inputs)
    except BaseException as error:
        if previous is not None and error is previous.error:
            how = "was refused" if isinstance(error, RefusedError) else "failed"
            message = f"not applied: the {previous.run.entity} step of this run {how}"
            close_failed_run(run, EtlError(message))
        else:
            close_failed_run(run, error)
        raise


def plan_and_stage(
    run: EntityRun, decoded: dict[str, Decoded], inputs: dict[str, Sequence[InputFile]]
) -> None:
    """Plan the decoded records, and stage the plan's tables and bad records in one committed
    transaction."""
    with run.watch.stage("plan"):
        plan = plan_entity(run.conn, run.account_id, run.entity, decoded)
    tables = staged_tables(run, plan, inputs)
    with run.watch.stage("stage", "stage rows"):
        stage_tables(
            run.conn, run.account_id, run.entity, tables, on_rows=run.watch.progress.advance
        )
        hooks.reached("stage", run.entity)
        db.commit(run.conn, "staging")


def staged_tables(
    run: EntityRun, plan: Plan, inputs: dict[str, Sequence[InputFile]]
) -> dict[str, Table]:
    """The tables the run stages: the plan's, and its bad records with their text read again
    from their files."""
    with run.watch.stage("plan", "read bad records' text"):
        wanted = [(run.account_id, run.run_id, error_files(plan, inputs))]
        hashes = run_file_hashes(run.conn, wanted)[run.run_id]
        return with_bad_records(plan, inputs, hashes)


def list_inputs(
    data_dir: Path, day: str, kinds: tuple[RecordKind, ...]
) -> dict[str, Sequence[InputFile]]:
    """Every input file of the entity, by record kind, unread; all folders are checked first."""
    return {k.name: source.list_files(data_dir, day, k.folder) for k in kinds}


def decode_entity(
    run: EntityRun, inputs: dict[str, Sequence[InputFile]], spill: Path, options: SyncOptions
) -> dict[str, Decoded]:
    """Decode the run's files (stage "decode", reading included), by record kind, each file
    added to the run's ledger (see :func:`record_files`). Decoded batches are spilled to files
    in the folder ``spill``, which must outlive staging; their names start with the account's
    id, so that the runs of a chunk share one folder."""

    def on_file(digest: FileDigest) -> None:
        run.ledger.add(digest)
        run.watch.progress.advance()

    decoded = {}
    for kind in ENTITY_KINDS[run.entity]:
        files = inputs[kind.name]
        with run.watch.stage("decode", f"decode {kind.folder} files", len(files)):
            decoded[kind.name] = decode_files(
                kind,
                files,
                on_file=on_file,
                spill=spill / f"{run.account_id}-{kind.name}.arrow",
                batch_values=options.batch_values,
            )
    return decoded


def plan_entity(
    conn: db.Connection, account_id: int, entity: str, decoded: dict[str, Decoded]
) -> Plan:
    """The entity's planned rows, checked against the ids the account stores now."""
    return plan_day(entity, account_days(conn, entity, {account_id: decoded})[account_id])


def account_days(
    conn: db.Connection, entity: str, decoded: dict[int, dict[str, Decoded]]
) -> dict[int, AccountDay]:
    """Each account's decoded records (``decoded``: by account id), with the ids the account
    stores that the entity's plan checks them against, read for all the accounts at once."""
    ids = list(decoded)
    if entity == "agents":
        return {a: AccountDay(records) for a, records in decoded.items()}
    agents = db.by_account(db.fetch_table(conn, "known_agent_ids", (ids,)), ids)
    if entity == "roles":
        roles = db.by_account(db.fetch_table(conn, "known_role_ids", (ids,)), ids)
        db.commit(conn)
        return {
            a: AccountDay(records, first_column(agents[a]), known_roles=first_column(roles[a]))
            for a, records in decoded.items()
        }
    groups = db.by_account(db.fetch_table(conn, "stored_groups", (ids,)), ids)
    db.commit(conn)
    return {
        a: AccountDay(records, first_column(agents[a]), stored_groups=groups[a])
        for a, records in decoded.items()
    }


def first_column(table: pa.Table) -> pa.Array:
    return table.column(0).combine_chunks()
