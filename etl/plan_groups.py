"""The groups step's plan: groups, their known members, and the hierarchy's ORPHAN_PARENT and
HIERARCHY_CYCLE reports."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from etl import hierarchy
from etl.batches import ENGINE, Table
from etl.decode import Decoded
from etl.plan_parts import (
    POSITION,
    Plan,
    distinct_elements,
    element_errors,
    errors_frame,
    explode_mapping,
    held_ids,
    keeping,
    known_frame,
    locate,
    reject_nul,
    resolve_duplicates,
    sorted_errors,
    unknown,
)
from etl.records import GROUP


def plan_groups(groups: Decoded, known_agents: pa.Array, stored_groups: pa.Table) -> Plan:
    """Groups and their memberships, plus ORPHAN_PARENT and HIERARCHY_CYCLE reports.

    ``known_agents`` are the agent ids stored after the day's agents step; ``stored_groups`` the
    stored (group_id, parent_group_id, present) rows, which held groups keep."""
    records = groups.records
    nul_ordinals, nul_errors = reject_nul(records, GROUP)
    losing, duplicate_errors = resolve_duplicates(records, GROUP, nul_ordinals)
    winners = keeping(nul_ordinals, losing)
    record_errors = pl.concat([errors_frame(groups.errors), nul_errors])
    held = held_ids(record_errors, records, winners, "groups", GROUP)

    agents = known_frame("agent_id", known_agents)

    def members(batch: pl.LazyFrame) -> pl.LazyFrame:
        return explode_mapping(winners(batch), "group_id", "agent_ids", "agent_id")

    strangers = records.gather(
        lambda batch: locate(
            unknown(members(batch), agents, "agent_id"), winners(batch), "agent_ids", "agent_id"
        )
    )
    stranger_keys = strangers.lazy().select("ordinal", "agent_id")

    def known_members(batch: pl.LazyFrame) -> pl.LazyFrame:
        if strangers.is_empty():  # the usual day: the known-id check ran once, in the pass above
            return members(batch).select("group_id", "agent_id")
        kept = members(batch).join(
            stranger_keys, on=["ordinal", "agent_id"], how="anti", maintain_order="left"
        )
        return kept.select("group_id", "agent_id")

    stg_groups = Table(
        (
            records,
            lambda batch: winners(batch).select(
                "group_id",
                "name",
                "description",
                "parent_group_id",
                "created_at",
                "updated_at",
                "source_file",
                "record_index",
            ),
        )
    )
    hierarchy_rows = records.gather(
        lambda batch: winners(batch).select("group_id", "parent_group_id", *POSITION)
    )
    errors = sorted_errors(
        [
            record_errors,
            duplicate_errors,
            element_errors(strangers.lazy(), GROUP, "INVALID_AGENT_ID", "agent_id", "agent"),
            hierarchy_reports(hierarchy_rows, held, stored_groups),
        ]
    )

    def member_lists(batch: pl.LazyFrame) -> pl.LazyFrame:
        """Each group's known members as one list (groups without any staged none)."""
        if strangers.is_empty():  # no element to drop: the lists need no exploding
            lists = winners(batch).select("group_id", distinct_elements("agent_ids"))
        else:
            lists = (
                known_members(batch)
                .group_by("group_id", maintain_order=True)
                .agg(agent_ids="agent_id")
            )
        return lists.filter(pl.col("agent_ids").list.len() > 0)

    tables = {
        "stg_groups": stg_groups,
        "stg_group_members": Table((records, member_lists)),
        "stg_held_ids": Table(held),
    }
    return Plan("groups", tables, errors)


def hierarchy_reports(
    winners: pl.DataFrame, held: pl.DataFrame, stored_groups: pa.Table
) -> pl.LazyFrame:
    """ORPHAN_PARENT for a group whose parent is no known group (no stored row, not in today's
    snapshot) and HIERARCHY_CYCLE for each group on a parent cycle of the day's hierarchy: the
    groups present after the day (today's valid ones, and held ones that were present) with the
    parents they will have. Only groups with a valid record today are reported.

    ``winners`` are today's valid groups: group_id, parent_group_id and their position."""
    stored = pl.from_arrow(stored_groups)
    assert isinstance(stored, pl.DataFrame)
    kept = (
        stored.lazy()
        .filter("present")
        .join(held.lazy().select(group_id="record_id"), on="group_id", how="semi")
        .select("group_id", "parent_group_id")
    )
    today = winners.lazy()
    edges = pl.concat([today.select("group_id", "parent_group_id"), kept])
    known = pl.concat([today.select("group_id"), stored.lazy().select("group_id")]).unique()
    on_cycle = hierarchy.cycles(edges.collect(engine=ENGINE)).lazy()
    orphans = today.filter(pl.col("parent_group_id").is_not_null()).join(
        known, left_on="parent_group_id", right_on="group_id", how="anti"
    )
    cycle_members = today.join(on_cycle, on="group_id")
    return pl.concat(
        [
            group_report(
                orphans,
                "ORPHAN_PARENT",
                pl.format(
                    "{}.parent_group_id: parent group {} is not a known group",
                    "record_path",
                    "parent_group_id",
                ),
            ),
            group_report(
                cycle_members,
                "HIERARCHY_CYCLE",
                hierarchy.cycle_message(
                    pl.col("record_path"),
                    pl.col("group_id"),
                    pl.col("cycle_size"),
                    pl.col("cycle_ids"),
                ),
            ),
        ]
    )


def group_report(groups: pl.LazyFrame, error_type: str, message: pl.Expr) -> pl.LazyFrame:
    return groups.select(
        record_kind=pl.lit(GROUP.name),
        error_type=pl.lit(error_type),
        field=pl.lit("parent_group_id"),
        error_message=message,
        record_id="group_id",
        source_file="source_file",
        record_index="record_index",
    )
