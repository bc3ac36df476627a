"""Stage: planned tables go to COPY as a stream of Arrow batches; the file ledger is written
behind the decoder."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import open_run, rows

from etl import db
from etl.batches import Table
from etl.errors import DatabaseError
from etl.ledger import FileLedger
from etl.pages import FileDigest
from etl.stage import RowCount, arrow_batches, stage_tables, stage_together


def test_arrow_batches_stream_the_table_in_order() -> None:
    """Batches of at most ``rows`` rows, in the table's order, with its Arrow schema; the rows
    are counted as they go."""
    frame = pl.DataFrame({"agent_id": [5, 3, 9, 1, 7], "name": ["e", "c", None, "a", "g"]})
    count = RowCount()
    reader = arrow_batches(Table(frame.head(3), frame.tail(2)), count, rows=2)
    assert count.rows == 0  # nothing is made before COPY asks
    batches = list(reader)
    assert [b.num_rows for b in batches] == [2, 1, 2]
    assert reader.schema == frame.to_arrow().schema
    assert [row for b in batches for row in b.to_pylist()] == frame.to_dicts()
    assert count.rows == 5


def test_arrow_batches_of_an_empty_table() -> None:
    empty = Table(pl.DataFrame({"agent_id": []}, schema={"agent_id": pl.Int64}))
    assert [b.num_rows for b in arrow_batches(empty)] == []


def errors_of(**columns: list[object]) -> Table:
    """stg_errors rows of agents, polars choosing the type of each column given (a column of
    only None: Null)."""
    count = len(columns["raw_text"])
    return Table(
        pl.DataFrame(
            {
                "entity": ["agents"] * count,
                "record_kind": ["agent"] * count,
                "error_type": ["VALIDATION_ERROR"] * count,
                "error_message": [f"$[{n}].name: bad" for n in range(count)],
                **columns,
                "source_file": ["1.json"] * count,
                "record_index": pl.Series(range(count), dtype=pl.Int32),
            }
        )
    )


def test_accounts_staged_together_whose_columns_polars_typed_apart(conn: db.Connection) -> None:
    """One COPY per table for several accounts: each row gets its account's id, a column polars
    typed Null for one account (all None) goes in beside another's values, an account without
    rows for a table adds none; the entity's earlier staging rows of those accounts are
    replaced, another account's and another entity's kept."""
    a, b, c = (db.ensure_account(conn, key) for key in ("a", "b", "c"))
    held = pl.DataFrame({"entity": ["agents"], "record_kind": ["agent"], "record_id": [1]})
    for account_id in (a, c):
        stage_tables(conn, account_id, "agents", {"stg_held_ids": Table(held)})
    stage_tables(
        conn, a, "groups", {"stg_held_ids": Table(held.with_columns(entity=pl.lit("groups")))}
    )
    a_errors = errors_of(field=[None, None], record_id=[3, None], raw_text=["{}", "[1]"])
    b_errors = errors_of(field=["name"], record_id=[None], raw_text=['{"id": 7}'])
    typed = [
        (t.frame().schema["field"], t.frame().schema["record_id"]) for t in (a_errors, b_errors)
    ]
    assert typed == [(pl.Null, pl.Int64), (pl.String, pl.Null)]
    b_held = pl.DataFrame(
        {"entity": ["agents"] * 2, "record_kind": ["agent"] * 2, "record_id": [8, 9]}
    )
    stage_together(
        conn,
        "agents",
        [
            (a, {"stg_errors": a_errors, "stg_held_ids": Table(held.clear())}),
            (b, {"stg_errors": b_errors, "stg_held_ids": Table(b_held.head(1), b_held.tail(1))}),
        ],
    )
    assert rows(
        conn,
        "SELECT account_id, entity, record_kind, error_type, error_message, field, record_id,"
        " source_file, record_index, raw_text FROM etl.stg_errors ORDER BY 1, record_index",
    ) == [
        (a, "agents", "agent", "VALIDATION_ERROR", "$[0].name: bad", None, 3, "1.json", 0, "{}"),
        (a, "agents", "agent", "VALIDATION_ERROR", "$[1].name: bad", None, None, "1.json", 1,
         "[1]"),
        (b, "agents", "agent", "VALIDATION_ERROR", "$[0].name: bad", "name", None, "1.json", 0,
         '{"id": 7}'),
    ]  # fmt: skip
    assert rows(
        conn,
        "SELECT account_id, entity, record_kind, record_id FROM etl.stg_held_ids ORDER BY 1, 2, 4",
    ) == [
        (a, "groups", "agent", 1),
        (b, "agents", "agent", 8),
        (b, "agents", "agent", 9),
        (c, "agents", "agent", 1),
    ]


def ledger_files(conn: db.Connection) -> list[tuple[object, ...]]:
    return rows(conn, "SELECT file_index, file, bytes, sha256 FROM etl.sync_run_files ORDER BY 1")


def test_the_file_ledger_writes_full_batches_as_they_fill_and_the_rest_on_flush(
    conn: db.Connection,
) -> None:
    """A full batch is written when it fills, the rest by flush; every file is recorded once,
    in the order it was added."""
    open_run(conn, "d1", "agents")
    ledger = FileLedger(conn, 1, 1, batch=2)
    for n in range(5):
        ledger.add(FileDigest(f"{n}.json", n, f"h{n}"))
    assert ledger_files(conn) == [
        (0, "0.json", 0, "h0"),
        (1, "1.json", 1, "h1"),
        (2, "2.json", 2, "h2"),
        (3, "3.json", 3, "h3"),
    ]
    ledger.flush()
    assert ledger_files(conn)[4:] == [(4, "4.json", 4, "h4")]
    assert ledger.pending == [] and ledger.count == 5


def test_a_refused_ledger_write_is_raised_by_the_add_that_fills_its_batch(
    conn: db.Connection,
) -> None:
    """A batch the database refuses (here a NUL in a file name) raises a DatabaseError naming
    the write from the add that filled it; the ledger goes on after a rollback."""
    open_run(conn, "d1", "agents")
    ledger = FileLedger(conn, 1, 1, batch=1)
    with pytest.raises(DatabaseError) as raised:
        ledger.add(FileDigest("bad\x00.json", 1, "h"))
    assert str(raised.value).startswith("database error during the ledger write: ")
    db.rollback(conn)
    ledger.add(FileDigest("good.json", 2, "g"))
    ledger.flush()
    assert ledger_files(conn) == [(1, "good.json", 2, "g")]
