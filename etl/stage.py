"""Stage: planned frames -> PostgreSQL staging tables, by ADBC bulk ingest (COPY)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from etl import db
from etl.log import get_logger

SCHEMA = "etl"


def stage_frames(conn: db.Connection, entity: str, frames: dict[str, pl.DataFrame]) -> int:
    """Replace the entity's staging rows with ``frames`` (table -> rows) in one transaction
    committed by the caller; returns the number of rows staged."""
    log = get_logger()
    db.execute(conn, "clear_staging", (entity,))
    total = 0
    with db.wrapped("staging"), conn.cursor() as cur:
        for table, frame in frames.items():
            if frame.height == 0:
                continue
            cur.adbc_ingest(table, arrow_batches(frame), mode="append", db_schema_name=SCHEMA)
            log.debug("staged", table=f"{SCHEMA}.{table}", rows=frame.height)
            total += frame.height
    return total


BATCH_ROWS = 65_536  # rows converted to Arrow at a time


def arrow_batches(frame: pl.DataFrame, rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
    """``frame`` as a stream of Arrow batches of ``rows`` rows, each converted when COPY wants
    it, so that staging never holds an Arrow copy of the whole frame (111 MB for 1M agents)."""
    schema = frame.head(0).to_arrow().schema
    batches = (b for part in frame.iter_slices(rows) for b in part.to_arrow().to_batches())
    return pa.RecordBatchReader.from_batches(schema, batches)
