"""Hostile input, fuzzed: every record is loaded or accounted for, nothing crashes.

Pages are built from valid records whose fields are swapped for hostile values: wrong JSON types,
nesting where scalars belong, integers beyond 64 bits, floats for ids, empty and blank names,
NUL and other control characters, lone surrogates, very long strings, huge arrays, a byte-order
mark, invalid UTF-8, repeated keys. ETL_FUZZ_EXAMPLES raises the number of cases (CI: 1,000
through decode and plan, 25 end to end on PostgreSQL); the totals are printed in the summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
from conftest import FUZZ_CASES, fresh_database, rows, write_day
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from etl import db
from etl.bad_records import attach_raw
from etl.cli import main
from etl.decode import Decoded, decode_files
from etl.errors import InputError
from etl.pages import BOM
from etl.plan import Plan, plan_agents, plan_groups, plan_roles
from etl.rawjson import element_spans
from etl.records import AGENT, AGENT_DETAILS, GROUP, ROLE, RecordKind
from etl.source import InputFile

EXAMPLES = int(os.environ.get("ETL_FUZZ_EXAMPLES", "1000"))
INVALID_UTF8 = "\x01INVALID-UTF8\x01"  # replaced by the bytes \xff\xfe once encoded
TOO_DEEP = "\x01TOO-DEEP\x01"  # replaced by arrays nested 3,000 deep once encoded

HOSTILE = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            2**63,
            2**64 + 7,
            -(2**63) - 1,
            1.0,
            1e300,
            "",
            " \t\n",
            "12",
            "a\x00b",
            "\x07\x1b[31m",
            "\ud800",
            "x" * 100_000,
            INVALID_UTF8,
            TOO_DEEP,
            [],
            [None],
            [1, "2", 3.5, None, [4], {"id": 5}],
            list(range(1, 20_001)),
            {},
            {"nested": {"deeper": [1, 2]}},
            "'; DROP TABLE etl.groups; --",
            "2026-02-30T25:61:00Z",
            "2026-01-05T10:00:00+02",
        ]
    ),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)

VALID: dict[str, dict[str, Any]] = {
    "agent": {
        "id": 1,
        "deactivated": False,
        "contact": {"active": True, "name": "n", "email": "e"},
        "updated_at": "2026-01-01T00:00:00Z",
    },
    "agent_details": {"id": 1, "role_ids": [10, 11], "updated_at": "2026-01-01T00:00:00Z"},
    "role": {"id": 10, "name": "r", "default": False, "agent_type": 1, "agent_ids": [1, 2]},
    "group": {"id": 100, "name": "g", "parent_group_id": 101, "agent_ids": [1, 2]},
}
KINDS = {k.name: k for k in (AGENT, AGENT_DETAILS, ROLE, GROUP)}


@st.composite
def hostile_record(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A valid record of ``kind`` with some fields (contact's too) swapped for hostile values."""
    record = json.loads(json.dumps(VALID[kind]))
    record["id"] = draw(st.one_of(st.integers(1, 5), HOSTILE))
    for field in draw(st.sets(st.sampled_from(sorted(VALID[kind])))):
        record[field] = draw(HOSTILE)
    if kind == "agent" and isinstance(record.get("contact"), dict) and draw(st.booleans()):
        # A new dict: the contact may be one of HOSTILE's own objects, which must not change
        # (it could end up holding itself).
        field = draw(st.sampled_from(["active", "name", "email"]))
        record["contact"] = {**record["contact"], field: draw(HOSTILE)}
    return record


@st.composite
def hostile_page(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(record kind, page bytes, whether the page as a whole must fail)."""
    kind = draw(st.sampled_from(sorted(VALID)))
    records = draw(st.lists(hostile_record(kind), max_size=6))
    ascii_only = draw(st.booleans())
    text = json.dumps(records, ensure_ascii=ascii_only)
    if records and draw(st.booleans()):  # a repeated key: the last one counts
        text = text.replace("{", '{"id": "first", ', 1)
    data = (
        text.encode("utf-8", "surrogatepass")
        .replace(json.dumps(INVALID_UTF8)[1:-1].encode(), b"\xff\xfe")
        .replace(json.dumps(TOO_DEEP).encode(), b"[" * 3000 + b"]" * 3000)
    )
    if draw(st.booleans()):
        data = BOM + data
    # A lone surrogate, escaped (\\ud800) or written as is (invalid UTF-8), costs its record.
    must_fail = False
    if draw(st.integers(0, 9)) == 0:  # a page that is no array of records at all
        data = draw(st.sampled_from([b"", b" \n", b"[1, 2", b"null", b'"text"', b'{"id": 1}']))
        must_fail = not (kind == "agent_details" and data == b'{"id": 1}')
    return kind, data, must_fail


def plan_page(kind: RecordKind, file: InputFile) -> tuple[Plan, dict[str, list[InputFile]]]:
    """Decode and plan one page as its entity would, with agents 1..3 and group 101 stored."""
    known = pa.array([1, 2, 3], pa.int64())
    none: list[InputFile] = []
    if kind is AGENT:
        return plan_agents(decode_files(AGENT, [file])), {"agent": [file]}
    if kind is GROUP:
        stored = pa.table(
            {"group_id": [101], "parent_group_id": [None], "present": [True]},
            schema=pa.schema(
                [("group_id", pa.int64()), ("parent_group_id", pa.int64()), ("present", pa.bool_())]
            ),
        )
        return plan_groups(decode_files(GROUP, [file]), known, stored), {"group": [file]}
    roles = [file] if kind is ROLE else none
    details = [file] if kind is AGENT_DETAILS else none
    plan = plan_roles(decode_files(ROLE, roles), decode_files(AGENT_DETAILS, details), known, known)
    return plan, {"role": roles, "agent_details": details}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_page())
@example(("agent", b'[{"id": 1, "contact": "\\ud800\\udc00"}]', False))  # a valid pair
@example(("role", b'[{"id": 1, "name": "\\ud800"}, {"id": 2, "name": "b"}]', False))
@example(("group", b'[{"id": 1, "name": "a", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}]", False))
def test_hostile_pages_never_crash_and_every_record_is_accounted_for(
    page: tuple[str, bytes, bool],
) -> None:
    """A page either fails as a whole with an InputError naming the file (no JSON array), or
    every record is staged or has an error row with its exact raw text (a lone surrogate
    costs its record only)."""
    FUZZ_CASES["decode and plan"] += 1
    kind_name, data, must_fail = page
    kind = KINDS[kind_name]
    file = InputFile(f"{kind.folder}/1.json", data)
    try:
        plan, inputs = plan_page(kind, file)
        errors = attach_raw(plan, inputs, {file.name: hashlib.sha256(data).hexdigest()})
    except InputError as error:
        assert must_fail, error
        assert str(error).startswith(f"{file.name}: "), error
        return
    assert not must_fail
    page = data.removeprefix(BOM)
    spans = element_spans(page)  # not json.loads: it cannot read 3,000 levels either
    count = 1 if spans is None else len(spans)
    for message, raw in errors.select("error_message", "raw_text").rows():
        assert message.startswith("$"), message
        assert raw.encode("utf-8", "surrogateescape") in data or "\\x" in raw
    staged = {
        "agent": "stg_agents",
        "role": "stg_roles",
        "group": "stg_groups",
    }.get(kind_name)
    if staged:
        loaded = set(plan.tables[staged].frame()["record_index"].to_list())
        rejected = set(
            errors.filter(errors["error_type"].is_in(["VALIDATION_ERROR", "DUPLICATE_RECORD"]))[
                "record_index"
            ].to_list()
        )
        assert loaded.isdisjoint(rejected)
        assert loaded | rejected == set(range(count))


def decode_or_error(kind: RecordKind, file: InputFile, chunk_bytes: int) -> Decoded | str:
    try:
        return decode_files(kind, [file], chunk_bytes=chunk_bytes)
    except InputError as error:
        return str(error)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(hostile_page(), min_size=1, max_size=3), st.integers(1, 300))
@example([("agent", b'[{"id": 1}, {"id": "}, {"}, {"id": 2}]', False)], 12)  # a cut in a string
@example([("agent", b'[{"id": 1} , {"id": 2}\n,{"id": 3}]', False)], 1)
@example([("agent", b'[{"id": 1}, {"id": 2}, ]', True)], 10)
def test_a_page_read_in_chunks_decodes_as_when_read_whole(
    pages: list[tuple[str, bytes, bool]], chunk_bytes: int
) -> None:
    """A page of records joined into one big array and read a few bytes at a time gives the
    same rows and errors (or the same InputError, byte offsets included) as read whole."""
    FUZZ_CASES["decode in chunks"] += 1
    kind = KINDS[pages[0][0]]
    parts = [data.removeprefix(BOM).strip() for _, data, _ in pages]
    arrays = [p[1:-1].strip() for p in parts if p.startswith(b"[") and p.endswith(b"]")]
    data = pages[0][1][:3] + b"[" + b",".join(a for a in arrays if a) + b"]"
    if len(pages) == 1:
        data = pages[0][1]  # the page as it is, valid or not
    file = InputFile(f"{kind.folder}/1.json", data)
    whole = decode_or_error(kind, file, len(data) + 1)
    chunked = decode_or_error(kind, file, chunk_bytes)
    if isinstance(whole, str):
        assert chunked == whole
        return
    assert isinstance(chunked, Decoded), chunked
    assert chunked.records.frame().equals(whole.records.frame())
    assert chunked.errors == whole.errors


@settings(
    max_examples=max(EXAMPLES // 40, 5),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(hostile_page(), min_size=1, max_size=4))
def test_hostile_days_end_to_end(template_url: str, pages: list[tuple[str, bytes, bool]]) -> None:
    """Through the CLI on PostgreSQL: exit 0, or 1 exactly when a page must fail; no traceback;
    every bad record's raw text in its errors table; every staged agent, role and group stored."""
    FUZZ_CASES["end to end"] += 1
    folders: dict[str, dict[str, Any]] = {
        "agents": {"0.json": [{"id": 1}, {"id": 2}, {"id": 3}]},
        "roles": {"0.json": [{"id": 10, "name": "r"}]},
        "agent_details": {"0.json": {"id": 1, "role_ids": [10]}},
        "admin_groups": {"0.json": [{"id": 101, "name": "g"}]},
    }
    for n, (kind, data, _) in enumerate(pages, 1):
        folders[KINDS[kind].folder][f"{n}.json"] = data
    must_fail = any(fail for _, _, fail in pages)
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        write_day(Path(tmp), "day1", **folders)
        argv = ["--day", "day1", "--data-dir", tmp, "--database-url", url, "--log-format", "json"]
        code = main([*argv, "--allow-mass-removal"])
        assert code == (1 if must_fail else 0)
        if must_fail:
            return
        conn = db.connect(url)
        try:
            for table in ("agent_pipeline_errors", "role_pipeline_errors", "group_pipeline_errors"):
                query = f"SELECT source_file, raw_text FROM etl.{table}"  # noqa: S608
                for source_file, raw in rows(conn, query):
                    data = (Path(tmp) / source_file).read_bytes()
                    assert raw.encode("utf-8", "surrogateescape") in data or "\\x" in raw, raw
            assert rows(conn, "SELECT count(*) FROM etl.sync_runs WHERE status <> 'succeeded'") == [
                (0,)
            ]
            staged = rows(conn, "SELECT count(*) FROM etl.stg_groups")[0][0]
            assert rows(conn, "SELECT count(*) FROM etl.groups WHERE present") == [(staged,)]
        finally:
            conn.close()
