"""Bad records' exact text: read again from their files for the error rows, once the plan has
named them, the files checked against the hashes the run recorded at the first read."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from etl import source
from etl.batches import Table
from etl.decode import iter_records
from etl.errors import InputError
from etl.pages import FileDigest
from etl.plan import Plan
from etl.records import RECORD_KINDS, RecordKind
from etl.source import InputFile


def with_bad_records(
    plan: Plan, inputs: dict[str, Sequence[InputFile]], hashes: dict[str, str]
) -> dict[str, Table]:
    """The plan's tables, and its bad records with their text read again from their files
    (``hashes``: the files' SHA-256 as the run recorded them)."""
    return {**plan.tables, "stg_errors": Table(attach_raw(plan, inputs, hashes))}


def error_files(plan: Plan, inputs: dict[str, Sequence[InputFile]]) -> dict[str, int]:
    """The files that hold the plan's error records, each with its place in the order the run
    read its files (its ``file_index`` in the ledger): ``inputs``' kinds one after another, each
    kind's files in their order."""
    named: dict[str, set[str]] = {}
    for kind_name, name in plan.errors.select("record_kind", "source_file").iter_rows():
        named.setdefault(kind_name, set()).add(name)
    places: dict[str, int] = {}
    first = 0
    for kind_name, files in inputs.items():
        names = sorted(named.pop(kind_name, ()))
        for name, place in zip(names, source.positions(files, names), strict=True):
            if place is None:
                raise ValueError(f"{name}: an error row names a file this run did not read")
            places[name] = first + place
        first += len(files)
    if named:
        raise ValueError(f"error rows of record kinds this run did not read: {sorted(named)}")
    return places


# stg_errors' columns taken from the plan's error rows, between the entity and the raw text
ERROR_COLUMNS = (
    "record_kind",
    "error_type",
    "error_message",
    "field",
    "record_id",
    "source_file",
    "record_index",
)


def attach_raw(
    plan: Plan, inputs: dict[str, Sequence[InputFile]], hashes: dict[str, str]
) -> pl.DataFrame:
    """The plan's error rows, each with its record's exact JSON text, read again from its file
    (one file at a time; ``hashes`` are the files' SHA-256 at the first read, and a file that
    changed since is an InputError). A plan has a handful of error rows: they are gathered in
    Python, and the frame is put together from the plan's columns without a query."""
    errors = plan.errors
    kinds = errors.get_column("record_kind").to_list()
    files = errors.get_column("source_file").to_list()
    positions = list(zip(files, errors.get_column("record_index").to_list(), strict=True))
    by_file: dict[tuple[str, str], set[int]] = {}
    for kind_name, (name, index) in zip(kinds, positions, strict=True):
        by_file.setdefault((kind_name, name), set()).add(index)
    texts: dict[tuple[str, int], str] = {}
    for (kind_name, name), indexes in by_file.items():
        file = source.file_named(inputs[kind_name], name)
        texts.update(read_raw_texts(RECORD_KINDS[kind_name], file, indexes, hashes[name]))
    return pl.DataFrame(
        [
            pl.Series("entity", [plan.entity] * errors.height, dtype=pl.String),
            *(errors.get_column(c) for c in ERROR_COLUMNS),
            pl.Series("raw_text", [texts[p] for p in positions], dtype=pl.String),
        ]
    )


def read_raw_texts(
    kind: RecordKind, file: InputFile, indexes: set[int], sha256: str
) -> dict[tuple[str, int], str]:
    """(file, index) -> the exact text of the records at ``indexes`` in ``file``."""
    digest = FileDigest(file.name)
    texts = {}
    for index, _, raw in iter_records(kind, file, digest=digest):
        if index in indexes:
            texts[(file.name, index)] = bytes(raw).decode("utf-8", "backslashreplace")
    if digest.sha256 != sha256:
        raise InputError(
            f"{file.name}: changed while this run read it (SHA-256 {sha256[:12]}... at first, "
            f"{digest.sha256[:12]}... now); run the day again"
        )
    return texts
