"""Several small accounts' days of an entity planned as one, and the plan split back.

For a small account the fixed cost of a plan (a hundred Polars queries an entity) is the whole
cost. Upstream ids are platform-wide, so the ids one account's day touches -- its records' ids,
the ids its mapping arrays and parents name, the ids it stores -- are apart from every other
account's. For accounts whose ids are pairwise apart, one plan of their records put together,
checked against the ids they store put together, is each account's own plan side by side: a
duplicate, a known or unknown id, a held id, a cycle can only involve one account's ids. An
account whose ids meet another's is planned alone. The plan's rows are split back by account:
by file (each account's file names prefixed while planned) or by id.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pyarrow as pa

from etl import log
from etl.batches import Records, Table
from etl.decode import Decoded
from etl.plan import AccountDay, Plan, plan_day

ID_COLUMNS = ("agent_id", "group_id", "record_id")  # how a row without a file names its account


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
