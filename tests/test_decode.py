"""Decode stage: typed fast path, per-record fallback, exact messages, file-level failures."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from etl import BATCH_VALUES
from etl.batches import Records, RowBatches
from etl.decode import decode_files, iter_records
from etl.errors import InputError
from etl.quarantine import probe_id
from etl.records import AGENT, AGENT_DETAILS, POSITION_FIELDS, ROLE, RecordError
from etl.source import InputFile
from etl.timestamps import RFC3339


def page(records: list[object] | object, name: str = "sync-d/roles/1.json") -> InputFile:
    return InputFile(name, json.dumps(records).encode())


def role(**fields: object) -> dict[str, object]:
    return {"id": 1, "name": "Agent", **fields}


def test_fast_path_decodes_every_field_with_positions() -> None:
    """A clean page yields one row per record with its file, index, JSON path and ordinal (its
    position in decode order)."""
    decoded = decode_files(
        ROLE,
        [
            page(
                [
                    role(
                        description="d",
                        default=True,
                        agent_type=3,
                        agent_ids=[5, 6],
                        created_at="2022-02-09T17:14:12Z",
                        updated_at="2022-02-09T19:14:12.5+02:00",
                    ),
                    role(id=2, name="Admin"),
                ]
            )
        ],
    )
    assert decoded.errors == []
    assert decoded.records.frame().to_dicts() == [
        {
            "role_id": 1,
            "name": "Agent",
            "description": "d",
            "is_default": True,
            "agent_type": 3,
            "agent_ids": [5, 6],
            "created_at": datetime(2022, 2, 9, 17, 14, 12, tzinfo=UTC),
            "updated_at": datetime(2022, 2, 9, 17, 14, 12, 500000, tzinfo=UTC),
            "source_file": "sync-d/roles/1.json",
            "record_index": 0,
            "record_path": "$[0]",
            "ordinal": 0,
        },
        {
            "role_id": 2,
            "name": "Admin",
            "description": None,
            "is_default": None,
            "agent_type": None,
            "agent_ids": None,
            "created_at": None,
            "updated_at": None,
            "source_file": "sync-d/roles/1.json",
            "record_index": 1,
            "record_path": "$[1]",
            "ordinal": 1,
        },
    ]


def test_agent_contact_is_flattened_and_may_be_missing() -> None:
    """contact.name/email/active become columns; a missing contact leaves them null."""
    decoded = decode_files(
        AGENT,
        [
            page(
                [
                    {
                        "id": 7,
                        "deactivated": False,
                        "contact": {"active": False, "name": "A", "email": "a@x"},
                    },
                    {"id": 8},
                ],
                "sync-d/agents/1.json",
            )
        ],
    )
    assert [
        (r["agent_id"], r["name"], r["email"], r["deactivated"], r["contact_active"])
        for r in decoded.records.frame().to_dicts()
    ] == [(7, "A", "a@x", False, False), (8, None, None, None, None)]


@pytest.mark.parametrize(
    ("record", "field", "message", "record_id"),
    [
        ({"name": "x"}, "id", "$[1].id: Object missing required field `id`", None),
        ({"id": None, "name": "x"}, "id", "$[1].id: Expected `int`, got `null`", None),
        ({"id": "9", "name": "x"}, "id", "$[1].id: Expected `int`, got `str`", None),
        ({"id": 9.0, "name": "x"}, "id", "$[1].id: Expected `int`, got `float`", None),
        ({"id": True, "name": "x"}, "id", "$[1].id: Expected `int`, got `bool`", None),
        ({"id": 0, "name": "x"}, "id", "$[1].id: Expected `int` >= 1", None),
        ({"id": 2**63, "name": "x"}, "id", "$[1].id: Expected `int` <= 9223372036854775807", None),
        (
            {"id": 9, "name": ""},
            "name",
            "$[1].name: Expected a non-empty `str`, got an empty or blank one",
            9,
        ),
        (
            {"id": 9, "name": "  "},
            "name",
            "$[1].name: Expected a non-empty `str`, got an empty or blank one",
            9,
        ),
        ({"id": 9, "name": None}, "name", "$[1].name: Expected `str`, got `null`", 9),
        (
            {"id": 9, "name": "x", "agent_type": "1"},
            "agent_type",
            "$[1].agent_type: Expected `int | null`, got `str`",
            9,
        ),
        (
            {"id": 9, "name": "x", "default": "yes"},
            "default",
            "$[1].default: Expected `bool | null`, got `str`",
            9,
        ),
        (
            {"id": 9, "name": "x", "agent_ids": "1,2"},
            "agent_ids",
            "$[1].agent_ids: Expected `array | null`, got `str`",
            9,
        ),
        (
            {"id": 9, "name": "x", "updated_at": "yesterday"},
            "updated_at",
            '$[1].updated_at: Expected an ISO-8601 timestamp, got "yesterday"',
            9,
        ),
        (
            {"id": 9, "name": "x", "created_at": "2022-02-30T00:00:00Z"},
            "created_at",
            '$[1].created_at: Expected an ISO-8601 timestamp, got "2022-02-30T00:00:00Z"',
            9,
        ),
        (
            {"id": 9, "name": "x", "created_at": 1644426852},
            "created_at",
            "$[1].created_at: Expected `str | null`, got `int`",
            9,
        ),
        (
            {"id": 9, "name": "x", "agent_ids": [None], "updated_at": "bad"},
            "updated_at",
            '$[1].updated_at: Expected an ISO-8601 timestamp, got "bad"',
            9,
        ),
        (
            {"id": 9, "name": 7, "agent_ids": [None]},
            "name",
            "$[1].name: Expected `str`, got `int`",
            9,
        ),
        ({"id": 9, "name": {"first": "x"}}, "name", "$[1].name: Expected `str`, got `object`", 9),
        (5, None, "$[1]: Expected `object`, got `int`", None),
    ],
)
def test_bad_record_is_quarantined_alone(
    record: object, field: str | None, message: str, record_id: int | None
) -> None:
    """A record of the wrong shape costs only itself, with field, expected and got."""
    decoded = decode_files(ROLE, [page([role(), record, role(id=3)])])
    assert [r["role_id"] for r in decoded.records.frame().to_dicts()] == [1, 3]
    assert decoded.errors == [
        RecordError("role", "VALIDATION_ERROR", field, message, record_id, "sync-d/roles/1.json", 1)
    ]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": 1, "contact": "x"}, "$[0].contact: Expected `object | null`, got `str`"),
        (
            {"id": 1, "contact": {"active": "no"}},
            "$[0].contact.active: Expected `bool | null`, got `str`",
        ),
        ({"id": 1, "deactivated": "false"}, "$[0].deactivated: Expected `bool | null`, got `str`"),
    ],
)
def test_agent_wrong_types(record: object, message: str) -> None:
    """Agents' nested and boolean fields are type-checked too."""
    decoded = decode_files(AGENT, [page([record], "a.json")])
    assert [e.message for e in decoded.errors] == [message]


def test_bad_mapping_elements_are_reported_and_nulled_in_place() -> None:
    """Null and non-integer elements are INVALID_MAPPING; the record and the rest still load."""
    decoded = decode_files(ROLE, [page([role(agent_ids=[5, None, "6", 1.5, 2**64, 7])])])
    assert decoded.records.frame().get_column("agent_ids").to_list() == [
        [5, None, None, None, None, 7]
    ]
    assert [(e.error_type, e.field, e.message, e.record_id) for e in decoded.errors] == [
        (
            "INVALID_MAPPING",
            "agent_ids[1]",
            "$[0].agent_ids[1]: Expected an integer id in 1..2^63-1, got null",
            1,
        ),
        (
            "INVALID_MAPPING",
            "agent_ids[2]",
            '$[0].agent_ids[2]: Expected an integer id in 1..2^63-1, got "6"',
            1,
        ),
        (
            "INVALID_MAPPING",
            "agent_ids[3]",
            "$[0].agent_ids[3]: Expected an integer id in 1..2^63-1, got 1.5",
            1,
        ),
        (
            "INVALID_MAPPING",
            "agent_ids[4]",
            "$[0].agent_ids[4]: Expected an integer id in 1..2^63-1, got 18446744073709551616",
            1,
        ),
    ]


def test_agent_details_page_may_be_an_object_or_an_array() -> None:
    """agent_details files hold one object (path $) or an array of them."""
    decoded = decode_files(
        AGENT_DETAILS,
        [
            page({"id": 1, "role_ids": [2]}, "d/1.json"),
            page([{"id": 3, "role_ids": []}, {"id": 4}], "d/2.json"),
        ],
    )
    assert [
        (r["agent_id"], r["role_ids"], r["record_path"]) for r in decoded.records.frame().to_dicts()
    ] == [(1, [2], "$"), (3, [], "$[0]"), (4, None, "$[1]")]


def test_object_page_errors_use_the_root_path() -> None:
    """A bad element in a one-object details file is located at $.role_ids[i]."""
    decoded = decode_files(AGENT_DETAILS, [page({"id": 1, "role_ids": [2, "x"]}, "d/1.json")])
    assert [e.message for e in decoded.errors] == [
        '$.role_ids[1]: Expected an integer id in 1..2^63-1, got "x"'
    ]


def test_utf8_byte_order_mark_is_accepted() -> None:
    """A page saved with a UTF-8 BOM decodes like one without."""
    decoded = decode_files(
        ROLE, [InputFile("r.json", b"\xef\xbb\xbf" + json.dumps([role()]).encode())]
    )
    assert decoded.records.frame().get_column("role_id").to_list() == [1]


def test_invalid_utf8_inside_a_record_quarantines_that_record() -> None:
    """Invalid UTF-8 in one record's string costs that record only, and the error names the
    field that holds it, nested ones too."""
    data = (
        b'[{"id":1,"name":"ok"},{"id":2,"name":"\xff"},{"id":3,"name":"r","description":"a\xc3"}]'
    )
    decoded = decode_files(ROLE, [InputFile("r.json", data)])
    assert decoded.records.frame().get_column("role_id").to_list() == [1]
    assert [(e.record_id, e.field, e.message) for e in decoded.errors] == [
        (2, "name", "$[1].name: invalid UTF-8 in a string (invalid start byte)"),
        (
            3,
            "description",
            "$[2].description: invalid UTF-8 in a string (invalid continuation byte)",
        ),
    ]
    agents = b'[{"id":7,"contact":{"name":"x","email":"e\xe2\x82"}}]'
    decoded = decode_files(AGENT, [InputFile("a.json", agents)])
    assert [(e.record_id, e.field, e.message) for e in decoded.errors] == [
        (
            7,
            "contact.email",
            "$[0].contact.email: invalid UTF-8 in a string (invalid continuation byte)",
        )
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "r.json: not valid JSON: the file is empty (byte 0)"),
        (
            b'[{"id":1,"name":"a"},{"id":2',
            "r.json: not valid JSON: input ends early, truncated at byte 28 (end of file)",
        ),
        (
            b'[{"id":1,"name":"a"},]',
            "r.json: not valid JSON: JSON is malformed: trailing comma in array (byte 21)",
        ),
        (
            b'\xef\xbb\xbf[{"id":1,]',
            "r.json: not valid JSON: JSON is malformed: expected '\"' (byte 12)",
        ),
        (
            b'{"id":1,"name":"a"}',
            "r.json: top level is an object, expected an array of roles records",
        ),
        (b'"roles"', "r.json: top level is a string, expected an array of roles records"),
        (  # a lone surrogate does not save a page that is no array of records: the page's
            # other fault is named
            b'[{"id":1,"name":"\\ud800"},',
            "r.json: not valid JSON: input ends early, truncated at byte 26 (end of file)",
        ),
        (
            b'[{"id":1,"name":"\\ud800"}}]',
            "r.json: not valid JSON: JSON is malformed: expected ',' or ']' (byte 25)",
        ),
        (  # two records without a comma between them, one with a lone surrogate
            b'[{"id":1} {"id":2,"name":"\\ud800"}]',
            "r.json: not valid JSON: JSON is malformed: expected ',' or ']' (byte 10)",
        ),
        (  # an escaped backslash before "ud800" is no surrogate: the missing comma is named
            b'[{"id":1,"name":"\\\\ud800"},{"id":2 "name":"b"}]',
            "r.json: not valid JSON: JSON is malformed: expected ',' or '}' (byte 35)",
        ),
    ],
)
def test_page_that_cannot_be_split_fails_the_file(data: bytes, message: str) -> None:
    """Not JSON, truncated, or the wrong top level: InputError naming file and byte offset."""
    with pytest.raises(InputError) as caught:
        decode_files(ROLE, [InputFile("r.json", data)])
    assert str(caught.value) == message


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 64])
def test_a_lone_surrogate_escape_quarantines_its_record_only(chunk_bytes: int) -> None:
    """A lone surrogate escape is valid JSON grammar but no Unicode text: the record holding it
    is quarantined with the field named, and the rest of its page loads (also when the page is
    read in chunks)."""
    data = (
        b'[{"id":1,"name":"a"},{"id":2,"name":"b\\ud800c"},'
        b'{"id":3,"name":"c","description":"\\udc00"},{"id":4,"name":"\\ud83d\\ude00"}]'
    )
    decoded = decode_files(ROLE, [InputFile("r.json", data)], chunk_bytes=chunk_bytes)
    assert decoded.records.frame().get_column("role_id").to_list() == [1, 4]
    surrogate = "in a string is not valid Unicode; PostgreSQL text cannot hold it"
    assert decoded.errors == [
        RecordError(
            "role",
            "VALIDATION_ERROR",
            "name",
            f"$[1].name: lone surrogate escape \\ud800 {surrogate}",
            2,
            "r.json",
            1,
        ),
        RecordError(
            "role",
            "VALIDATION_ERROR",
            "description",
            f"$[2].description: lone surrogate escape \\udc00 {surrogate}",
            3,
            "r.json",
            2,
        ),
    ]
    raw = [bytes(r) for _, _, r in iter_records(ROLE, InputFile("r.json", data), chunk_bytes)]
    assert raw[1] == b'{"id":2,"name":"b\\ud800c"}'


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 4096])
def test_a_record_nested_deeper_than_the_parser_allows_is_quarantined(chunk_bytes: int) -> None:
    """3,000 levels of nesting, in a field etl reads or in one it ignores, cost their record
    only: no RecursionError reaches the user."""
    data = (
        b'[{"id":1,"name":"a"},{"id":2,"name":"b","extra":' + deep(3000) + b"},"
        b'{"id":3,"name":' + deep(3000) + b'},{"id":4,"name":"d"}]'
    )
    decoded = decode_files(ROLE, [InputFile("r.json", data)], chunk_bytes=chunk_bytes)
    assert decoded.records.frame().get_column("role_id").to_list() == [1, 4]
    too_deep = "nested too deeply to read (deeper than the JSON parser allows)"
    assert [(e.field, e.message, e.record_id, e.record_index) for e in decoded.errors] == [
        ("extra", f"$[1].extra: {too_deep}", 2, 1),
        ("name", "$[2].name: Expected `str`, got `array`", 3, 2),
    ]


def test_a_details_file_nested_too_deeply_is_one_quarantined_record() -> None:
    """An agent_details page that is one object, nested too deeply: its one record is
    quarantined, the file's others load."""
    files = [
        InputFile("d/1.json", b'{"id": 1, "role_ids": [], "more": ' + deep(3000) + b"}"),
        InputFile("d/2.json", b'{"id": 2, "role_ids": [5]}'),
    ]
    decoded = decode_files(AGENT_DETAILS, files)
    assert decoded.records.frame().get_column("agent_id").to_list() == [2]
    assert [(e.source_file, e.message) for e in decoded.errors] == [
        ("d/1.json", "$.more: nested too deeply to read (deeper than the JSON parser allows)")
    ]


def test_agent_details_top_level_must_be_object_or_array() -> None:
    """A scalar details file is a file-level failure."""
    with pytest.raises(
        InputError,
        match=r"^d.json: top level is a number, expected an object "
        r"or an array of objects of agent_details records$",
    ):
        decode_files(AGENT_DETAILS, [InputFile("d.json", b"42")])


def test_iter_records_returns_exact_raw_text() -> None:
    """Each record's raw text is byte-for-byte what the file holds, spacing and key order kept."""
    data = b'[ {"name":"a",  "id":1} ,\n{"id":2,"name":"b","id":3}]'
    assert [(p, bytes(r)) for _, p, r in iter_records(ROLE, InputFile("r.json", data))] == [
        ("$[0]", b'{"name":"a",  "id":1}'),
        ("$[1]", b'{"id":2,"name":"b","id":3}'),
    ]


def test_duplicate_keys_in_an_object_keep_the_last() -> None:
    """Of repeated keys in one object the last counts, as in most JSON parsers."""
    decoded = decode_files(ROLE, [InputFile("r.json", b'[{"id":2,"name":"b","id":3}]')])
    assert decoded.records.frame().get_column("role_id").to_list() == [3]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"id": 5}', 5),
        (b'{"id": "5"}', None),
        (b'{"id": 0}', None),
        (b"[1]", None),
        (b'{"id": true}', None),
        (b'{"id": 9223372036854775808}', None),
    ],
)
def test_probe_id_reads_only_valid_ids(raw: bytes, expected: int | None) -> None:
    """An error row carries the record's id only when it is a valid id."""
    assert probe_id(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-02-09T17:14:12Z", datetime(2022, 2, 9, 17, 14, 12, tzinfo=UTC)),
        ("2022-02-09T19:14:12+02", datetime(2022, 2, 9, 17, 14, 12, tzinfo=UTC)),
        ("2022-02-09T17:14Z", datetime(2022, 2, 9, 17, 14, tzinfo=UTC)),
        ("20220209T171412Z", datetime(2022, 2, 9, 17, 14, 12, tzinfo=UTC)),
        ("2022-02-09T17:14:12,5Z", datetime(2022, 2, 9, 17, 14, 12, 500000, tzinfo=UTC)),
        ("2022-02-09 17:14:12", datetime(2022, 2, 9, 17, 14, 12, tzinfo=UTC)),
        ("2022-02-09", datetime(2022, 2, 9, tzinfo=UTC)),
    ],
)
def test_iso8601_timestamps_beyond_rfc3339_are_accepted(text: str, expected: datetime) -> None:
    """Offsets without minutes, no seconds, basic format, decimal comma, date only: all load;
    a timestamp without an offset is UTC."""
    decoded = decode_files(AGENT, [page([{"id": 1, "updated_at": text}], "a.json")])
    assert decoded.errors == []
    assert decoded.records.frame().get_column("updated_at").to_list() == [expected]


def test_row_batches_count_mapping_elements_toward_the_batch() -> None:
    """Rows move into a batch once rows plus their mapping elements reach the batch size, so a
    few records holding millions of ids never pile up as Python objects; ordinals run on across
    batches."""
    records = Records(pa.schema(list(ROLE.schema) + POSITION_FIELDS))
    rows = RowBatches(ROLE, records, batch_values=10, errors=[])
    with_ids = (1, "a", None, None, None, [1, 2, 3, 4], None, None, "f", 0, "$[0]")
    rows.append(with_ids)
    assert (len(rows.pending), list(records.batches())) == (1, [])
    rows.extend([with_ids])  # 2 rows + 8 ids
    assert (len(rows.pending), [f.height for f in records.batches()]) == (0, [2])
    rows.extend([(2, "b", None, None, None, None, None, None, "f", 1, "$[1]")])
    rows.close()
    assert [f.get_column("ordinal").to_list() for f in records.batches()] == [[0, 1], [2]]
    assert records.frame().get_column("role_id").to_list() == [1, 1, 2]


def test_rows_appended_one_at_a_time_are_cut_as_a_page_would_be() -> None:
    """Appending row by row (one file per record) cuts the same batches as moving a page's rows
    at once: a batch holds at most ``batch_values`` values unless one row holds more."""

    def role_row(n: int, ids: int) -> tuple[Any, ...]:
        return (n, "r", None, None, None, list(range(ids)) or None, None, None, "f", n, "$")

    sizes = [4, 4, 9, 1, 9, 0, 0]  # values per row: 5, 5, 10, 2, 10, 1, 1
    appended = Records(pa.schema(list(ROLE.schema) + POSITION_FIELDS))
    rows = RowBatches(ROLE, appended, batch_values=10, errors=[])
    for n, ids in enumerate(sizes):
        rows.append(role_row(n, ids))
    rows.close()
    at_once = Records(pa.schema(list(ROLE.schema) + POSITION_FIELDS))
    rows = RowBatches(ROLE, at_once, batch_values=10, errors=[])
    rows.extend(role_row(n, ids) for n, ids in enumerate(sizes))
    rows.close()
    assert [f.get_column("role_id").to_list() for f in appended.batches()] == [
        [0, 1],
        [2],
        [3],
        [4],
        [5, 6],
    ]
    assert [f.get_column("role_id").to_list() for f in at_once.batches()] == [
        [0, 1],
        [2],
        [3],
        [4],
        [5, 6],
    ]
    assert appended.frame().equals(at_once.frame())


def test_spilled_records_are_read_back_one_batch_at_a_time(tmp_path: Path) -> None:
    """With ``spill``, decoded batches go to an Arrow IPC file and come back, batch by batch,
    exactly as they would have stayed in memory."""
    ids = list(range(1, BATCH_VALUES // 2 + 1))  # two records of them would overfill a batch
    pages = [page([role(id=n, agent_ids=ids)], f"{n}.json") for n in (1, 2, 3)]
    in_memory = decode_files(ROLE, pages)
    spilled = decode_files(ROLE, pages, spill=tmp_path / "roles.arrow")
    assert spilled.records.in_memory == []
    assert (tmp_path / "roles.arrow").read_bytes().startswith(b"ARROW1")
    assert [b.height for b in spilled.records.batches()] == [1, 1, 1]
    assert spilled.records.frame().equals(in_memory.records.frame())
    assert spilled.records.gather(lambda b: b.select("ordinal")).to_series().to_list() == [0, 1, 2]


def test_records_of_one_batch_stay_in_memory_even_with_a_spill_file(tmp_path: Path) -> None:
    """Records that fit in one batch are never written: the file would cost its writing and its
    rereading on every pass, and one batch is what memory holds anyway."""
    pages = [page([role(id=n, agent_ids=[1, 2])], f"{n}.json") for n in (1, 2, 3)]
    decoded = decode_files(ROLE, pages, spill=tmp_path / "roles.arrow")
    assert not (tmp_path / "roles.arrow").exists()
    assert [b.height for b in decoded.records.batches()] == [3]
    assert decoded.records.frame().equals(decode_files(ROLE, pages).records.frame())


def test_a_page_is_cut_into_batches_of_at_most_the_batch_size() -> None:
    """Records of one clean page go into batches of at most ``batch_values`` values, so that a
    small batch size really splits a page (a record is never split)."""
    decoded = decode_files(ROLE, [page([role(id=n) for n in range(1, 6)])], batch_values=2)
    assert [b.get_column("role_id").to_list() for b in decoded.records.batches()] == [
        [1, 2],
        [3, 4],
        [5],
    ]
    big = decode_files(ROLE, [page([role(id=1, agent_ids=[5, 6, 7]), role(id=2)])], batch_values=2)
    assert [b.height for b in big.records.batches()] == [1, 1]
    agents = [{"id": n} for n in range(1, 8)]  # no mapping array: batches cut by row count
    decoded = decode_files(AGENT, [page(agents[:4]), page(agents[4:])], batch_values=3)
    assert [b.get_column("agent_id").to_list() for b in decoded.records.batches()] == [
        [1, 2, 3],
        [4, 5, 6],
        [7],
    ]
    assert decoded.records.frame().get_column("ordinal").to_list() == list(range(7))


def _rfc3339_variants(count: int) -> list[str]:
    """Timestamps near and beyond the text parsed a batch at a time: leap days, seven decimals,
    lower-case separators, no offset, offsets up to a day, years out of 1900-2999; and two
    more (a final newline, Arabic-Indic digits)."""
    rng = random.Random(7)
    texts = []
    for _ in range(count):
        year = rng.choice([rng.randint(1900, 2999), rng.randint(1, 9999)])
        text = f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d}"
        text += f"{rng.choice('Tt')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        text += f":{rng.randint(0, 59):02d}"
        if rng.random() < 0.5:
            text += "." + str(rng.randint(0, 10**9)).zfill(9)[: rng.randint(1, 7)]
        offset = f"{rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        text += rng.choice(["Z", "z", "", offset])
        texts.append(text)
    # Where two regular expression engines could differ: a final newline, digits beyond ASCII.
    return [*texts, "2024-01-02T03:04:05Z\n", "2\u0660\u0662\u0664-01-02T03:04:05Z"]


@pytest.mark.parametrize("batch_values", [500, 150])  # matched by Arrow; by Python's re
def test_timestamps_parsed_a_batch_at_a_time_are_msgspecs_instants(batch_values: int) -> None:
    """Timestamp text is parsed a batch at a time, RFC 3339 text by Arrow: every value is the
    instant msgspec's RFC 3339 parser reads (or Python's ISO-8601 one, where msgspec cannot),
    and text neither can read costs its record alone. Small batches find their RFC 3339 text
    with Python's regular expressions instead of Arrow's, to the same effect."""
    texts = _rfc3339_variants(4000)
    fast = [t for t in texts if re.match(RFC3339, t)]
    assert 400 < len(fast) < len(texts) - 400  # both ways are taken
    records = [{"id": n + 1, "updated_at": text} for n, text in enumerate(texts)]
    decoded = decode_files(AGENT, [page(records, "a.json")], batch_values=batch_values)

    def instant(text: str) -> datetime | None:
        try:
            value = msgspec.convert(text, datetime)
        except msgspec.ValidationError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                return None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    expected = {n + 1: instant(text) for n, text in enumerate(texts)}
    rows = decoded.records.frame().select("agent_id", "updated_at").rows()
    assert dict(rows) == {i: v for i, v in expected.items() if v is not None}
    assert [(e.record_id, e.field) for e in decoded.errors] == [
        (i, "updated_at") for i, v in expected.items() if v is None
    ]


def test_a_record_with_two_bad_timestamps_is_reported_by_the_first() -> None:
    """As a record decoded alone would be: created_at before updated_at."""
    bad = role(id=2, created_at="soon", updated_at="later")
    decoded = decode_files(ROLE, [page([role(), bad, role(id=3)])])
    assert decoded.records.frame().get_column("ordinal").to_list() == [0, 1]
    assert decoded.errors == [
        RecordError(
            "role",
            "VALIDATION_ERROR",
            "created_at",
            '$[1].created_at: Expected an ISO-8601 timestamp, got "soon"',
            2,
            "sync-d/roles/1.json",
            1,
        )
    ]


def test_timestamps_of_leniently_decoded_records_join_the_batch() -> None:
    """A record decoded on its own (a bad mapping element) keeps the timestamps Python parsed for
    it, beside text parsed a batch at a time and text that is no timestamp."""
    records = [
        role(created_at="2022-02-09T17:14:12Z"),
        role(id=2, agent_ids=[None], created_at="2022-02-09T19:14:12+02"),
        role(id=3, created_at="2024-02-29T00:00:00.1234567+01:00"),
        role(id=4, created_at="never"),
    ]
    decoded = decode_files(ROLE, [page(records)])
    assert decoded.records.frame().select("role_id", "created_at").rows() == [
        (1, datetime(2022, 2, 9, 17, 14, 12, tzinfo=UTC)),
        (2, datetime(2022, 2, 9, 17, 14, 12, tzinfo=UTC)),
        (3, datetime(2024, 2, 28, 23, 0, 0, 123457, tzinfo=UTC)),
    ]
    assert [(e.record_id, e.error_type, e.field) for e in decoded.errors] == [
        (2, "INVALID_MAPPING", "agent_ids[0]"),
        (4, "VALIDATION_ERROR", "created_at"),
    ]
