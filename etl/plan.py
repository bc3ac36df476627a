"""Plan: decoded records -> the exact rows to stage, as Polars lazy plans.

Pure functions over frames: validate what msgspec cannot (NUL characters), resolve duplicate ids,
explode mapping arrays into pairs and check them against the known ids. Every rejected record or
element becomes an error row; nothing is dropped silently except repeats within one array.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from etl import hierarchy
from etl.decode import AGENT, AGENT_DETAILS, GROUP, ROLE, Decoded, RecordError, RecordKind

ERROR_SCHEMA = {
    "record_kind": pl.String,
    "error_type": pl.String,
    "field": pl.String,
    "error_message": pl.String,
    "record_id": pl.Int64,
    "source_file": pl.String,
    "record_index": pl.Int32,
}
POSITION = ["source_file", "record_index", "record_path"]


@dataclass(frozen=True)
class Plan:
    """What one entity's run stages: staging table -> rows, plus its error rows."""

    entity: str
    tables: dict[str, pl.DataFrame]
    errors: pl.DataFrame  # ERROR_SCHEMA; raw text is attached before staging


def errors_frame(errors: list[RecordError]) -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "record_kind": [e.record_kind for e in errors],
            "error_type": [e.error_type for e in errors],
            "field": [e.field for e in errors],
            "error_message": [e.message for e in errors],
            "record_id": [e.record_id for e in errors],
            "source_file": [e.source_file for e in errors],
            "record_index": [e.record_index for e in errors],
        },
        schema=ERROR_SCHEMA,
    )


def records_frame(decoded: Decoded) -> pl.LazyFrame:
    """The decoded records with ``ordinal``: their position in record order (files, then index)."""
    return decoded.records.lazy().with_row_index("ordinal")


def plan_agents(agents: Decoded) -> Plan:
    records, nul_errors = reject_nul(records_frame(agents), AGENT)
    winners, duplicate_errors = resolve_duplicates(records, AGENT, "agent_id")
    record_errors = pl.concat([errors_frame(agents.errors), nul_errors])
    held = held_ids(record_errors, winners, "agents", AGENT, "agent_id")
    stg_agents = winners.select(
        "agent_id",
        "name",
        "email",
        "deactivated",
        "contact_active",
        "created_at",
        "updated_at",
        "source_file",
        "record_index",
    )
    tables, errors = _collect(
        {"stg_agents": stg_agents, "stg_held_ids": held},
        [record_errors, duplicate_errors],
    )
    return Plan("agents", tables, errors)


def plan_roles(
    roles: Decoded, details: Decoded, known_agents: pa.Array, known_roles: pa.Array
) -> Plan:
    """Roles, plus the day's assignment snapshot from agent_details and roles' agent_ids.

    ``known_agents`` / ``known_roles`` are the ids already stored; roles valid today count too.
    """
    role_records, role_nul = reject_nul(records_frame(roles), ROLE)
    role_winners, role_dups = resolve_duplicates(role_records, ROLE, "role_id")
    detail_records = records_frame(details)
    detail_winners, detail_dups = resolve_duplicates(detail_records, AGENT_DETAILS, "agent_id")
    role_errors = pl.concat([errors_frame(roles.errors), role_nul])
    detail_errors = errors_frame(details.errors)

    # Known ids are checked with is_in: a semi or anti join of a million records against them
    # took 350 MB more on the streaming engine.
    is_agent = pl.col("agent_id").is_in(pl.Series(known_agents, dtype=pl.Int64))
    today = role_winners.select("role_id").collect().get_column("role_id")
    role_ids = pl.concat([pl.Series(known_roles, dtype=pl.Int64), today]).unique()
    is_role = pl.col("role_id").is_in(role_ids)

    # An agent_details record whose own id is no known agent cannot hold assignments.
    detail_unknown = detail_winners.filter(~is_agent)
    detail_known = detail_winners.filter(is_agent)
    from_details = explode_mapping(detail_known, "agent_id", "role_ids", "role_id")
    from_roles = explode_mapping(role_winners, "role_id", "agent_ids", "agent_id")
    unknown_roles = from_details.filter(~is_role)
    unknown_agents = from_roles.filter(~is_agent)

    pairs = pl.concat(
        [
            from_details.filter(is_role).select(
                "agent_id", "role_id", from_details=pl.lit(True), from_role=pl.lit(False)
            ),
            from_roles.filter(is_agent).select(
                "agent_id", "role_id", from_details=pl.lit(False), from_role=pl.lit(True)
            ),
        ]
    )
    stg_agent_roles = (
        pairs.group_by("agent_id", "role_id")
        .agg(pl.col("from_details").any(), pl.col("from_role").any())
        .sort("agent_id", "role_id")
    )
    stg_roles = role_winners.select(
        "role_id",
        "name",
        "description",
        "is_default",
        "agent_type",
        "created_at",
        "updated_at",
        "source_file",
        "record_index",
    )
    held = pl.concat(
        [
            held_ids(role_errors, role_winners, "roles", ROLE, "role_id"),
            held_ids(detail_errors, detail_winners, "roles", AGENT_DETAILS, "agent_id"),
        ]
    )
    tables, errors = _collect(
        {"stg_roles": stg_roles, "stg_agent_roles": stg_agent_roles, "stg_held_ids": held},
        [
            role_errors,
            detail_errors,
            role_dups,
            detail_dups,
            _element_errors(
                detail_unknown.select("agent_id", *POSITION, path=pl.col("record_path") + ".id"),
                AGENT_DETAILS,
                "INVALID_AGENT_ID",
                "agent_id",
                "agent",
            ),
            _element_errors(
                locate(unknown_roles, detail_known, "role_ids", "role_id"),
                AGENT_DETAILS,
                "INVALID_ROLE_ID",
                "role_id",
                "role",
            ),
            _element_errors(
                locate(unknown_agents, role_winners, "agent_ids", "agent_id"),
                ROLE,
                "INVALID_AGENT_ID",
                "agent_id",
                "agent",
            ),
        ],
    )
    return Plan("roles", tables, errors)


def plan_groups(groups: Decoded, known_agents: pa.Array, stored_groups: pa.Table) -> Plan:
    """Groups and their memberships, plus ORPHAN_PARENT and HIERARCHY_CYCLE reports.

    ``known_agents`` are the agent ids stored after the day's agents step; ``stored_groups`` the
    stored (group_id, parent_group_id, present) rows, which held groups keep."""
    records, nul_errors = reject_nul(records_frame(groups), GROUP)
    winners, duplicate_errors = resolve_duplicates(records, GROUP, "group_id")
    record_errors = pl.concat([errors_frame(groups.errors), nul_errors])
    held = held_ids(record_errors, winners, "groups", GROUP, "group_id")

    known = pl.col("agent_id").is_in(pl.Series(known_agents, dtype=pl.Int64))
    members = explode_mapping(winners, "group_id", "agent_ids", "agent_id")
    stg_group_membership = members.filter(known).select("group_id", "agent_id")
    stg_groups = winners.select(
        "group_id",
        "name",
        "description",
        "parent_group_id",
        "created_at",
        "updated_at",
        "source_file",
        "record_index",
    )
    tables, errors = _collect(
        {
            "stg_groups": stg_groups,
            "stg_group_membership": stg_group_membership,
            "stg_held_ids": held,
        },
        [
            record_errors,
            duplicate_errors,
            _element_errors(
                locate(members.filter(~known), winners, "agent_ids", "agent_id"),
                GROUP,
                "INVALID_AGENT_ID",
                "agent_id",
                "agent",
            ),
            hierarchy_reports(winners, held, stored_groups),
        ],
    )
    return Plan("groups", tables, errors)


def hierarchy_reports(
    winners: pl.LazyFrame, held: pl.LazyFrame, stored_groups: pa.Table
) -> pl.LazyFrame:
    """ORPHAN_PARENT for a group whose parent is no known group (no stored row, not in today's
    snapshot) and HIERARCHY_CYCLE for each group on a parent cycle of the day's hierarchy: the
    groups present after the day (today's valid ones, and held ones that were present) with the
    parents they will have. Only groups with a valid record today are reported."""
    stored = pl.from_arrow(stored_groups)
    assert isinstance(stored, pl.DataFrame)
    kept = (
        stored.lazy()
        .filter("present")
        .join(held.select(group_id="record_id"), on="group_id", how="semi")
        .select("group_id", "parent_group_id")
    )
    today = winners.select("group_id", "parent_group_id", *POSITION)
    edges = pl.concat([today.select("group_id", "parent_group_id"), kept])
    known = pl.concat([today.select("group_id"), stored.lazy().select("group_id")]).unique()
    on_cycle = hierarchy.cycles(edges.collect(engine="streaming")).lazy()
    orphans = today.filter(pl.col("parent_group_id").is_not_null()).join(
        known, left_on="parent_group_id", right_on="group_id", how="anti"
    )
    cycle_members = today.join(on_cycle, on="group_id")
    return pl.concat(
        [
            _group_report(
                orphans,
                "ORPHAN_PARENT",
                pl.format(
                    "{}.parent_group_id: parent group {} is not a known group",
                    "record_path",
                    "parent_group_id",
                ),
            ),
            _group_report(
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


def _group_report(groups: pl.LazyFrame, error_type: str, message: pl.Expr) -> pl.LazyFrame:
    return groups.select(
        record_kind=pl.lit(GROUP.name),
        error_type=pl.lit(error_type),
        field=pl.lit("parent_group_id"),
        error_message=message,
        record_id="group_id",
        source_file="source_file",
        record_index="record_index",
    )


def reject_nul(records: pl.LazyFrame, kind: RecordKind) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Split off records with a NUL character in a stored string (PostgreSQL text can't hold it)."""
    if not kind.string_fields:
        return records, errors_frame([])
    nul_field = pl.coalesce(
        [
            pl.when(pl.col(column).str.contains("\x00", literal=True)).then(pl.lit(path))
            for column, path in kind.string_fields.items()
        ]
    )
    flagged = records.with_columns(nul_field=nul_field)
    if not flagged.select(pl.col("nul_field").is_not_null().any()).collect().item():
        return records, errors_frame([])  # the usual case: the records stay as they are
    errors = flagged.filter(pl.col("nul_field").is_not_null()).select(
        record_kind=pl.lit(kind.name),
        error_type=pl.lit("VALIDATION_ERROR"),
        field=pl.col("nul_field"),
        error_message=pl.format(
            "{}.{}: NUL character (\\u0000) in a string; PostgreSQL text cannot hold it",
            "record_path",
            "nul_field",
        ),
        record_id=pl.col(_id_column(kind)),
        source_file="source_file",
        record_index="record_index",
    )
    return flagged.filter(pl.col("nul_field").is_null()).drop("nul_field"), errors


def resolve_duplicates(
    records: pl.LazyFrame, kind: RecordKind, id_column: str
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(winners, DUPLICATE_RECORD errors): per id the latest ``updated_at`` wins (a missing one is
    oldest); ties go to the last in record order."""
    # Only the keys of repeated ids are ranked, so the records themselves are never sorted.
    repeated = (
        records.select(id_column, "updated_at", "ordinal")
        .filter(pl.col(id_column).is_duplicated())
        .collect()
    )
    if repeated.height == 0:
        return records, errors_frame([])  # the usual case: the records stay as they are
    ranked = repeated.lazy().sort(id_column, "updated_at", "ordinal", nulls_last=False)
    losing = ranked.filter(pl.col("ordinal") != pl.col("ordinal").last().over(id_column))
    winners = records.join(losing, on="ordinal", how="anti", maintain_order="left")
    losers = records.join(losing.select("ordinal"), on="ordinal", how="semi").join(
        winners.join(losing.select(id_column).unique(), on=id_column, how="semi").select(
            id_column, winner_file="source_file", winner_path="record_path"
        ),
        on=id_column,
    )
    errors = losers.sort("ordinal").select(
        record_kind=pl.lit(kind.name),
        error_type=pl.lit("DUPLICATE_RECORD"),
        field=pl.lit("id"),
        error_message=pl.format(
            "{}.id: duplicate {} id {}; the occurrence at {} {} wins (latest updated_at, then "
            "last in file order)",
            "record_path",
            pl.lit(kind.name),
            id_column,
            "winner_file",
            "winner_path",
        ),
        record_id=id_column,
        source_file="source_file",
        record_index="record_index",
    )
    return winners, errors


def explode_mapping(records: pl.LazyFrame, owner: str, mapping: str, element: str) -> pl.LazyFrame:
    """One row per distinct non-null element of ``mapping`` in each record (repeats collapse to
    the first), in record and array order: (ordinal, owner, element). Integers only, so that
    millions of elements stay cheap; :func:`locate` finds the few that are reported."""
    distinct = pl.col(mapping).list.drop_nulls().list.unique(maintain_order=True)
    return (
        records.select("ordinal", owner, distinct.alias(element))
        .explode(element)
        .filter(pl.col(element).is_not_null())  # an empty array explodes to one null
    )


def locate(
    elements: pl.LazyFrame, records: pl.LazyFrame, mapping: str, element: str
) -> pl.LazyFrame:
    """``elements`` of ``records`` (from :func:`explode_mapping`) with their record's position
    columns and ``path``, the JSON path of the element's first occurrence in ``mapping``."""
    positions = (
        records.join(elements.select("ordinal"), on="ordinal", how="semi")
        .select(
            "ordinal",
            *POSITION,
            pl.col(mapping).alias(element),
            position=pl.int_ranges(pl.col(mapping).list.len(), dtype=pl.UInt32),
        )
        .explode(element, "position")
        .unique(["ordinal", element], keep="first", maintain_order=True)
    )
    return elements.join(positions, on=["ordinal", element], maintain_order="left").with_columns(
        path=pl.format("{}.{}[{}]", "record_path", pl.lit(mapping), "position")
    )


def held_ids(
    errors: pl.LazyFrame, winners: pl.LazyFrame, entity: str, kind: RecordKind, id_column: str
) -> pl.LazyFrame:
    """Ids with a quarantined record and no valid one: they keep their previous state."""
    return (
        errors.filter(
            (pl.col("record_kind") == kind.name)
            & (pl.col("error_type") == "VALIDATION_ERROR")
            & pl.col("record_id").is_not_null()
        )
        .select(record_id="record_id")
        .unique()
        .join(winners.select(record_id=id_column), on="record_id", how="anti")
        .sort("record_id")
        .select(entity=pl.lit(entity), record_kind=pl.lit(kind.name), record_id="record_id")
    )


def _element_errors(
    elements: pl.LazyFrame, kind: RecordKind, error_type: str, id_column: str, noun: str
) -> pl.LazyFrame:
    return elements.select(
        record_kind=pl.lit(kind.name),
        error_type=pl.lit(error_type),
        field=pl.col("path").str.replace(r"^\$(\[\d+\])?\.", ""),
        error_message=pl.format(
            "{}: {} {} is not a known {}", "path", pl.lit(noun), id_column, pl.lit(noun)
        ),
        record_id=_id_column(kind),
        source_file="source_file",
        record_index="record_index",
    )


def _id_column(kind: RecordKind) -> str:
    return str(kind.schema.names[0])


def _collect(
    tables: dict[str, pl.LazyFrame], errors: list[pl.LazyFrame]
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Run every plan at once on the streaming engine."""
    error_plan = pl.concat([e.cast(ERROR_SCHEMA) for e in errors]).sort(  # type: ignore[arg-type]
        "source_file", "record_index", "field", nulls_last=False
    )
    frames = pl.collect_all([*tables.values(), error_plan], engine="streaming")
    return dict(zip(tables, frames[:-1], strict=True)), frames[-1]
