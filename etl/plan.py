"""Plan: decoded records -> the exact rows to stage, one batch of records at a time.

Pure functions over record batches: validate what msgspec cannot (NUL characters), resolve
duplicate ids, explode mapping arrays into pairs and check them against the known ids. Every
rejected record or element becomes an error row; nothing is dropped silently except repeats
within one array.

Memory follows the batch size: a pass over the batches gathers only small columns (ids, the
records that are reported), and a staged table is a Polars step run on one batch at a time
while it is staged. A record and its mapping array always lie in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from etl import hierarchy
from etl.batches import ENGINE, Records, Step, Table
from etl.decode import Decoded
from etl.records import AGENT, AGENT_DETAILS, GROUP, ROLE, RecordError, RecordKind

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
NO_ORDINALS = pl.Series("ordinal", [], dtype=pl.Int64)


@dataclass(frozen=True)
class Plan:
    """What one entity's run stages: staging table -> rows, plus its error rows."""

    entity: str
    tables: dict[str, Table]
    errors: pl.DataFrame  # ERROR_SCHEMA; raw text is attached before staging


@dataclass(frozen=True)
class AccountDay:
    """What an entity's plan reads of one account's day: its decoded records by kind, and the
    ids it stores that they are checked against (agents' step: none)."""

    decoded: dict[str, Decoded]
    known_agents: pa.Array | None = None
    known_roles: pa.Array | None = None
    stored_groups: pa.Table | None = None


def plan_day(entity: str, day: AccountDay) -> Plan:
    """The entity's plan of the account's day."""
    decoded = day.decoded
    if entity == "agents":
        return plan_agents(decoded[AGENT.name])
    assert day.known_agents is not None
    if entity == "roles":
        assert day.known_roles is not None
        roles, details = decoded[ROLE.name], decoded[AGENT_DETAILS.name]
        return plan_roles(roles, details, day.known_agents, day.known_roles)
    assert day.stored_groups is not None
    return plan_groups(decoded[GROUP.name], day.known_agents, day.stored_groups)


def errors_frame(errors: list[RecordError]) -> pl.DataFrame:
    return pl.DataFrame(
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


def among(column: str, values: pl.Series) -> pl.Expr:
    """Whether ``column``'s value is one of ``values`` (a hash set built once per batch)."""
    return pl.col(column).is_in(values.implode())


def known_frame(column: str, ids: pa.Array) -> pl.LazyFrame:
    """Known ids as a frame to join with: a semi or anti join per batch took half the time of
    ``is_in`` with 200,000 ids, whose hash set is rebuilt for every batch."""
    return pl.LazyFrame({column: pl.Series(ids, dtype=pl.Int64)})


def unknown(elements: pl.LazyFrame, known: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """The ``elements`` whose ``column`` is not in ``known``, computed once (:func:`locate`
    reads its elements twice)."""
    return (
        elements.join(known, on=column, how="anti", maintain_order="left")
        .collect(engine=ENGINE)
        .lazy()
    )


def keeping(*dropped: pl.Series) -> Step:
    """The step that drops the records at the ``dropped`` ordinals (none: the batch as it is)."""
    ordinals = pl.concat([NO_ORDINALS, *dropped])
    if ordinals.is_empty():
        return lambda batch: batch
    return lambda batch: batch.filter(~among("ordinal", ordinals))


def plan_agents(agents: Decoded) -> Plan:
    records = agents.records
    nul_ordinals, nul_errors = reject_nul(records, AGENT)
    losing, duplicate_errors = resolve_duplicates(records, AGENT, nul_ordinals)
    winners = keeping(nul_ordinals, losing)
    record_errors = pl.concat([errors_frame(agents.errors), nul_errors])
    held = held_ids(record_errors, records, winners, "agents", AGENT)
    stg_agents = Table(
        (
            records,
            lambda batch: winners(batch).select(
                "agent_id",
                "name",
                "email",
                "deactivated",
                "contact_active",
                "created_at",
                "updated_at",
                "source_file",
                "record_index",
            ),
        )
    )
    errors = sorted_errors([record_errors, duplicate_errors])
    return Plan("agents", {"stg_agents": stg_agents, "stg_held_ids": Table(held)}, errors)


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
            _element_errors(
                detail_unknown.lazy(), AGENT_DETAILS, "INVALID_AGENT_ID", "agent_id", "agent"
            ),
            detail_records.gather(
                lambda batch: _element_errors(
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
                lambda batch: _element_errors(
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
            _element_errors(strangers.lazy(), GROUP, "INVALID_AGENT_ID", "agent_id", "agent"),
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


def reject_nul(records: Records, kind: RecordKind) -> tuple[pl.Series, pl.DataFrame]:
    """(ordinals, errors) of the records with a NUL character in a stored string, which
    PostgreSQL text cannot hold."""
    if not kind.string_fields:
        return NO_ORDINALS, errors_frame([])
    nul_field = pl.coalesce(
        [
            pl.when(pl.col(column).str.contains("\x00", literal=True)).then(pl.lit(path))
            for column, path in kind.string_fields.items()
        ]
    )
    flagged = records.gather(
        lambda batch: (
            batch.with_columns(nul_field=nul_field)
            .filter(pl.col("nul_field").is_not_null())
            .select("ordinal", _id_column(kind), "nul_field", *POSITION)
        )
    )
    errors = flagged.select(
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
    return flagged.get_column("ordinal"), errors


def resolve_duplicates(
    records: Records, kind: RecordKind, rejected: pl.Series
) -> tuple[pl.Series, pl.DataFrame]:
    """(ordinals, DUPLICATE_RECORD errors) of the records that lose to another record of the same
    id, among those not ``rejected``: per id the latest ``updated_at`` wins (a missing one is
    oldest); ties go to the last in record order."""
    id_column = _id_column(kind)
    candidates = keeping(rejected)
    ids = records.gather(lambda batch: candidates(batch).select(id_column)).get_column(id_column)
    ids = ids.sort()  # neighbours compared: a tenth of the memory of hashing a million ids
    repeated_ids = ids.filter(ids == ids.shift(1)).unique()
    del ids
    if repeated_ids.is_empty():
        return NO_ORDINALS, errors_frame([])  # the usual case: one pass over the ids only
    repeated = records.gather(
        lambda batch: (
            candidates(batch)
            .filter(among(id_column, repeated_ids))
            .select(id_column, "updated_at", "ordinal", *POSITION)
        )
    )
    ranked = repeated.sort(id_column, "updated_at", "ordinal", nulls_last=False)
    is_winner = pl.col("ordinal") == pl.col("ordinal").last().over(id_column)
    winners = ranked.filter(is_winner).select(
        id_column, winner_file="source_file", winner_path="record_path"
    )
    losers = ranked.filter(~is_winner).join(winners, on=id_column).sort("ordinal")
    errors = losers.select(
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
    return losers.get_column("ordinal"), errors


def explode_mapping(records: pl.LazyFrame, owner: str, mapping: str, element: str) -> pl.LazyFrame:
    """One row per distinct non-null element of ``mapping`` in each record (repeats collapse to
    the first), in record and array order: (ordinal, owner, element). Integers only, so that
    millions of elements stay cheap; :func:`locate` finds the few that are reported."""
    return (
        records.select("ordinal", owner, distinct_elements(mapping).alias(element))
        .explode(element)
        .filter(pl.col(element).is_not_null())  # an empty array explodes to one null
    )


def distinct_elements(mapping: str) -> pl.Expr:
    """The distinct non-null elements of ``mapping``, repeats collapsed to the first."""
    return pl.col(mapping).list.drop_nulls().list.unique(maintain_order=True)


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
    errors: pl.DataFrame,
    records: Records,
    winners: Step,
    entity: str,
    kind: RecordKind,
) -> pl.DataFrame:
    """Ids with a quarantined record and no valid one: they keep their previous state."""
    id_column = _id_column(kind)
    quarantined = (
        errors.filter(
            (pl.col("record_kind") == kind.name)
            & (pl.col("error_type") == "VALIDATION_ERROR")
            & pl.col("record_id").is_not_null()
        )
        .get_column("record_id")
        .unique()
    )
    valid = pl.DataFrame(schema={"record_id": pl.Int64})
    if not quarantined.is_empty():
        valid = records.gather(
            lambda batch: (
                winners(batch).filter(among(id_column, quarantined)).select(record_id=id_column)
            )
        )
    return (
        quarantined.to_frame()
        .join(valid, on="record_id", how="anti")
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


def sorted_errors(errors: list[pl.DataFrame | pl.LazyFrame]) -> pl.DataFrame:
    """Every error row of the plan, in file order."""
    parts = [e.lazy().cast(ERROR_SCHEMA) for e in errors]  # type: ignore[arg-type]
    return (
        pl.concat(parts)
        .sort("source_file", "record_index", "field", nulls_last=False)
        .collect(engine=ENGINE)
    )
