"""Batches: decoded records kept as frames of bounded size, and staged tables made from them one
batch at a time, so that memory follows the batch size rather than the day's size.

A sync spills batches to an Arrow IPC file as they are decoded and reads them back one at a time,
for every pass the plan makes. Records that fit in one batch (most accounts of a fleet) stay in
memory: the file would only cost its writing and rereading. Tests keep every batch in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import polars as pl
import pyarrow as pa

Step = Callable[[pl.LazyFrame], pl.LazyFrame]  # what a plan does to one batch of records

# Plans run on one bounded batch at a time, most of them small: polars' in-memory engine starts
# a query for a third of what the default engine costs, and is as fast on a full batch.
ENGINE: Final = "in-memory"


class Records:
    """The decoded records of one kind, in decode order, as batches with an ``ordinal`` column
    (the record's position in that order). With ``spill``, a second batch sends every batch to
    that Arrow IPC file, and only one is in memory at a time."""

    def __init__(self, schema: pa.Schema, spill: Path | None = None) -> None:
        self.schema = schema
        self.spill = spill
        self.frames: list[pl.DataFrame] = []
        self.first: pa.RecordBatch | None = None  # the batch in memory, until a second comes
        self.writer: pa.ipc.RecordBatchFileWriter | None = None
        self.spilled = False

    @classmethod
    def of(cls, schema: pa.Schema, frame: pl.DataFrame) -> Records:
        """Records that are one batch in memory: ``frame``."""
        records = cls(schema)
        records.frames.append(frame)
        return records

    def add(self, batch: pa.RecordBatch) -> None:
        if self.spill is None or (not self.spilled and not self.frames):
            self.frames.append(_frame(batch))
            self.first = batch if self.spill is not None else None
            return
        if self.writer is None:
            # Compressed, each column comes back in buffers of its own: a column kept from a
            # batch (the ids) then never keeps the rest of the batch alive.
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self.writer = pa.ipc.new_file(str(self.spill), self.schema, options=options)
            self.spilled = True
            self.writer.write_batch(self.first)
            self.frames, self.first = [], None
        self.writer.write_batch(batch)

    def close(self) -> None:
        """No more batches: the spill file, if any, is complete."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.first = None

    def persist(self) -> None:
        """Write the records to the spill file even if they fit in one batch (another process
        reads that file)."""
        assert self.spill is not None
        if not self.spilled:
            with pa.ipc.new_file(str(self.spill), self.schema) as writer:
                for frame in self.frames:
                    writer.write_table(frame.to_arrow().cast(self.schema))
            self.spilled, self.frames = True, []

    def batches(self) -> Iterator[pl.DataFrame]:
        if not self.spilled:
            yield from self.frames
            return
        assert self.spill is not None
        with pa.OSFile(str(self.spill)) as file:  # read, not mapped: one batch in memory
            reader = pa.ipc.open_file(file)
            for index in range(reader.num_record_batches):
                yield _frame(reader.get_batch(index))

    def empty(self) -> pl.DataFrame:
        return _frame(self.schema.empty_table())

    def gather(self, step: Step) -> pl.DataFrame:
        """``step`` applied to every batch, the results concatenated: for results much smaller
        than the records (keys, errors, the few rows a report needs)."""
        parts = [step(batch.lazy()).collect(engine=ENGINE) for batch in self.batches()]
        if not parts:
            return step(self.empty().lazy()).collect(engine=ENGINE)
        return pl.concat(parts, rechunk=False)

    def frame(self) -> pl.DataFrame:
        """Every record in one frame (tests and small inputs)."""
        return self.gather(lambda batch: batch)


def _frame(data: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


class Table:
    """A table to stage, made of parts in order: frames already computed, and (records, step)
    pairs whose step runs on one batch at a time when the table is read."""

    def __init__(self, *parts: pl.DataFrame | tuple[Records, Step]) -> None:
        self.parts = parts

    def frames(self) -> Iterator[pl.DataFrame]:
        for part in self.parts:
            if isinstance(part, pl.DataFrame):
                yield part
                continue
            records, step = part
            for batch in records.batches():
                yield step(batch.lazy()).collect(engine=ENGINE)

    def schema(self) -> pl.Schema:
        first = self.parts[0]
        if isinstance(first, pl.DataFrame):
            return first.schema
        records, step = first
        return step(records.empty().lazy()).collect_schema()

    def frame(self) -> pl.DataFrame:
        """Every row in one frame (tests and small tables)."""
        return pl.concat([pl.DataFrame(schema=self.schema()), *self.frames()], rechunk=False)
