"""Stage: planned tables -> PostgreSQL staging tables, by ADBC bulk ingest (COPY)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain
from typing import TypeVar

import polars as pl
import pyarrow as pa

from etl import db
from etl.batches import JointTable, Table
from etl.log import get_logger
from etl.server import wrapped

SCHEMA = "etl"


def stage_tables(
    conn: db.Connection,
    account_id: int,
    entity: str,
    tables: dict[str, Table],
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Replace the account's staging rows of the entity with ``tables`` (name -> rows) in one
    transaction committed by the caller; returns the number of rows staged. ``on_rows`` hears of
    each batch as COPY takes it."""
    log = get_logger()
    db.execute(conn, "clear_staging", ([account_id], entity))
    total = 0
    with wrapped("staging"), conn.cursor() as cur:
        for name, table in tables.items():
            counted = RowCount(on_rows)
            batches = arrow_batches(table, counted, account_id=account_id)
            first = next(iter(batches), None)
            if first is None:
                continue  # nothing to COPY
            rest = pa.RecordBatchReader.from_batches(batches.schema, chain([first], batches))
            cur.adbc_ingest(name, rest, mode="append", db_schema_name=SCHEMA)
            log.debug("staged", table=f"{SCHEMA}.{name}", rows=counted.rows)
            total += counted.rows
    return total


def stage_together(
    conn: db.Connection, entity: str, staged: list[tuple[int, dict[str, Table]]]
) -> None:
    """Replace the staging rows of the entity of several accounts (account id -> its tables,
    all small) with one COPY per table, in one transaction committed by the caller. The
    accounts' shares of a table planned for them at once go as that table's rows, each with
    its account's id; any other table of an account goes as its own Arrow batches, its id
    added. A column that an account's plan left without a type (all null: polars' Null) takes
    the type the other accounts give it."""
    db.execute(conn, "clear_staging", ([account_id for account_id, _ in staged], entity))
    names = list(dict.fromkeys(name for _, tables in staged for name in tables))
    with wrapped("staging"), conn.cursor() as cur:
        for name in names:
            parts = rows_of(name, staged)
            if parts:
                rows = pa.concat_tables(parts, promote_options="default")  # Null -> the type
                cur.adbc_ingest(name, rows, mode="append", db_schema_name=SCHEMA)


def rows_of(name: str, staged: list[tuple[int, dict[str, Table]]]) -> list[pa.Table]:
    """The accounts' rows of table ``name``, each with its account's id first, as few Arrow
    tables as their plans allow; none empty."""
    parts: list[pa.Table] = []
    joints: dict[int, tuple[JointTable, dict[int, int]]] = {}  # id -> (table, place -> account)
    for account_id, tables in staged:
        table = tables.get(name)
        if table is None:
            continue
        if table.share is not None:
            joint, place = table.share
            joints.setdefault(id(joint), (joint, {}))[1][place] = account_id
            continue
        parts += [
            with_account_id(frame.to_arrow(), account_id)
            for frame in table.frames()
            if frame.height
        ]
    for joint, accounts in joints.values():
        rows = joint.rows_of(accounts)
        if rows.num_rows:
            parts.append(rows)
    return parts


Rows = TypeVar("Rows", pa.Table, pa.RecordBatch)


def with_account_id(rows: Rows, account_id: int) -> Rows:
    """``rows`` with the account's id as their first column."""
    ids = pa.repeat(pa.scalar(account_id, pa.int64()), rows.num_rows)
    return rows.add_column(0, "account_id", ids)


BATCH_ROWS = 65_536  # rows converted to Arrow at a time


class RowCount:
    """Rows that went by, and whom to tell."""

    def __init__(self, on_rows: Callable[[int], None] | None = None) -> None:
        self.rows = 0
        self.on_rows = on_rows

    def add(self, rows: int) -> None:
        self.rows += rows
        if self.on_rows is not None:
            self.on_rows(rows)


def arrow_batches(
    table: Table,
    count: RowCount | None = None,
    rows: int = BATCH_ROWS,
    *,
    account_id: int | None = None,
) -> pa.RecordBatchReader:
    """``table`` as a stream of Arrow batches of at most ``rows`` rows, each made when COPY wants
    it, so that staging holds one batch at a time; with ``account_id``, each row gets that
    account's id first. ``count`` adds up the rows as they go."""
    schema = pl.DataFrame(schema=table.schema()).to_arrow().schema
    if account_id is not None:
        schema = schema.insert(0, pa.field("account_id", pa.int64()))
    batches = _batches(table, count or RowCount(), rows, account_id)
    return pa.RecordBatchReader.from_batches(schema, batches)


def _batches(
    table: Table, count: RowCount, rows: int, account_id: int | None
) -> Iterator[pa.RecordBatch]:
    for frame in table.frames():
        for part in frame.iter_slices(rows):
            count.add(part.height)
            for batch in part.to_arrow().to_batches():
                yield batch if account_id is None else with_account_id(batch, account_id)
