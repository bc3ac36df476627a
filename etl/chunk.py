"""A chunk: several small accounts of a fleet taken through each entity together.

For a small account the fixed cost of a plan (a hundred Polars queries an entity) is the whole
cost. Upstream ids are platform-wide, so the ids one account's day touches -- its records' ids,
the ids its mapping arrays and parents name, the ids it stores -- are apart from every other
account's. For accounts whose ids are pairwise apart, one plan of their records put together,
checked against the ids they store put together, is each account's own plan side by side: a
duplicate, a known or unknown id, a held id, a cycle can only involve one account's ids. An
account whose ids meet another's in the chunk is planned alone. The plan's rows are split back
by account: by file (each account's file names prefixed while planned) or by id.

Everything else stays each account's own: its lock, its ledger rows, its decode (a bad file
fails that account only), its staging, its apply in a transaction of its own, its guards.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from etl import db, log
from etl.batches import Records, Table
from etl.decode import Decoded
from etl.errors import EtlError
from etl.plan import AccountDay, Plan, plan_day
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

ID_COLUMNS = ("agent_id", "group_id", "record_id")  # how a row without a file names its account


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


def plans_of(entity: str, days: list[AccountDay]) -> list[Plan | Exception]:
    """Each day's plan, in order: those whose ids are apart planned as one. A day whose plan
    fails (a bug) gets its exception instead, and the others their plans."""
    defined = [defined_ids(day) for day in days]
    together, alone = apart(days, defined)
    log.get_logger().debug("chunk_planned", entity=entity, together=len(together), alone=len(alone))
    if len(together) > 1:
        try:
            joint = plan_day(entity, joined([days[n] for n in together]))
            owners = owner_frame([defined[n] for n in together])
            parts = split(joint, len(together), owners)
            plans: dict[int, Plan | Exception] = dict(zip(together, parts, strict=True))
        except Exception:  # a bug: each day still gets its plan, alone
            log.get_logger().exception("joint_plan_failed", entity=entity)
            alone += together
            plans = {}
    else:
        alone += together
        plans = {}
    for n in alone:
        plans[n] = plan_alone(entity, days[n])
    return [plans[n] for n in range(len(days))]


def plan_alone(entity: str, day: AccountDay) -> Plan | Exception:
    try:
        return plan_day(entity, day)
    except Exception as error:  # a bug: this day fails, not the chunk
        return error


def apart(days: list[AccountDay], defined: list[set[int]]) -> tuple[list[int], list[int]]:
    """(the days planned together, the days planned alone). A day joins the others when no id
    it defines (its records' and stored ids) is touched by another, and it touches no id
    another defines: ids that only name something unknown may be shared, as each day reports
    them alike."""
    defined_seen: set[int] = set()
    touched_seen: set[int] = set()
    together, alone = [], []
    for n, (day, own) in enumerate(zip(days, defined, strict=True)):
        named = named_ids(day)
        if own.isdisjoint(touched_seen) and defined_seen.isdisjoint(named | own):
            defined_seen |= own
            touched_seen |= own | named
            together.append(n)
        else:
            alone.append(n)
    return together, alone


def defined_ids(day: AccountDay) -> set[int]:
    """The ids the day's records are about (quarantined ones too) and the ids it stores."""
    ids: set[int] = set()
    for decoded in day.decoded.values():
        for frame in decoded.records.batches():
            ids.update(frame.get_column(frame.columns[0]).drop_nulls().to_list())
        ids.update(e.record_id for e in decoded.errors if e.record_id is not None)
    for known in (day.known_agents, day.known_roles):
        if known is not None:
            ids.update(known.drop_null().to_pylist())
    if day.stored_groups is not None:
        ids.update(day.stored_groups.column("group_id").drop_null().to_pylist())
    return ids


def named_ids(day: AccountDay) -> set[int]:
    """The ids the day's records and stored groups name: mapping arrays' elements, parents."""
    ids: set[int] = set()
    for decoded in day.decoded.values():
        for frame in decoded.records.batches():
            for name, dtype in frame.schema.items():
                if name == "parent_group_id":
                    ids.update(frame.get_column(name).drop_nulls().to_list())
                elif dtype == pl.List(pl.Int64):
                    ids.update(frame.get_column(name).explode().drop_nulls().to_list())
    if day.stored_groups is not None:
        ids.update(day.stored_groups.column("parent_group_id").drop_null().to_pylist())
    return ids


def prefix(n: int) -> str:
    return f"\x00{n}\x00"


PREFIXED = r"^\x00(\d+)\x00"


def joined(days: list[AccountDay]) -> AccountDay:
    """The days as one: records in one batch, ordinals after one another, file names prefixed
    with the day's place; the stored ids together."""
    decoded = {}
    for kind in days[0].decoded:
        frames, errors, offset = [], [], 0
        schema = days[0].decoded[kind].records.schema
        for n, day in enumerate(days):
            one = day.decoded[kind]
            for frame in one.records.batches():
                frames.append(
                    frame.with_columns(
                        ordinal=pl.col("ordinal") + offset,
                        source_file=pl.lit(prefix(n)) + pl.col("source_file"),
                    )
                )
                offset += frame.height
            errors += [replace(e, source_file=prefix(n) + e.source_file) for e in one.errors]
        frame = pl.concat(frames) if frames else days[0].decoded[kind].records.empty()
        decoded[kind] = Decoded(records=Records.of(schema, frame), errors=errors)
    return AccountDay(
        decoded,
        known_agents=together_arrays([d.known_agents for d in days]),
        known_roles=together_arrays([d.known_roles for d in days]),
        stored_groups=(
            pa.concat_tables([d.stored_groups for d in days])
            if days[0].stored_groups is not None
            else None
        ),
    )


def together_arrays(arrays: list[pa.Array | None]) -> pa.Array | None:
    present = [a for a in arrays if a is not None]
    return pa.concat_arrays(present) if present else None


def owner_frame(defined: list[set[int]]) -> pl.DataFrame:
    """id -> the place of the day that defines it (``defined``: each day's ids, in order)."""
    ids = [i for own in defined for i in own]
    places = [n for n, own in enumerate(defined) for _ in own]
    return pl.DataFrame({"id": ids, "place": places}, schema={"id": pl.Int64, "place": pl.Int32})


def split(plan: Plan, count: int, owners: pl.DataFrame) -> list[Plan]:
    """The joint plan's tables and errors, back to each day's own, in order."""
    tables: list[dict[str, Table]] = [{} for _ in range(count)]
    for name, table in plan.tables.items():
        for n, frame in enumerate(by_place(table.frame(), count, owners)):
            tables[n][name] = Table(frame)
    errors = by_place(plan.errors, count, owners)
    return [Plan(plan.entity, tables[n], errors[n]) for n in range(count)]


def by_place(frame: pl.DataFrame, count: int, owners: pl.DataFrame) -> list[pl.DataFrame]:
    """``frame``'s rows by the place of their day, file names unprefixed."""
    if "source_file" in frame.columns:
        placed = frame.with_columns(
            place=pl.col("source_file").str.extract(PREFIXED).cast(pl.Int32),
            source_file=pl.col("source_file").str.replace(PREFIXED, ""),
        )
        if "error_message" in frame.columns:  # a duplicate's message names the winner's file
            placed = placed.with_columns(
                pl.col("error_message").str.replace_all(r"\x00\d+\x00", "")
            )
    else:
        column = next(c for c in ID_COLUMNS if c in frame.columns)
        placed = frame.join(
            owners, left_on=column, right_on="id", how="left", maintain_order="left"
        )
    parts = placed.partition_by("place", as_dict=True, include_key=False)
    return [parts.get((n,), placed.clear().drop("place")) for n in range(count)]
