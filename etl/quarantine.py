"""What a bad record or element is quarantined as: its field, a message that starts with its
JSON location, and its id when one can be read."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import msgspec

from etl.rawjson import (
    DECODE_FAILURES,
    LONE_SURROGATE,
    invalid_utf8_field,
    sanitized_error,
    shallow_members,
    surrogate_field,
    too_deep_member,
    without_lone_surrogates,
)
from etl.records import MAX_ID, TIMESTAMPS, IdProbe, RecordError, RecordKind

_ID_PROBE = msgspec.json.Decoder(IdProbe)


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
            field = invalid_utf8_field(bytes(raw))
            where = f"{path}.{field}" if field else path
            return field, f"{where}: invalid UTF-8 in a string ({utf8.reason})"
        return None, f"{path}: invalid JSON text: {error}"
    problem, _, where = str(error).partition(" - at `")
    where = where.rstrip("`") or "$"
    missing = re.fullmatch(r"Object missing required field `(.+)`", problem)
    if missing:
        where = f"{where}.{missing.group(1)}"
    problem = MESSAGE_REWRITES.get(problem, problem)
    field = where[1:].lstrip(".") or None
    return field, f"{path}{where[1:]}: {problem}"


MESSAGE_REWRITES = {  # msgspec's wording where it would puzzle a reader
    "Expected `str` matching regex '\\\\S'": (
        "Expected a non-empty `str`, got an empty or blank one"
    ),
}


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


def parser_message(error: Exception, data: bytes, offset: int) -> str:
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


def bad_timestamp(
    kind: RecordKind, field: str, text: str, record_id: Any, source_file: str, index: int, path: str
) -> RecordError:
    """The record's VALIDATION_ERROR for a timestamp that is none."""
    return RecordError(
        kind.name,
        "VALIDATION_ERROR",
        field,
        f"{path}.{field}: Expected an ISO-8601 timestamp, got {show(text)}",
        record_id,
        source_file,
        index,
    )


def parse_lenient_timestamps(
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
            return bad_timestamp(kind, name, text, record.id, source_file, index, path)
    return None


def clean_mapping(
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
                f"{path}.{field}: Expected an integer id in 1..2^63-1, got {show(value)}",
                record.id,
                source_file,
                index,
            )
        )
    return errors


def show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
