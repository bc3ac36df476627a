"""Stage: planned frames go to COPY as a stream of Arrow batches."""

from __future__ import annotations

import polars as pl

from etl.stage import arrow_batches


def test_arrow_batches_stream_the_frame_in_order() -> None:
    """Batches of at most ``rows`` rows, in the frame's order, with the frame's Arrow schema."""
    frame = pl.DataFrame({"agent_id": [5, 3, 9, 1, 7], "name": ["e", "c", None, "a", "g"]})
    reader = arrow_batches(frame, rows=2)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert reader.schema == frame.to_arrow().schema
    assert [row for b in batches for row in b.to_pylist()] == frame.to_dicts()


def test_arrow_batches_of_an_empty_frame() -> None:
    assert [
        b.num_rows
        for b in arrow_batches(pl.DataFrame({"agent_id": []}, schema={"agent_id": pl.Int64}))
    ] == []
