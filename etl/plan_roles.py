"""The roles step's plan: roles, and the day's assignment snapshot from agent_details' role_ids
and roles' agent_ids, each pair checked against the known agents and roles."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from etl.batches import Table
from etl.decode import Decoded
from etl.plan_parts import (
    NO_ORDINALS,
    POSITION,
    Plan,
    among,
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
from etl.records import AGENT_DETAILS, ROLE


def plan_roles(
    roles: Decoded, details: Decoded, known_agents: pa.Array, known_roles: pa.Array
) -> Plan:
    """Roles, plus the day's assignment snapshot from agent_details and roles' agent_ids.

    ``known_agents`` / ``known_roles`` are the ids already stored; roles valid today count too.
    """
    role_records, detail_records = roles.records, details.records
    role_nul_ordinals, role_nul = reject_nul(role_records, ROLE)
    role_losing, role_dups = resolve_duplicates(role_records, ROLE, role_nul_ordinals)
    role_winners = keeping(role_nul_ordinals, role_losing)
    detail_losing, detail_dups = resolve_duplicates(detail_records, AGENT_DETAILS, NO_ORDINALS)
    detail_winners = keeping(detail_losing)
    role_errors = pl.concat([errors_frame(roles.errors), role_nul])
    detail_errors = errors_frame(details.errors)

    agents = known_frame("agent_id", known_agents)
    today = role_records.gather(lambda batch: role_winners(batch).select("role_id"))
    role_ids = pl.concat([pl.Series(known_roles, dtype=pl.Int64), today.get_column("role_id")])
    role_ids = role_ids.unique()
    is_role = among("role_id", role_ids)  # a few hundred ids: cheap to hash per batch
    role_frame = role_ids.to_frame("role_id").lazy()

    # An agent_details record whose own id is no known agent cannot hold assignments.
    detail_unknown = detail_records.gather(
        lambda batch: (
            detail_winners(batch)
            .join(agents, on="agent_id", how="anti", maintain_order="left")
            .select("ordinal", "agent_id", *POSITION, path=pl.col("record_path") + ".id")
        )
    )
    detail_known = keeping(detail_losing, detail_unknown.get_column("ordinal"))

    def from_details(batch: pl.LazyFrame) -> pl.LazyFrame:
        return explode_mapping(detail_known(batch), "agent_id", "role_ids", "role_id")

    def from_roles(batch: pl.LazyFrame) -> pl.LazyFrame:
        return explode_mapping(role_winners(batch), "role_id", "agent_ids", "agent_id")

    # Pairs from roles' agent_ids: as many as the roles pages hold, and those are few.
    role_pairs = role_records.gather(
        lambda batch: (
            from_roles(batch)
            .join(agents, on="agent_id", how="semi", maintain_order="left")
            .select("agent_id", "role_id")
        )
    )
    role_pairs_in_details = detail_records.gather(
        lambda batch: (
            from_details(batch)
            .filter(is_role)
            .join(role_pairs.lazy(), on=["agent_id", "role_id"], how="semi")
            .select("agent_id", "role_id")
        )
    )

    def detail_pairs(batch: pl.LazyFrame) -> pl.LazyFrame:
        pairs = from_details(batch).filter(is_role).select("agent_id", "role_id")
        if role_pairs_in_details.is_empty():
            return pairs.with_columns(from_details=pl.lit(True), from_role=pl.lit(False))
        marked = role_pairs_in_details.lazy().with_columns(from_role=pl.lit(True))
        kept_order = pairs.join(
            marked, on=["agent_id", "role_id"], how="left", maintain_order="left"
        )
        return kept_order.select(
            "agent_id",
            "role_id",
            from_details=pl.lit(True),
            from_role=pl.col("from_role").fill_null(False),
        )

    role_only_pairs = role_pairs.join(
        role_pairs_in_details, on=["agent_id", "role_id"], how="anti", maintain_order="left"
    ).select("agent_id", "role_id", from_details=pl.lit(False), from_role=pl.lit(True))
    stg_roles = Table(
        (
            role_records,
            lambda batch: role_winners(batch).select(
                "role_id",
                "name",
                "description",
                "is_default",
                "agent_type",
                "created_at",
                "updated_at",
                "source_file",
                "record_index",
            ),
        )
    )
    held = pl.concat(
        [
            held_ids(role_errors, role_records, role_winners, "roles", ROLE),
            held_ids(detail_errors, detail_records, detail_winners, "roles", AGENT_DETAILS),
        ]
    )
    errors = sorted_errors(
        [
            role_errors,
            detail_errors,
            role_dups,
            detail_dups,
            element_errors(
                detail_unknown.lazy(), AGENT_DETAILS, "INVALID_AGENT_ID", "agent_id", "agent"
            ),
            detail_records.gather(
                lambda batch: element_errors(
                    locate(
                        unknown(from_details(batch), role_frame, "role_id"),
                        detail_known(batch),
                        "role_ids",
                        "role_id",
                    ),
                    AGENT_DETAILS,
                    "INVALID_ROLE_ID",
                    "role_id",
                    "role",
                )
            ),
            role_records.gather(
                lambda batch: element_errors(
                    locate(
                        unknown(from_roles(batch), agents, "agent_id"),
                        role_winners(batch),
                        "agent_ids",
                        "agent_id",
                    ),
                    ROLE,
                    "INVALID_AGENT_ID",
                    "agent_id",
                    "agent",
                )
            ),
        ]
    )
    tables = {
        "stg_roles": stg_roles,
        "stg_agent_roles": Table((detail_records, detail_pairs), role_only_pairs),
        "stg_held_ids": Table(held),
    }
    return Plan("roles", tables, errors)
