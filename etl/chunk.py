"""A chunk: several small accounts of a fleet taken through each entity together.

For a small account the fixed costs are the whole cost: a plan's hundred Polars queries, and
a dozen statements and commits of the ledger an entity. The members' plans are made as one
where their ids are apart (:mod:`etl.joint_plan`), their rows staged with one COPY per table,
and the ledger's statements are the members' together: one starts every member's run (and
reads its sync time and the days applied), one records the files they read, one reads the ids
they store, one their bad records' file hashes, one records their seconds after the applies.

Everything else stays each account's own: its lock, its ledger rows, its decode (a bad file
fails that account only), its staging rows, its apply in a transaction of its own, its guards.
A statement of several members that fails is made again for each member on its own where one
member's data could be the cause (run starts, files, staging).
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
from etl.bad_records import error_files, with_bad_records
from etl.batches import Table
from etl.decode import Decoded
from etl.errors import EtlError
from etl.joint_plan import plans_of
from etl.ledger import FileLedger, run_file_hashes, start_runs
from etl.overlap import Applying
from etl.plan import Plan
from etl.run import (
    EntityRun,
    RunResult,
    SyncOptions,
    check_day_order,
    close_failed_run,
    entity_run,
    finish_runs,
)
from etl.source import InputFile
from etl.stage import stage_tables, stage_together
from etl.sync import ENTITY_KINDS, account_days, decode_entity, list_inputs


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
    """A member's entity run under way: its input, once listed, and its records, once decoded."""

    member: Member
    run: EntityRun
    inputs: dict[str, Sequence[InputFile]] = field(default_factory=dict)
    decoded: dict[str, Decoded] = field(default_factory=dict)


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
    live = [member for member in members if member.error is None]
    if not live:
        return
    pending: list[Prepared] = []  # runs started and not yet ended
    with tempfile.TemporaryDirectory(prefix="etl-chunk-", dir=live[0].options.spill_dir) as spill:
        try:
            pending = begin_runs(conn, live, day, entity, now)
            pending = [ready for ready in pending if read(ready, Path(spill))]
            record_files(conn, pending)
            pending = [ready for ready in pending if ready.member.error is None]
            with shared_by(pending, "plan"):
                decoded = {ready.run.account_id: ready.decoded for ready in pending}
                days = account_days(conn, entity, decoded)
                plans = plans_of(entity, [days[ready.run.account_id] for ready in pending])
            staged = tables(conn, pending, plans)
            pending = [ready for ready, _ in staged]
            stage_all(conn, entity, staged)
            applied: list[Prepared] = []
            try:
                while pending:
                    if pending[0].member.error is None and apply(pending[0]):
                        applied.append(pending[0])
                    pending.pop(0)
            finally:
                finish(conn, applied)
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


def begin_runs(
    conn: db.Connection, members: list[Member], day: str, entity: str, now: datetime
) -> list[Prepared]:
    """Every member's run of the entity started with one statement, committed; should that
    fail, each member's on its own (a member whose run cannot start gets the error)."""
    accounts = {m.account_id: (m.account_id, m.options.synced_at, m.options.force) for m in members}
    try:
        started = start_runs(conn, day, entity, list(accounts.values()), now)
    except Exception:
        with contextlib.suppress(EtlError):
            db.rollback(conn)
        started = {}
        for member in members:
            try:
                started |= start_runs(conn, day, entity, [accounts[member.account_id]], now)
            except EtlError as error:
                member.error = error
    return [
        Prepared(m, entity_run(conn, started[m.account_id], day, entity, m.options, account=m.key))
        for m in members
        if m.account_id in started
    ]


def read(ready: Prepared, spill: Path) -> bool:
    """The member's day order checked and its input listed and decoded (its batches under
    ``spill``); whether that went well (if not, the run is closed and the member's error
    set)."""
    member, run = ready.member, ready.run
    with log.bound(account=member.key):
        try:
            check_day_order(run, member.options.force)
            with run.watch.stage("list", "list files"):
                ready.inputs = list_inputs(
                    member.options.data_dir, run.day, ENTITY_KINDS[run.entity]
                )
            ready.decoded = decode_entity(run, ready.inputs, spill, member.options)
        except BaseException as error:
            fail(member, run, error)
            return False
    return True


def record_files(conn: db.Connection, pending: list[Prepared]) -> None:
    """The files every member's run read recorded with one COPY, committed; should that fail,
    each member's on its own (a member whose files cannot be recorded fails)."""
    try:
        FileLedger.flush_together(conn, [ready.run.ledger for ready in pending])
    except Exception:
        with contextlib.suppress(EtlError):
            db.rollback(conn)
        for ready in pending:
            with log.bound(account=ready.member.key):
                try:
                    ready.run.ledger.flush()
                except BaseException as error:
                    fail(ready.member, ready.run, error)
    for ready in pending:
        if ready.member.error is None:
            ready.run.log.debug("read", files=ready.run.ledger.count)


def tables(
    conn: db.Connection, pending: list[Prepared], plans: list[Plan | Exception]
) -> list[tuple[Prepared, dict[str, Table]]]:
    """Each member's tables to stage, its bad records' text read again (their files' hashes
    read for all members at once); a member whose plan or that failed is left out (its run
    closed, its error set)."""
    with shared_by(pending, "plan"):
        located = [placed(ready, plan) for ready, plan in zip(pending, plans, strict=True)]
        wanted = [
            (ready.run.account_id, ready.run.run_id, files)
            for ready, (_, files) in zip(pending, located, strict=True)
            if files is not None
        ]
        hashes = run_file_hashes(conn, wanted)
    staged = []
    for ready, (plan, _) in zip(pending, located, strict=True):
        rows = bad_records_of(ready, plan, hashes.get(ready.run.run_id, {}))
        if rows is not None:
            staged.append((ready, rows))
    return staged


def placed(
    ready: Prepared, plan: Plan | Exception
) -> tuple[Plan | Exception, dict[str, int] | None]:
    """The member's plan with the files of its error rows placed in its reading, or the error
    that placing them raised instead of the plan (the member alone then fails)."""
    if isinstance(plan, Exception):
        return plan, None
    try:
        return plan, error_files(plan, ready.inputs)
    except ValueError as error:
        return error, None


def bad_records_of(
    ready: Prepared, plan: Plan | Exception, hashes: dict[str, str]
) -> dict[str, Table] | None:
    """The member's tables to stage, its bad records' text read again; None if its plan or that
    failed (the run is closed, the member's error set)."""
    with log.bound(account=ready.member.key):
        if isinstance(plan, Exception):
            fail(ready.member, ready.run, plan)
            return None
        try:
            with ready.run.watch.stage("plan", "read bad records' text"):
                return with_bad_records(plan, ready.inputs, hashes)
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


def apply(ready: Prepared) -> bool:
    """Apply the member's staged run in a transaction of its own; whether it applied (if not,
    its run is closed and the member's error set; Ctrl-C goes on up)."""
    member = ready.member
    with log.bound(account=member.key):
        applying = Applying(ready.run, member.options.allow_mass_removal, background=False)
        if applying.error is not None:
            fail(member, ready.run, applying.error)
    return applying.error is None


def finish(conn: db.Connection, applied: list[Prepared]) -> None:
    """The applied runs' seconds recorded with one statement; each member's result added."""
    results = finish_runs(conn, [ready.run for ready in applied])
    for ready, result in zip(applied, results, strict=True):
        ready.member.results.append(result)


def fail(member: Member, run: EntityRun, error: BaseException, *, reraise: bool = True) -> None:
    """End the member's run as failed (or interrupted) and set its error; Ctrl-C goes on up."""
    close_failed_run(run, error)
    member.error = error
    if reraise and isinstance(error, KeyboardInterrupt):
        raise error
