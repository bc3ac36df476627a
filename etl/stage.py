"""Stage: planned frames -> PostgreSQL staging tables, by ADBC bulk ingest (COPY)."""

from __future__ import annotations

import polars as pl

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
            cur.adbc_ingest(table, frame.to_arrow(), mode="append", db_schema_name=SCHEMA)
            log.debug("staged", table=f"{SCHEMA}.{table}", rows=frame.height)
            total += frame.height
    return total
