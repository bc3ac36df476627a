"""Stage: planned tables -> PostgreSQL staging tables, by ADBC bulk ingest (COPY)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain

import polars as pl
import pyarrow as pa

from etl import db
from etl.batches import Table
from etl.log import get_logger

SCHEMA = "etl"


def stage_tables(
    conn: db.Connection,
    entity: str,
    tables: dict[str, Table],
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Replace the entity's staging rows with ``tables`` (name -> rows) in one transaction
    committed by the caller; returns the number of rows staged. ``on_rows`` hears of each batch
    as COPY takes it."""
    log = get_logger()
    db.execute(conn, "clear_staging", (entity,))
    total = 0
    with db.wrapped("staging"), conn.cursor() as cur:
        for name, table in tables.items():
            counted = RowCount(on_rows)
            batches = arrow_batches(table, counted)
            first = next(iter(batches), None)
            if first is None:
                continue  # nothing to COPY
            rest = pa.RecordBatchReader.from_batches(batches.schema, chain([first], batches))
            cur.adbc_ingest(name, rest, mode="append", db_schema_name=SCHEMA)
            log.debug("staged", table=f"{SCHEMA}.{name}", rows=counted.rows)
            total += counted.rows
    return total


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
    table: Table, count: RowCount | None = None, rows: int = BATCH_ROWS
) -> pa.RecordBatchReader:
    """``table`` as a stream of Arrow batches of at most ``rows`` rows, each made when COPY wants
    it, so that staging holds one batch at a time. ``count`` adds up the rows as they go."""
    schema = pl.DataFrame(schema=table.schema()).to_arrow().schema
    return pa.RecordBatchReader.from_batches(schema, _batches(table, count or RowCount(), rows))


def _batches(table: Table, count: RowCount, rows: int) -> Iterator[pa.RecordBatch]:
    for frame in table.frames():
        for part in frame.iter_slices(rows):
            count.add(part.height)
            yield from part.to_arrow().to_batches()
