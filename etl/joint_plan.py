"""Several small accounts' days of an entity planned as one, and the plan split back.

For a small account the fixed cost of a plan (a hundred Polars queries an entity) is the whole
cost. Upstream ids are platform-wide, so the ids one account's day touches -- its records' ids,
the ids its mapping arrays and parents name, the ids it stores -- are apart from every other
account's. For accounts whose ids are pairwise apart, one plan of their records put together,
checked against the ids they store put together, is each account's own plan side by side: a
duplicate, a known or unknown id, a held id, a cycle can only involve one account's ids. An
account whose ids meet another's is planned alone. Each row of the plan is placed with its
account by file (each account's file names prefixed while planned) or by id; a table is staged
for the accounts at once, and split into each account's own only where one is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl import log
from etl.batches import JointTable, Records, Table
from etl.decode import Decoded
from etl.plan import AccountDay, Plan, plan_day

ID_COLUMNS = ("agent_id", "group_id", "record_id")  # how a row without a file names its account


def plans_of(entity: str, days: list[AccountDay]) -> list[Plan | Exception]:
    """Each day's plan, in order: those whose ids are apart planned as one. A day whose plan
    fails (a bug) gets its exception instead, and the others their plans."""
    ids = [day_ids(day) for day in days]
    together, alone = apart(ids)
    log.get_logger().debug("chunk_planned", entity=entity, together=len(together), alone=len(alone))
    if len(together) > 1:
        try:
            joint = plan_day(entity, joined([days[n] for n in together]))
            owners = owner_frame([ids[n] for n in together])
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


@dataclass(frozen=True)
class DayIds:
    """The ids a day defines (its records' ids, quarantined ones too, and the ids it stores) and
    the ids it touches (those, and the ids it names: mapping arrays' elements, parents), each
    without repeats."""

    defined: pa.Array
    touched: pa.Array


def day_ids(day: AccountDay) -> DayIds:
    """The ids the day defines and touches, as Arrow arrays: a fleet's days are many, and their
    ids are checked against each other's in Arrow, not in Python sets."""
    defined: list[pa.Array] = []
    named: list[pa.Array] = []
    for decoded in day.decoded.values():
        for batch in decoded.records.arrow_batches():
            defined.append(batch.column(0))
            for field, column in zip(batch.schema, batch.columns, strict=True):
                if field.name == "parent_group_id":
                    named.append(column)
                elif pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
                    named.append(pc.list_flatten(column))
        quarantined = [e.record_id for e in decoded.errors if e.record_id is not None]
        defined.append(pa.array(quarantined, pa.int64()))
    for known in (day.known_agents, day.known_roles):
        if known is not None:
            defined.append(known)
    if day.stored_groups is not None:
        defined += day.stored_groups.column("group_id").chunks
        named += day.stored_groups.column("parent_group_id").chunks
    own = distinct_ids(defined)
    return DayIds(own, distinct_ids([own, *named]))


def distinct_ids(parts: list[pa.Array]) -> pa.Array:
    ids = pa.chunked_array([part.cast(pa.int64()) for part in parts], pa.int64())
    return pc.drop_null(pc.unique(ids))


def apart(ids: list[DayIds]) -> tuple[list[int], list[int]]:
    """(the days planned together, the days planned alone). A day joins the others when no id
    it defines is touched by another, and it touches no id another defines: ids that only
    name something unknown may be shared, as each day reports them alike. The days of a fleet
    are apart (upstream ids are platform-wide): that is checked at once, and only days that
    meet are taken in order, one at a time."""
    if not meet(ids):
        return list(range(len(ids))), []
    defined_seen: set[int] = set()
    touched_seen: set[int] = set()
    together, alone = [], []
    for n, day in enumerate(ids):
        own, touched = set(day.defined.to_pylist()), set(day.touched.to_pylist())
        if own.isdisjoint(touched_seen) and defined_seen.isdisjoint(touched):
            defined_seen |= own
            touched_seen |= touched
            together.append(n)
        else:
            alone.append(n)
    return together, alone


def meet(ids: list[DayIds]) -> bool:
    """Whether an id one day defines is touched by another."""
    owners = owner_table(ids)
    touched = pa.chunked_array([day.touched for day in ids], pa.int64())
    places = pa.chunked_array([places_of(day.touched, n) for n, day in enumerate(ids)], pa.int32())
    owner = pc.take(owners["place"], pc.index_in(touched, value_set=owners["id"]))
    return pc.any(pc.not_equal(owner, places)).as_py() is True


def places_of(ids: pa.Array, place: int) -> pa.Array:
    return pa.repeat(pa.scalar(place, pa.int32()), len(ids))


def owner_table(ids: list[DayIds]) -> pa.Table:
    """id -> the place of the day that defines it (``ids``: each day's, in order)."""
    return pa.table(
        {
            "id": pa.chunked_array([day.defined for day in ids], pa.int64()),
            "place": pa.chunked_array(
                [places_of(day.defined, n) for n, day in enumerate(ids)], pa.int32()
            ),
        }
    )


def owner_frame(ids: list[DayIds]) -> pl.DataFrame:
    frame = pl.from_arrow(owner_table(ids))
    assert isinstance(frame, pl.DataFrame)
    return frame


def prefix(n: int) -> str:
    return f"\x00{n}\x00"


PREFIXED = r"^\x00(\d+)\x00"


def joined(days: list[AccountDay]) -> AccountDay:
    """The days as one: records in one batch, ordinals after one another, file names prefixed
    with the day's place; the stored ids together."""
    decoded = {}
    for kind in days[0].decoded:
        schema = days[0].decoded[kind].records.schema
        batches, errors, offset = [], [], 0
        for n, day in enumerate(days):
            one = day.decoded[kind]
            rows = 0
            for batch in one.records.arrow_batches():
                batches.append(placed_batch(batch, n, offset))
                rows += batch.num_rows
            offset += rows  # a day's ordinals run 0.. over all its batches: the next day's after
            errors += [replace(e, source_file=prefix(n) + e.source_file) for e in one.errors]
        frame = pl.from_arrow(pa.Table.from_batches(batches, schema))
        assert isinstance(frame, pl.DataFrame)
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


def placed_batch(batch: pa.RecordBatch, place: int, offset: int) -> pa.RecordBatch:
    """The day's batch with its ordinals moved on by ``offset`` and its file names prefixed."""
    columns = dict(zip(batch.schema.names, batch.columns, strict=True))
    columns["ordinal"] = pc.add(columns["ordinal"], offset)
    columns["source_file"] = pc.binary_join_element_wise(prefix(place), columns["source_file"], "")
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=batch.schema)


def together_arrays(arrays: list[pa.Array | None]) -> pa.Array | None:
    present = [a for a in arrays if a is not None]
    return pa.concat_arrays(present) if present else None


def split(plan: Plan, count: int, owners: pl.DataFrame) -> list[Plan]:
    """The joint plan's tables and errors, back to each day's own, in order: each table a share
    of the joint one (split off only if asked for), the errors split at once."""
    tables: list[dict[str, Table]] = [{} for _ in range(count)]
    for name, table in plan.tables.items():
        joint = JointTable(with_place(table.frame(), owners), count)
        for n in range(count):
            tables[n][name] = Table.share_of(joint, n)
    errors = by_place(plan.errors, count, owners)
    return [Plan(plan.entity, tables[n], errors[n]) for n in range(count)]


def by_place(frame: pl.DataFrame, count: int, owners: pl.DataFrame) -> list[pl.DataFrame]:
    """``frame``'s rows by the place of their day, file names unprefixed."""
    joint = JointTable(with_place(frame, owners), count)
    return [joint.part(n) for n in range(count)]


def with_place(frame: pl.DataFrame, owners: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the place of each row's day (column ``place``), file names unprefixed:
    by its file's prefix, or else by the day that defines its id."""
    if "source_file" in frame.columns:
        placed = frame.with_columns(
            place=pl.col("source_file").str.extract(PREFIXED).cast(pl.Int32),
            source_file=pl.col("source_file").str.replace(PREFIXED, ""),
        )
        if "error_message" in frame.columns:  # a duplicate's message names the winner's file
            placed = placed.with_columns(
                pl.col("error_message").str.replace_all(r"\x00\d+\x00", "")
            )
        return placed
    column = next(c for c in ID_COLUMNS if c in frame.columns)
    return frame.join(owners, left_on=column, right_on="id", how="left", maintain_order="left")
