"""What every entity's plan is made of: the Plan it returns, and the checks all plans share --
NUL characters, duplicate ids, mapping elements against the known ids, held ids -- each
giving rows in (record batches) and rows out (ordinals to drop, error rows)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from etl.batches import ENGINE, Records, Step, Table
from etl.records import RecordError, RecordKind

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
            .select("ordinal", id_column_of(kind), "nul_field", *POSITION)
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
        record_id=pl.col(id_column_of(kind)),
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
    id_column = id_column_of(kind)
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
    id_column = id_column_of(kind)
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


def element_errors(
    elements: pl.LazyFrame, kind: RecordKind, error_type: str, id_column: str, noun: str
) -> pl.LazyFrame:
    return elements.select(
        record_kind=pl.lit(kind.name),
        error_type=pl.lit(error_type),
        field=pl.col("path").str.replace(r"^\$(\[\d+\])?\.", ""),
        error_message=pl.format(
            "{}: {} {} is not a known {}", "path", pl.lit(noun), id_column, pl.lit(noun)
        ),
        record_id=id_column_of(kind),
        source_file="source_file",
        record_index="record_index",
    )


def id_column_of(kind: RecordKind) -> str:
    return str(kind.schema.names[0])


def sorted_errors(errors: list[pl.DataFrame | pl.LazyFrame]) -> pl.DataFrame:
    """Every error row of the plan, in file order."""
    parts = [e.lazy().cast(ERROR_SCHEMA) for e in errors]  # type: ignore[arg-type]
    return (
        pl.concat(parts)
        .sort("source_file", "record_index", "field", nulls_last=False)
        .collect(engine=ENGINE)
    )
