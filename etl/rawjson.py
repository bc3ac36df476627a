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


_QUOTE, _BACKSLASH, _COMMA, _COLON = 0x22, 0x5C, 0x2C, 0x3A
_OPENERS, _CLOSERS = frozenset(b"[{"), frozenset(b"]}")
_SPACE = b" \t\r\n"


def element_spans(data: bytes, *, members: bool = False) -> list[tuple[int, int]] | None:
    """(start, end) of each element of the JSON array ``data``, found by matching brackets and
    quotes without recursion, or None if ``data`` is no balanced array. For a page the parser
    refuses as a whole only for what lies inside one record (a string no Unicode text can
    hold, nesting deeper than it allows): its records can still be told apart. With
    ``members``, each element is an object's ``"key": value``."""
    begin = len(data) - len(data.lstrip(_SPACE))
    last = len(data.rstrip(_SPACE)) - 1  # the closing bracket
    if last <= begin or data[begin] != ord("[") or data[last] != ord("]"):
        return None
    spans: list[tuple[int, int]] = []
    depth, in_string, escaped, start, end = 0, False, False, -1, -1
    closed = False  # the element at depth 0 has ended: only a comma may follow
    keyed = False  # a member's colon was read: its value comes next
    for at in range(begin + 1, last):
        byte = data[at]
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
                closed = depth == 0
            end = at + 1
            continue
        if byte in _SPACE:
            closed = closed or (depth == 0 and start >= 0 and not keyed)
            continue
        if depth == 0:
            if byte == _COMMA:
                if start < 0:
                    return None  # an empty element
                spans.append((start, end))
                start, closed = -1, False
                continue
            if closed and members and byte == _COLON:
                closed, keyed = False, True  # the key's value follows
                continue
            keyed = False
            if closed:
                return None  # a second value without a comma before it
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
            closed = depth == 0
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
    kind whose page may be one). None when anything else is wrong with the page: every record
    must parse once its lone surrogates are replaced (those nested too deeply excepted), and
    the page must be a well-formed array or object of them (the file fails)."""
    sanitized = without_lone_surrogates(data)  # as long as ``data``: the offsets hold
    if not isinstance(error, RecursionError) and sanitized == data:
        return None
    if object_page and sanitized.lstrip(b" \t\r\n").startswith(b"{"):
        return [] if parses(sanitized) else None
    spans = element_spans(sanitized)
    if spans is None or not all(parses(sanitized[start:end]) for start, end in spans):
        return None
    return spans


def parses(text: bytes) -> bool:
    """Whether ``text`` is one JSON value, or one whose fault is its record's own (nested too
    deeply to tell, or not UTF-8)."""
    try:
        msgspec.json.decode(text)
    except RecursionError:
        return True
    except DECODE_FAILURES:
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False
    return True


def sanitized_error(data: bytes) -> Exception | None:
    """What the parser says of ``data`` once its lone surrogates are replaced: the page's other
    fault, if it has one."""
    try:
        msgspec.json.decode(without_lone_surrogates(data))
    except DECODE_FAILURES as error:
        return error
    return None


def shallow_members(data: bytes) -> dict[bytes, bytes] | None:
    """The JSON object ``data``'s members, key text -> value text, found without recursion
    (the last of repeated keys counts); None if ``data`` is no balanced object."""
    text = data.strip(b" \t\r\n")
    if not (text.startswith(b"{") and text.endswith(b"}")):
        return None
    body = b"[" + text[1:-1] + b"]"
    spans = element_spans(body, members=True)
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
    return marked_field(without_lone_surrogates(raw))


def invalid_utf8_field(raw: bytes) -> str | None:
    """The dotted path of the first string of the record ``raw`` that holds bytes that are not
    UTF-8, or None if they are not in a string value of an object."""
    text = raw.decode("utf-8", "surrogateescape")
    return marked_field(_ESCAPED_BYTE.sub(_MARKER, text).encode())


_MARKER = "\ue000"  # a private-use character, put where a string was not valid
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]+")


def marked_field(record_text: bytes) -> str | None:
    """The dotted path of the first string value of the record that holds the marker."""
    try:
        record = msgspec.json.decode(record_text)
    except DECODE_FAILURES:
        return None
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, str) and _MARKER in value and path:
            return path
    return None
