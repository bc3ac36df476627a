"""Records the JSON parser refuses only for what they hold: a lone surrogate escape (valid JSON
grammar, but no Unicode text) or nesting deeper than the parser allows. Such a record costs
itself, not its page (SEMANTICS section 1): its page's records are told apart by matching
brackets and quotes without recursion, and what is wrong with it is named with its field.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

# What a failed decode raises; RecursionError: nesting deeper than the parser allows.
DECODE_FAILURES = (
    msgspec.ValidationError,
    msgspec.DecodeError,
    UnicodeDecodeError,
    RecursionError,
)

# A UTF-16 surrogate escape without its partner: valid JSON grammar, but no Unicode text.
LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


_QUOTE, _BACKSLASH, _COMMA = 0x22, 0x5C, 0x2C
_OPENERS, _CLOSERS = frozenset(b"[{"), frozenset(b"]}")
_SPACE = b" \t\r\n"


def element_spans(data: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of each element of the JSON array ``data``, found by matching brackets and
    quotes without recursion, or None if ``data`` is no balanced array. For a page the parser
    refuses as a whole only for what lies inside one record (a string no Unicode text can
    hold, nesting deeper than it allows): its records can still be told apart."""
    begin = len(data) - len(data.lstrip(_SPACE))
    last = len(data.rstrip(_SPACE)) - 1  # the closing bracket
    if last <= begin or data[begin] != ord("[") or data[last] != ord("]"):
        return None
    spans: list[tuple[int, int]] = []
    depth, in_string, escaped, start, end = 0, False, False, -1, -1
    for at in range(begin + 1, last):
        byte = data[at]
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
            end = at + 1
            continue
        if byte in _SPACE:
            continue
        if depth == 0:
            if byte == _COMMA:
                if start < 0:
                    return None  # an empty element
                spans.append((start, end))
                start = -1
                continue
            if start < 0:
                start = at
        if byte == _QUOTE:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
        elif byte in _CLOSERS:
            depth -= 1
            if depth < 0:
                return None
        end = at + 1
    if in_string or depth or (start < 0 and spans):  # open, or a trailing comma
        return None
    if start >= 0:
        spans.append((start, end))
    return spans


def records_apart(
    data: bytes, error: Exception, *, object_page: bool
) -> list[tuple[int, int]] | None:
    """Where a page's records lie when the parser refused the page only for what one record
    holds (a lone surrogate escape, nesting deeper than it allows), so that the record is
    quarantined and the rest loads: their spans, or none for a page that is one object (of a
    kind whose page may be one); None for any other failure (the file fails)."""
    if not isinstance(error, RecursionError) and not LONE_SURROGATE.search(data):
        return None
    if object_page and data.lstrip(b" \t\r\n").startswith(b"{"):
        return [] if shallow_members(data) is not None else None
    return element_spans(data)


def shallow_members(data: bytes) -> dict[bytes, bytes] | None:
    """The JSON object ``data``'s members, key text -> value text, found without recursion
    (the last of repeated keys counts); None if ``data`` is no balanced object."""
    text = data.strip(b" \t\r\n")
    if not (text.startswith(b"{") and text.endswith(b"}")):
        return None
    body = b"[" + text[1:-1] + b"]"
    spans = element_spans(body)
    if spans is None:
        return None
    members = {}
    for start, end in spans:
        member = _MEMBER.fullmatch(body[start:end])
        if member is None:
            return None
        members[member.group(1)] = member.group(2)
    return members


def too_deep_member(raw: bytes) -> str | None:
    """The key of the record's first top-level member nested too deeply to read, if any."""
    for key, value in (shallow_members(raw) or {}).items():
        try:
            msgspec.json.decode(value)
        except RecursionError:
            return key.decode("utf-8", "backslashreplace")
        except DECODE_FAILURES:
            continue
    return None


_MEMBER = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*:\s*(.+)', re.S)


_PLACEHOLDER = b"\\uE000"  # as long as a surrogate escape; a private-use character


def without_lone_surrogates(raw: bytes) -> bytes:
    """``raw`` with each lone surrogate escape replaced by a valid one of the same length."""
    return LONE_SURROGATE.sub(lambda _: _PLACEHOLDER, raw)


def surrogate_field(raw: bytes) -> str | None:
    """The dotted path of the first string of the record ``raw`` that holds a lone surrogate
    escape (``contact.name``), or None if it is not in a string value of an object."""
    try:
        record = msgspec.json.decode(without_lone_surrogates(raw))
    except DECODE_FAILURES:
        return None
    marker = "\ue000"
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, str) and marker in value and path:
            return path
    return None
