"""Decode: JSON pages -> Arrow tables of typed records, with every bad record captured.

Each page is decoded whole by one reused strict ``msgspec`` decoder (the fast path). Only a page
that fails is split into its records (``list[msgspec.Raw]``) and decoded one record at a time, so
one bad record costs one record. A page that cannot be split at all -- not JSON, or a top level of
the wrong shape -- is an :class:`~etl.errors.InputError`: the day's snapshot is incomplete.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from etl import BATCH_VALUES
from etl.batches import Records
from etl.errors import InputError
from etl.pages import CHUNK_BYTES, FileDigest, Segment, segments, whole_page
from etl.rawjson import (
    DECODE_FAILURES,
    LONE_SURROGATE,
    records_apart,
    sanitized_error,
    shallow_members,
    surrogate_field,
    too_deep_member,
    without_lone_surrogates,
)
from etl.source import InputFile, natural_key, read_pages

MAX_ID = 2**63 - 1
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Name = Annotated[str, msgspec.Meta(pattern=r"\S")]  # not empty, not only white space


# Timestamps are decoded as text and parsed a batch at a time (see timestamp_column).
Timestamp = str


class Contact(msgspec.Struct, gc=False):
    active: bool | None = None
    name: str | None = None
    email: str | None = None


class Agent(msgspec.Struct, gc=False):
    id: Id
    deactivated: bool | None = None
    contact: Contact | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class AgentDetail(msgspec.Struct, gc=False):
    id: Id
    role_ids: list[Id] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Role(msgspec.Struct, gc=False):
    id: Id
    name: Name
    description: str | None = None
    default: bool | None = None
    agent_type: Int32 | None = None
    agent_ids: list[Id] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Group(msgspec.Struct, gc=False):
    id: Id
    name: Name
    description: str | None = None
    parent_group_id: Id | None = None
    agent_ids: list[Id] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


TIMESTAMPS = ("created_at", "updated_at")
MAPPINGS = ("role_ids", "agent_ids")


def lenient_struct(strict: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The same record with mapping-array elements untyped, for pages the strict decoders
    reject: a record whose only fault is a bad element still loads, each bad element reported
    on its own (INVALID_MAPPING). Its timestamps are parsed by Python's ISO-8601 parser."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(strict):
        kind = field.type
        if field.name in MAPPINGS:
            kind = list[Any] | None
        fields.append((field.name, kind) if field.required else (field.name, kind, field.default))
    return msgspec.defstruct(f"Lenient{strict.__name__}", fields)


class IdProbe(msgspec.Struct):
    id: Any = None


TIMESTAMP = pa.timestamp("us", tz="UTC")
ID_LIST = pa.list_(pa.int64())
POSITION_FIELDS = [
    pa.field("source_file", pa.string()),
    pa.field("record_index", pa.int32()),
    pa.field("record_path", pa.string()),
    pa.field("ordinal", pa.int64()),  # the record's position in decode order (files, then index)
]


@dataclass(frozen=True)
class RecordKind:
    """What one kind of input record is and how it becomes a row."""

    name: str  # as stored in error rows' record_kind
    folder: str
    strict: type[msgspec.Struct]
    lenient: type[msgspec.Struct]
    mapping: str | None  # the JSON field of the mapping array, if any
    object_page: bool  # a file may hold one object instead of an array (agent_details)
    schema: pa.Schema  # the row's columns, without the position columns
    row: Callable[[Any], tuple[Any, ...]]
    string_fields: dict[str, str]  # column -> JSON path, for strings checked for NUL


def _agent_row(a: Agent) -> tuple[Any, ...]:
    c = a.contact
    if c is None:
        return (a.id, None, None, a.deactivated, None, a.created_at, a.updated_at)
    return (a.id, c.name, c.email, a.deactivated, c.active, a.created_at, a.updated_at)


AGENT = RecordKind(
    name="agent",
    folder="agents",
    strict=Agent,
    lenient=lenient_struct(Agent),
    mapping=None,
    object_page=False,
    schema=pa.schema(
        [
            ("agent_id", pa.int64()),
            ("name", pa.string()),
            ("email", pa.string()),
            ("deactivated", pa.bool_()),
            ("contact_active", pa.bool_()),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=_agent_row,
    string_fields={"name": "contact.name", "email": "contact.email"},
)

AGENT_DETAILS = RecordKind(
    name="agent_details",
    folder="agent_details",
    strict=AgentDetail,
    lenient=lenient_struct(AgentDetail),
    mapping="role_ids",
    object_page=True,
    schema=pa.schema(
        [
            ("agent_id", pa.int64()),
            ("role_ids", ID_LIST),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=lambda d: (d.id, d.role_ids, d.created_at, d.updated_at),
    string_fields={},
)

ROLE = RecordKind(
    name="role",
    folder="roles",
    strict=Role,
    lenient=lenient_struct(Role),
    mapping="agent_ids",
    object_page=False,
    schema=pa.schema(
        [
            ("role_id", pa.int64()),
            ("name", pa.string()),
            ("description", pa.string()),
            ("is_default", pa.bool_()),
            ("agent_type", pa.int32()),
            ("agent_ids", ID_LIST),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=lambda r: (
        r.id,
        r.name,
        r.description,
        r.default,
        r.agent_type,
        r.agent_ids,
        r.created_at,
        r.updated_at,
    ),
    string_fields={"name": "name", "description": "description"},
)

GROUP = RecordKind(
    name="group",
    folder="admin_groups",
    strict=Group,
    lenient=lenient_struct(Group),
    mapping="agent_ids",
    object_page=False,
    schema=pa.schema(
        [
            ("group_id", pa.int64()),
            ("name", pa.string()),
            ("description", pa.string()),
            ("parent_group_id", pa.int64()),
            ("agent_ids", ID_LIST),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=lambda g: (
        g.id,
        g.name,
        g.description,
        g.parent_group_id,
        g.agent_ids,
        g.created_at,
        g.updated_at,
    ),
    string_fields={"name": "name", "description": "description"},
)


@dataclass(frozen=True)
class RecordError:
    """One quarantined record or mapping element, located precisely."""

    record_kind: str
    error_type: str
    field: str | None
    message: str  # starts with the JSON location: "$[3].agent_ids[1]: ..."
    record_id: int | None
    source_file: str
    record_index: int


@dataclass(frozen=True)
class Decoded:
    records: Records  # kind.schema + source_file, record_index, record_path, ordinal
    errors: list[RecordError]


def _page_type(kind: RecordKind) -> Any:
    return kind.strict | list[kind.strict] if kind.object_page else list[kind.strict]  # type: ignore[name-defined]


RECORD_KINDS = {k.name: k for k in (AGENT, AGENT_DETAILS, ROLE, GROUP)}
_PAGE_DECODERS = {k.name: msgspec.json.Decoder(_page_type(k)) for k in RECORD_KINDS.values()}
_RECORD_DECODERS = {k.name: msgspec.json.Decoder(k.strict) for k in RECORD_KINDS.values()}
_LENIENT_DECODERS = {k.name: msgspec.json.Decoder(k.lenient) for k in RECORD_KINDS.values()}
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_RAW_ANY = msgspec.json.Decoder(list[msgspec.Raw] | dict[str, msgspec.Raw])
_ID_PROBE = msgspec.json.Decoder(IdProbe)


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
    found when its batch is built, after the errors of later records: this puts it back, so
    that one pass and a split decode list the same errors alike."""
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


def batch_schema(kind: RecordKind) -> pa.Schema:
    return pa.schema(list(kind.schema) + POSITION_FIELDS)


class RowBatches:
    """Decoded rows of one kind, moved into ``records`` as an Arrow batch every ``batch_values``
    values (a row counts one, plus one per element of its mapping array), so that Python objects
    never pile up, also when a few records hold millions of ids. A row whose timestamp text is
    no timestamp goes to ``errors`` instead, as the record's VALIDATION_ERROR."""

    def __init__(
        self,
        kind: RecordKind,
        records: Records,
        batch_values: int = BATCH_VALUES,
        *,
        errors: list[RecordError],
    ) -> None:
        self.kind = kind
        self.schema = records.schema
        self.mapping = kind.schema.names.index(kind.mapping) if kind.mapping else None
        self.timestamps = [i for i, f in enumerate(kind.schema) if f.type == TIMESTAMP]
        self.errors = errors  # where a row whose timestamp is none goes
        self.records = records
        self.batch_values = batch_values
        self.pending: list[tuple[Any, ...]] = []
        self.values = 0
        self.count = 0  # rows moved so far: the next batch's first ordinal

    def append(self, row: tuple[Any, ...]) -> None:
        """Add one row, cutting batches as :meth:`move_full_batches` would, without going over
        the pending rows again (one file per agent: a row at a time)."""
        values = 1 if self.mapping is None else 1 + len(row[self.mapping] or ())
        if self.pending and self.values + values > self.batch_values:
            self._move(self.pending)
            self.pending, self.values = [], 0
        self.pending.append(row)
        self.values += values
        if self.values >= self.batch_values:
            self._move(self.pending)
            self.pending, self.values = [], 0

    def extend(self, rows: Iterable[tuple[Any, ...]]) -> None:
        start = len(self.pending)
        self.pending.extend(rows)
        self.values += len(self.pending) - start
        if self.mapping is not None:
            m = self.mapping
            self.values += sum(len(row[m]) for row in self.pending[start:] if row[m])
        if self.values >= self.batch_values:
            self.move_full_batches()

    def move_full_batches(self) -> None:
        """Move the pending rows out in batches of at most ``batch_values`` values (a row with
        more ids than that is a batch of its own); a last, unfilled batch stays pending."""
        m = self.mapping
        if m is None:  # a row is one value: cut by count, not row by row
            full = len(self.pending) - len(self.pending) % self.batch_values
            for start in range(0, full, self.batch_values):
                self._move(self.pending[start : start + self.batch_values])
            self.pending, self.values = self.pending[full:], len(self.pending) - full
            return
        start = size = 0
        for index, row in enumerate(self.pending):
            values = 1 + len(row[m] or ())
            if size and size + values > self.batch_values:
                self._move(self.pending[start:index])
                start, size = index, 0
            size += values
        rest = self.pending[start:]
        if size >= self.batch_values:
            self._move(rest)
            rest, size = [], 0
        self.pending, self.values = rest, size

    def add_spilled(self, path: Path) -> None:
        """Add the batches another process decoded into the Arrow IPC file ``path``, after the
        rows so far, their ordinals moved on to follow them."""
        if self.pending:
            self._move(self.pending)
            self.pending, self.values = [], 0
        ordinal = self.schema.get_field_index("ordinal")
        with pa.OSFile(str(path)) as file:
            reader = pa.ipc.open_file(file)
            for index in range(reader.num_record_batches):
                batch = reader.get_batch(index)
                start, self.count = self.count, self.count + batch.num_rows
                ordinals = pa.array(range(start, self.count), pa.int64())
                self.records.add(batch.set_column(ordinal, "ordinal", ordinals))

    def close(self) -> Records:
        """Move the last rows out; the records are complete."""
        if self.pending:
            self._move(self.pending)
        self.pending, self.values = [], 0
        self.records.close()
        return self.records

    def _move(self, rows: list[tuple[Any, ...]]) -> None:
        columns = list(zip(*rows, strict=True))
        times: dict[int, pa.Array] = {}
        rejected: dict[int, RecordError] = {}  # row -> its first timestamp that is none
        for column in self.timestamps:
            times[column], bad = timestamp_column(columns[column])
            for row, text in bad.items():
                rejected.setdefault(row, self._bad_timestamp(rows[row], column, text))
        if rejected:
            self.errors.extend(rejected.values())
            rows = [row for n, row in enumerate(rows) if n not in rejected]
            if rows:
                self._move(rows)
            return
        arrays = [
            times[i] if i in times else pa.array(c, type=f.type)
            for i, (c, f) in enumerate(zip(columns, self.schema, strict=False))
        ]
        start, self.count = self.count, self.count + len(rows)
        arrays.append(pa.array(range(start, self.count), pa.int64()))  # ordinal
        self.records.add(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _bad_timestamp(self, row: tuple[Any, ...], column: int, text: str) -> RecordError:
        name = self.kind.schema.names[column]
        source_file, index, path = row[-3:]
        return RecordError(
            self.kind.name,
            "VALIDATION_ERROR",
            name,
            f"{path}.{name}: Expected an ISO-8601 timestamp, got {_show(text)}",
            row[0],
            source_file,
            index,
        )


# RFC 3339 text that Arrow parses to the instant msgspec's parser gives: a valid date of
# 1900-2999 (not February 29), seconds with up to six decimals, and Z or an offset. A batch's
# timestamps are parsed at once (cheaper than turning msgspec's datetimes into Arrow); other
# text is parsed one value at a time, as a record's own would be.
RFC3339 = (
    r"^(?:19\d\d|2\d\d\d)-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)


def timestamp_column(values: Sequence[str | datetime | None]) -> tuple[pa.Array, dict[int, str]]:
    """Timestamp text (or datetimes the lenient path parsed) as an Arrow column, and the
    positions of text that is no timestamp (null in the column), with the text."""
    try:
        texts = pa.array(values, pa.string())
        parsed: dict[int, datetime] = {}
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # datetimes among the text
        parsed = {i: v for i, v in enumerate(values) if isinstance(v, datetime)}
        texts = pa.array([None if i in parsed else v for i, v in enumerate(values)], pa.string())
    fast = pc.match_substring_regex(texts, RFC3339)
    column = pc.if_else(fast, texts, pa.scalar(None, pa.string())).cast(TIMESTAMP)
    slow = pc.invert(fast).fill_null(False)
    if not parsed and not pc.any(slow).as_py():
        return column, {}
    bad: dict[int, str] = {}
    for i in pc.indices_nonzero(slow).to_pylist():
        text = values[i]
        assert isinstance(text, str)
        value = parse_timestamp(text)
        if value is None:
            bad[i] = text
        else:
            parsed[i] = value
    if parsed:
        where = sorted(parsed)
        mask = [False] * len(values)
        for i in where:
            mask[i] = True
        replacements = pa.array([parsed[i] for i in where], TIMESTAMP)
        column = pc.replace_with_mask(column, pa.array(mask), replacements)
    return column, bad


def parse_timestamp(text: str) -> datetime | None:
    """``text`` as msgspec's RFC 3339 parser reads it, else as Python's ISO-8601 one; None if
    neither can."""
    try:
        return msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


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
                f"{name}: not valid JSON: {_parser_message(error, data, segment.offset)}"
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


def _parser_message(error: Exception, data: bytes, offset: int) -> str:
    """msgspec's reason, its byte offset in ``data`` moved to the file's (``+ offset``)."""
    text = str(error)
    if not data.strip():
        return "the file is empty (byte 0)"
    lone = LONE_SURROGATE.search(data)
    if lone:
        other = sanitized_error(data)  # a fault besides the surrogate is the one to name
        if other is None or isinstance(other, RecursionError):
            escape = lone.group().decode()
            at = lone.start() + offset
            return f"lone surrogate escape {escape} at byte {at} is not valid Unicode"
        text = str(other)
    if text == "Input data was truncated":
        return f"input ends early, truncated at byte {len(data) + offset} (end of file)"
    return re.sub(r"\(byte (\d+)\)", lambda m: f"(byte {int(m.group(1)) + offset})", text)


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
        bad_timestamp = _parse_timestamps(kind, record, name, index, path)
        if bad_timestamp is not None:
            errors.append(bad_timestamp)
            continue
        errors.extend(_clean_mapping(kind, record, name, index, path))
        rows.append((*kind.row(record), name, index, path))


def _parse_timestamps(
    kind: RecordKind, record: Any, source_file: str, index: int, path: str
) -> RecordError | None:
    """Parse a lenient record's timestamps in place; the first that is no ISO-8601 is an error."""
    for name in TIMESTAMPS:
        text = getattr(record, name)
        if text is None:
            continue
        try:
            setattr(record, name, datetime.fromisoformat(text))
        except ValueError:
            return RecordError(
                kind.name,
                "VALIDATION_ERROR",
                name,
                f"{path}.{name}: Expected an ISO-8601 timestamp, got {_show(text)}",
                record.id,
                source_file,
                index,
            )
    return None


def _clean_mapping(
    kind: RecordKind, record: Any, source_file: str, index: int, path: str
) -> list[RecordError]:
    """Null out bad mapping elements in place (positions kept) and report each one."""
    values = getattr(record, kind.mapping) if kind.mapping else None
    if not values:
        return []
    errors = []
    for position, value in enumerate(values):
        if type(value) is int and 1 <= value <= MAX_ID:
            continue
        values[position] = None
        field = f"{kind.mapping}[{position}]"
        errors.append(
            RecordError(
                kind.name,
                "INVALID_MAPPING",
                field,
                f"{path}.{field}: Expected an integer id in 1..2^63-1, got {_show(value)}",
                record.id,
                source_file,
                index,
            )
        )
    return errors


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


_MESSAGE_REWRITES = {  # msgspec's wording where it would puzzle a reader
    "Expected `str` matching regex '\\\\S'": (
        "Expected a non-empty `str`, got an empty or blank one"
    ),
}


def describe(error: Exception, path: str, raw: bytes = b"") -> tuple[str | None, str]:
    """(field, message) for the record ``raw`` that failed to decode; the message starts with its
    location."""
    if isinstance(error, RecursionError):
        field = too_deep_member(bytes(raw))
        where = f"{path}.{field}" if field else path
        return field, f"{where}: nested too deeply to read (deeper than the JSON parser allows)"
    lone = LONE_SURROGATE.search(bytes(raw))
    if lone and not isinstance(error, msgspec.ValidationError):
        field = surrogate_field(bytes(raw))
        escape = lone.group().decode()
        where = f"{path}.{field}" if field else path
        return field, (
            f"{where}: lone surrogate escape {escape} in a string is not valid Unicode; "
            "PostgreSQL text cannot hold it"
        )
    if not isinstance(error, msgspec.ValidationError):
        # msgspec < 0.23 raises UnicodeDecodeError for invalid UTF-8, later versions a DecodeError
        # without the reason: Python's own decoder names it the same way on every version.
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as utf8:
            return None, f"{path}: invalid UTF-8 in a string ({utf8.reason})"
        return None, f"{path}: invalid JSON text: {error}"
    problem, _, where = str(error).partition(" - at `")
    where = where.rstrip("`") or "$"
    missing = re.fullmatch(r"Object missing required field `(.+)`", problem)
    if missing:
        where = f"{where}.{missing.group(1)}"
    problem = _MESSAGE_REWRITES.get(problem, problem)
    field = where[1:].lstrip(".") or None
    return field, f"{path}{where[1:]}: {problem}"


def probe_id(raw: msgspec.Raw | bytes) -> int | None:
    """The record's ``id`` if it can be read as a valid id, else None."""
    text = without_lone_surrogates(bytes(raw))
    try:
        value = _ID_PROBE.decode(text).id
    except RecursionError:  # nested too deeply: read its top level only
        members = shallow_members(text)
        try:
            value = msgspec.json.decode(members[b"id"]) if members and b"id" in members else None
        except DECODE_FAILURES:
            return None
    except DECODE_FAILURES:
        return None
    return value if type(value) is int and 1 <= value <= MAX_ID else None
