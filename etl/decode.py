"""Decode: JSON pages -> Arrow tables of typed records, with every bad record captured.

Each page is decoded whole by one reused strict ``msgspec`` decoder (the fast path). Only a page
that fails is split into its records (``list[msgspec.Raw]``) and decoded one record at a time, so
one bad record costs one record. A page that cannot be split at all -- not JSON, or a top level of
the wrong shape -- is an :class:`~etl.errors.InputError`: the day's snapshot is incomplete.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from etl import BATCH_VALUES
from etl.batches import Records, RowBatches
from etl.errors import InputError
from etl.pages import CHUNK_BYTES, FileDigest, Segment, segments, whole_page
from etl.quarantine import (
    clean_mapping,
    describe,
    parse_lenient_timestamps,
    parser_message,
    probe_id,
)
from etl.rawjson import DECODE_FAILURES, records_apart
from etl.records import RECORD_KINDS, RecordError, RecordKind, batch_schema
from etl.source import InputFile, natural_key, read_pages


@dataclass(frozen=True)
class Decoded:
    records: Records  # kind.schema + source_file, record_index, record_path, ordinal
    errors: list[RecordError]


def _page_type(kind: RecordKind) -> Any:
    return kind.strict | list[kind.strict] if kind.object_page else list[kind.strict]  # type: ignore[name-defined]


_PAGE_DECODERS = {k.name: msgspec.json.Decoder(_page_type(k)) for k in RECORD_KINDS.values()}
_RECORD_DECODERS = {k.name: msgspec.json.Decoder(k.strict) for k in RECORD_KINDS.values()}
_LENIENT_DECODERS = {k.name: msgspec.json.Decoder(k.lenient) for k in RECORD_KINDS.values()}
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_RAW_ANY = msgspec.json.Decoder(list[msgspec.Raw] | dict[str, msgspec.Raw])


def decode_files(
    kind: RecordKind,
    files: Iterable[InputFile],
    on_file: Callable[[FileDigest], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    spill: Path | None = None,
    batch_values: int = BATCH_VALUES,
) -> Decoded:
    """Decode every page of one record kind, in file order, into record batches plus errors.

    Files are read one at a time, pages over ``chunk_bytes`` a chunk at a time;
    ``on_file`` gets each file's size and hash once it is read, also for the file that fails.
    With ``spill`` (a file path), the batches are written there instead of kept in memory."""
    records = Records(batch_schema(kind), spill)
    errors: list[RecordError] = []
    rows = RowBatches(kind, records, batch_values, errors=errors)
    try:
        decode_into(kind, files, rows, errors, on_file, chunk_bytes)
    except BaseException:
        records.close()  # the spill file's handle goes now, not with the traceback
        raise
    return Decoded(records=rows.close(), errors=in_read_order(errors))


def in_read_order(errors: list[RecordError]) -> list[RecordError]:
    """The errors by file, in the order a folder's files are read (the natural order of their
    names), then by record; a record's own errors in the order found. A bad timestamp is
    found when its batch is built, after the errors of later records: this puts it back."""
    return sorted(errors, key=lambda e: (natural_key(e.source_file), e.record_index))


def decode_into(
    kind: RecordKind,
    files: Iterable[InputFile],
    rows: RowBatches,
    errors: list[RecordError],
    on_file: Callable[[FileDigest], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """Decode the files in order, good records into ``rows``, bad ones into ``errors``."""
    for name, page in read_pages(files, chunk_bytes):
        if isinstance(page, bytes):  # most pages: read whole, hashed at once
            digest = FileDigest(name, len(page), hashlib.sha256(page).hexdigest())
            try:
                decode_page(kind, name, page, rows, errors)
            finally:
                if on_file is not None:
                    on_file(digest)
            continue
        digest = FileDigest(name)
        try:
            with closing(segments(page, digest, chunk_bytes)) as parts:
                for segment in parts:
                    decode_segment(kind, name, segment, rows, errors)
        finally:
            if on_file is not None:
                on_file(digest)


def decode_page(
    kind: RecordKind, name: str, data: bytes, rows: RowBatches, errors: list[RecordError]
) -> None:
    """:func:`decode_segment` for a page read whole, without building its segment unless the
    fast path fails."""
    try:
        page = _PAGE_DECODERS[kind.name].decode(data)
    except DECODE_FAILURES:  # a bad record, or only a byte-order mark
        decode_segment(kind, name, whole_page(data), rows, errors)
        return
    add_page(kind, name, page, 0, rows)


def decode_segment(
    kind: RecordKind, name: str, segment: Segment, rows: RowBatches, errors: list[RecordError]
) -> None:
    """Add the segment's good records to ``rows`` and its bad ones to ``errors``."""
    try:
        page = _PAGE_DECODERS[kind.name].decode(segment.data)
    except DECODE_FAILURES:
        _decode_records(kind, name, segment_records(kind, name, segment), rows, errors)
        return
    add_page(kind, name, page, segment.first_index, rows)


def add_page(kind: RecordKind, name: str, page: Any, first: int, rows: RowBatches) -> None:
    """Add a decoded page's records (a list whose first is at page index ``first``, or one
    object) to ``rows``."""
    if isinstance(page, list):
        rows.extend((*kind.row(r), name, i, f"$[{i}]") for i, r in enumerate(page, start=first))
    else:
        rows.append((*kind.row(page), name, 0, "$"))


def iter_records(
    kind: RecordKind,
    file: InputFile,
    chunk_bytes: int = CHUNK_BYTES,
    digest: FileDigest | None = None,
) -> Iterator[tuple[int, str, msgspec.Raw]]:
    """The page's records as (index, JSON path, exact raw text), a segment at a time;
    InputError if the page has no such shape. ``digest`` gets the file's size and hash."""
    with closing(segments(file, digest or FileDigest(file.name), chunk_bytes)) as parts:
        for segment in parts:
            yield from segment_records(kind, file.name, segment)


def segment_records(
    kind: RecordKind, name: str, segment: Segment
) -> list[tuple[int, str, msgspec.Raw]]:
    """The segment's records as (page index, JSON path, raw text); InputError if it is no
    array of records (or, for a whole page of an object kind, no object)."""
    data = segment.data
    try:
        object_page = kind.object_page and segment.whole
        page = (_RAW_ANY if object_page else _RAW_ARRAY).decode(data)
    except msgspec.ValidationError as error:
        expected = "an object or an array of objects" if kind.object_page else "an array"
        got = re.search(r"got `(\w+)`", str(error))
        shape = _JSON_SHAPES.get(got.group(1), got.group(1)) if got else "of another type"
        raise InputError(
            f"{name}: top level is {shape}, expected {expected} of {kind.folder} records"
        ) from error
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        spans = records_apart(data, error, object_page=object_page)
        if spans is None:
            raise InputError(
                f"{name}: not valid JSON: {parser_message(error, data, segment.offset)}"
            ) from error
        page = [msgspec.Raw(data[start:end]) for start, end in spans] if spans else {}
    if isinstance(page, dict):
        return [(0, "$", msgspec.Raw(data))]
    first = segment.first_index
    return [(i, f"$[{i}]", raw) for i, raw in enumerate(page, start=first)]


_JSON_SHAPES = {
    "object": "an object",
    "array": "an array",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
}


def _decode_records(
    kind: RecordKind,
    name: str,
    records: list[tuple[int, str, msgspec.Raw]],
    rows: RowBatches,
    errors: list[RecordError],
) -> None:
    """Decode one record at a time: strict first, then lenient, then report what is wrong."""
    strict = _RECORD_DECODERS[kind.name]
    lenient = _LENIENT_DECODERS[kind.name]
    for index, path, raw in records:
        try:
            rows.append((*kind.row(strict.decode(raw)), name, index, path))
            continue
        except DECODE_FAILURES:
            pass
        try:
            record = lenient.decode(raw)
        except DECODE_FAILURES as error:
            field, message = describe(error, path, raw)
            errors.append(
                RecordError(
                    kind.name, "VALIDATION_ERROR", field, message, probe_id(raw), name, index
                )
            )
            continue
        bad_timestamp = parse_lenient_timestamps(kind, record, name, index, path)
        if bad_timestamp is not None:
            errors.append(bad_timestamp)
            continue
        errors.extend(clean_mapping(kind, record, name, index, path))
        rows.append((*kind.row(record), name, index, path))
