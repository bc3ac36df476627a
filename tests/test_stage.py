"""Stage: planned tables go to COPY as a stream of Arrow batches."""

from __future__ import annotations

import polars as pl

from etl.batches import Table
from etl.stage import RowCount, arrow_batches


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
