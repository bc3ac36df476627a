"""Timestamps: RFC 3339 text parsed a batch at a time, as msgspec would one at a time."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from etl.records import TIMESTAMP

# RFC 3339 text that Arrow parses to the instant msgspec's parser gives: a valid date of
# 1900-2999 (not February 29), seconds with up to six decimals, and Z or an offset. A batch's
# timestamps are parsed at once (cheaper than turning msgspec's datetimes into Arrow); other
# text is parsed one value at a time, as a record's own would be.
RFC3339 = (
    r"^(?:19\d\d|2\d\d\d)-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)
# Arrow compiles the pattern at every call, which costs more than matching a small batch's
# values with Python's compiled copy (ASCII digits, the whole text), which matches alike.
_RFC3339 = re.compile(RFC3339, re.ASCII)
_MATCHED_IN_PYTHON = 200


def timestamp_column(values: Sequence[str | datetime | None]) -> tuple[pa.Array, dict[int, str]]:
    """Timestamp text (or datetimes the lenient path parsed) as an Arrow column, and the
    positions of text that is no timestamp (null in the column), with the text."""
    try:
        texts = pa.array(values, pa.string())
        parsed: dict[int, datetime] = {}
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # datetimes among the text
        parsed = {i: v for i, v in enumerate(values) if isinstance(v, datetime)}
        texts = pa.array([None if i in parsed else v for i, v in enumerate(values)], pa.string())
    fast = rfc3339_mask(texts, values)
    if not parsed and fast.false_count == 0:  # most batches
        return texts.cast(TIMESTAMP), {}
    column = pc.if_else(fast, texts, pa.scalar(None, pa.string())).cast(TIMESTAMP)
    slow = pc.invert(fast).fill_null(False)
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


def rfc3339_mask(texts: pa.Array, values: Sequence[str | datetime | None]) -> pa.Array:
    """Which of ``texts`` (``values`` as Arrow text, datetimes null) are RFC 3339 text that Arrow
    parses: true, false, or null where the text is."""
    if len(values) > _MATCHED_IN_PYTHON:
        return pc.match_substring_regex(texts, RFC3339)
    match = _RFC3339.fullmatch
    return pa.array(
        [match(v) is not None if isinstance(v, str) else None for v in values], pa.bool_()
    )


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
