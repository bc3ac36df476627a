"""A chunk: several small accounts of a fleet taken through each entity together.

For a small account the fixed cost of a plan (a hundred Polars queries an entity) is the whole
cost: the members' plans are made as one where their ids are apart (:mod:`etl.joint_plan`).
Everything else stays each account's own: its lock, its ledger rows, its decode (a bad file
fails that account only), its staging, its apply in a transaction of its own, its guards.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from etl import db, log
from etl.batches import Table
from etl.errors import EtlError
from etl.joint_plan import plans_of
from etl.plan import AccountDay, Plan
from etl.source import InputFile
from etl.stage import stage_tables, stage_together
from etl.sync import (
    ENTITY_KINDS,
    Applying,
    EntityRun,
    ReadAhead,
    RunResult,
    SyncOptions,
    account_days,
    begin_run,
    check_day_order,
    close_failed_run,
    decode_entity,
    list_inputs,
    record_files,
    settle,
    staged_tables,
)


@dataclass
class Member:
    """One account of a chunk: its id, its options, what it applied, and how it failed."""

    key: str
    account_id: int
    options: SyncOptions
    results: list[RunResult] = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class Prepared:
    """A member's entity run, read and decoded, waiting for its plan."""

    member: Member
    run: EntityRun
    inputs: dict[str, Sequence[InputFile]]
    day: AccountDay


def sync_chunk(
    conn: db.Connection, members: list[Member], day: str, entities: tuple[str, ...]
) -> None:
    """Sync the day's entities of every member, entity by entity: each member's run of an
    entity is read, decoded, staged and applied as its own sync would, its plan made with the
    other members' where their ids are apart and its rows staged with theirs. A member that
    fails or is refused is left out of the entities after (its ``error`` says why); Ctrl-C
    ends the runs under way and is raised."""
    now = datetime.now(UTC)
    for entity in entities:
        sync_entity(conn, members, day, entity, now)


def sync_entity(
    conn: db.Connection, members: list[Member], day: str, entity: str, now: datetime
) -> None:
    """One entity of the day for every member not failed yet."""
    pending: list[Prepared] = []  # runs started and not yet ended
    spill_dir = members[0].options.spill_dir if members else None  # --spill-dir, shared
    with tempfile.TemporaryDirectory(prefix="etl-chunk-", dir=spill_dir) as spill:
        try:
            for member in members:
                if member.error is None:
                    ready = prepare(conn, member, day, entity, now, Path(spill))
                    if ready is not None:
                        pending.append(ready)
            with shared_by(pending, "plan"):
                plans = plans_of(entity, [p.day for p in pending])
            staged = []
            for ready, plan in zip(pending, plans, strict=True):
                rows = tables(ready, plan)
                if rows is not None:
                    staged.append((ready, rows))
            pending = [ready for ready, _ in staged]
            stage_all(conn, entity, staged)
            while pending:
                if pending[0].member.error is None:
                    apply(pending[0])
                pending.pop(0)
        except BaseException as error:  # Ctrl-C, or a bug: the runs under way end too
            for ready in pending:
                if ready.member.error is None:
                    fail(ready.member, ready.run, error, reraise=False)
            if not isinstance(error, Exception):
                raise
            log.get_logger().exception("chunk_failed", entity=entity)


@contextlib.contextmanager
def shared_by(pending: list[Prepared], stage: str) -> Iterator[None]:
    """Time what is inside and add an equal share of it to each pending run's ``stage``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        share = (time.perf_counter() - started) / max(1, len(pending))
        for ready in pending:
            seconds = ready.run.watch.seconds
            seconds[stage] = round(seconds.get(stage, 0.0) + share, 4)


def prepare(
    conn: db.Connection, member: Member, day: str, entity: str, now: datetime, spill: Path
) -> Prepared | None:
    """The member's run of the entity started, its input listed, decoded and the ids it stores
    read; None if that failed (the run is closed, the member's error set)."""
    with log.bound(account=member.key):
        try:
            run = begin_run(conn, member.account_id, day, entity, member.options, now, None)
        except EtlError as error:
            member.error = error
            return None
        try:
            check_day_order(run, member.options.force)
            with run.watch.stage("list", "list files"):
                inputs = list_inputs(member.options.data_dir, day, ENTITY_KINDS[entity])
            folder = spill / str(member.account_id)
            folder.mkdir()
            nothing_ahead = ReadAhead(day, (), member.options)
            decoded = decode_entity(
                run, inputs, folder, nothing_ahead, member.options, split_ok=False
            )
            record_files(run)
            with run.watch.stage("plan"):
                days = account_days(conn, entity, {member.account_id: decoded})
        except BaseException as error:
            fail(member, run, error)
            return None
        return Prepared(member, run, inputs, days[member.account_id])


def tables(ready: Prepared, plan: Plan | Exception) -> dict[str, Table] | None:
    """The tables the member's run stages (its bad records' text read again); None if its
    plan or that failed (the run is closed, the member's error set)."""
    with log.bound(account=ready.member.key):
        if isinstance(plan, Exception):
            fail(ready.member, ready.run, plan)
            return None
        try:
            return staged_tables(ready.run, plan, ready.inputs)
        except BaseException as error:
            fail(ready.member, ready.run, error)
            return None


def stage_all(
    conn: db.Connection, entity: str, staged: list[tuple[Prepared, dict[str, Table]]]
) -> None:
    """Stage every member's tables with one COPY per table, committed; should that fail, each
    member's on its own, so that one member's trouble stays its own."""
    try:
        with shared_by([ready for ready, _ in staged], "stage"):
            stage_together(conn, entity, [(r.member.account_id, rows) for r, rows in staged])
            db.commit(conn, "staging")
        return
    except Exception:
        with contextlib.suppress(EtlError):
            db.rollback(conn)
    for ready, rows in staged:
        with log.bound(account=ready.member.key):
            try:
                with ready.run.watch.stage("stage", "stage rows"):
                    stage_tables(conn, ready.member.account_id, entity, rows)
                    db.commit(conn, "staging")
            except BaseException as error:
                fail(ready.member, ready.run, error)


def apply(ready: Prepared) -> None:
    """Apply the member's staged run in a transaction of its own; on failure the run is closed
    and the member's error set."""
    member = ready.member
    with log.bound(account=member.key):
        applying = Applying(ready.run, member.options.allow_mass_removal, background=False)
        try:
            settle(applying, member.results)  # closes a failed run itself
        except BaseException as error:
            member.error = error
            if isinstance(error, KeyboardInterrupt):
                raise


def fail(member: Member, run: EntityRun, error: BaseException, *, reraise: bool = True) -> None:
    """End the member's run as failed (or interrupted) and set its error; Ctrl-C goes on up."""
    close_failed_run(run, error)
    member.error = error
    if reraise and isinstance(error, KeyboardInterrupt):
        raise error
