"""The group hierarchy of a day, as Polars frames: which groups sit on a parent cycle.

Each group has at most one parent, so the hierarchy is a functional graph: following parents from
any group either ends (at a root, or at a parent outside the hierarchy) or runs into exactly one
cycle. ``cycles`` finds the cycles by pointer doubling: ``log2(n)`` joins of ``n`` rows, whatever
the depth, and it terminates on any input (no walk that could loop).
"""

from __future__ import annotations

import math

import polars as pl

CYCLE_IDS_SHOWN = 10  # a cycle's ids listed in its report, smallest first


def cycles(edges: pl.DataFrame) -> pl.DataFrame:
    """(group_id, cycle_size, cycle_ids) for every group on a parent cycle; ``cycle_ids`` holds
    the cycle's ``CYCLE_IDS_SHOWN`` smallest ids in order, so a self-parent is a cycle of one.

    ``edges`` holds (group_id, parent_group_id) for the groups of the hierarchy, one row each;
    a parent that is null or not among them ends the chain."""
    # hop: (group_id, to, low) = the group 2^k parents up, and the smallest id passed on the way
    hop = edges.join(edges.select(parent_group_id="group_id"), on="parent_group_id", how="semi")
    hop = hop.select("group_id", to="parent_group_id", low="group_id")
    # After s >= n steps every group still in hop has run into its cycle, and from a group on a
    # cycle of length L <= s the smallest id passed is the cycle's smallest id.
    for _ in range(math.ceil(math.log2(max(edges.height, 2)))):
        hop = hop.join(
            hop.select(to="group_id", next_to="to", next_low="low"), on="to", how="inner"
        ).select("group_id", to="next_to", low=pl.min_horizontal("low", "next_low"))
    on_cycle = hop.join(hop.select(group_id="to").unique(), on="group_id", how="semi")
    per_cycle = on_cycle.group_by("low").agg(  # a bounded list: a long cycle stays linear
        cycle_size=pl.len(), cycle_ids=pl.col("group_id").sort().head(CYCLE_IDS_SHOWN)
    )
    return (
        on_cycle.join(per_cycle, on="low")
        .select("group_id", "cycle_size", "cycle_ids")
        .sort("group_id")
    )


def cycle_message(path: pl.Expr, group_id: pl.Expr, size: pl.Expr, shown: pl.Expr) -> pl.Expr:
    """``$[i].parent_group_id: group 7 is on a parent cycle of 3 groups: 5, 7, 9`` (or: is its
    own parent); ``shown`` holds the cycle's first ids, ``size`` its length."""
    listed = shown.cast(pl.List(pl.String)).list.join(", ")
    listed = pl.when(size > shown.list.len()).then(listed + ", ...").otherwise(listed)
    return (
        pl.when(size == 1)
        .then(pl.format("{}.parent_group_id: group {} is its own parent", path, group_id))
        .otherwise(
            pl.format(
                "{}.parent_group_id: group {} is on a parent cycle of {} groups: {}",
                path,
                group_id,
                size,
                listed,
            )
        )
    )
