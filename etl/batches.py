"""Batches: decoded records kept as batches of bounded size, and staged tables made from them one
batch at a time, so that memory follows the batch size rather than the day's size.

A sync spills batches to an Arrow IPC file as they are decoded and reads them back one at a time,
for every pass the plan makes. Records that fit in one batch (most accounts of a fleet) stay in
memory: the file would only cost its writing and rereading. Tests keep every batch in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import polars as pl
import pyarrow as pa

from etl import BATCH_VALUES
from etl.quarantine import bad_timestamp
from etl.records import TIMESTAMP, RecordError, RecordKind
from etl.timestamps import timestamp_column

Step = Callable[[pl.LazyFrame], pl.LazyFrame]  # what a plan does to one batch of records

# Plans run on one bounded batch at a time, most of them small: polars' in-memory engine starts
# a query for a third of what the default engine costs, and is as fast on a full batch.
ENGINE: Final = "in-memory"


class Records:
    """The decoded records of one kind, in decode order, as batches with an ``ordinal`` column
    (the record's position in that order). With ``spill``, a second batch sends every batch to
    that Arrow IPC file, and only one is in memory at a time. A batch kept in memory stays an
    Arrow batch until it is first read as a frame: a chunk's small accounts are put together
    in Arrow, and become one frame."""

    def __init__(self, schema: pa.Schema, spill: Path | None = None) -> None:
        self.schema = schema
        self.spill = spill
        self.in_memory: list[pl.DataFrame | pa.RecordBatch] = []
        self.first: pa.RecordBatch | None = None  # the batch in memory, until a second comes
        self.writer: pa.ipc.RecordBatchFileWriter | None = None
        self.spilled = False

    @classmethod
    def of(cls, schema: pa.Schema, frame: pl.DataFrame) -> Records:
        """Records that are one batch in memory: ``frame``."""
        records = cls(schema)
        records.in_memory.append(frame)
        return records

    def add(self, batch: pa.RecordBatch) -> None:
        if self.spill is None or (not self.spilled and not self.in_memory):
            self.in_memory.append(batch)
            self.first = batch if self.spill is not None else None
            return
        if self.writer is None:
            # Compressed, each column comes back in buffers of its own: a column kept from a
            # batch (the ids) then never keeps the rest of the batch alive.
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self.writer = pa.ipc.new_file(str(self.spill), self.schema, options=options)
            self.spilled = True
            self.writer.write_batch(self.first)
            self.in_memory, self.first = [], None
        self.writer.write_batch(batch)

    def close(self) -> None:
        """No more batches: the spill file, if any, is complete."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.first = None

    def batches(self) -> Iterator[pl.DataFrame]:
        if not self.spilled:
            for index, batch in enumerate(self.in_memory):
                if isinstance(batch, pa.RecordBatch):
                    batch = self.in_memory[index] = _frame(batch)
                yield batch
            return
        for batch in self.arrow_batches():
            yield _frame(batch)

    def arrow_batches(self) -> Iterator[pa.RecordBatch]:
        """The batches as Arrow, of ``schema``."""
        if not self.spilled:
            for batch in self.in_memory:
                if isinstance(batch, pl.DataFrame):
                    yield from batch.to_arrow().cast(self.schema).to_batches()
                else:
                    yield batch
            return
        assert self.spill is not None
        with pa.OSFile(str(self.spill)) as file:  # read, not mapped: one batch in memory
            reader = pa.ipc.open_file(file)
            for index in range(reader.num_record_batches):
                yield reader.get_batch(index)

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
    pairs whose step runs on one batch at a time when the table is read; or one day's share
    of a table planned for several days at once (:meth:`share_of`)."""

    def __init__(self, *parts: pl.DataFrame | tuple[Records, Step]) -> None:
        self.parts = parts
        self.share: tuple[JointTable, int] | None = None

    @classmethod
    def share_of(cls, joint: JointTable, place: int) -> Table:
        """The rows of ``joint`` that are the day's at ``place``."""
        table = cls()
        table.share = (joint, place)
        return table

    def frames(self) -> Iterator[pl.DataFrame]:
        if self.share is not None:
            joint, place = self.share
            yield joint.part(place)
            return
        for part in self.parts:
            if isinstance(part, pl.DataFrame):
                yield part
                continue
            records, step = part
            for batch in records.batches():
                yield step(batch.lazy()).collect(engine=ENGINE)

    def schema(self) -> pl.Schema:
        if self.share is not None:
            return self.share[0].schema
        first = self.parts[0]
        if isinstance(first, pl.DataFrame):
            return first.schema
        records, step = first
        return step(records.empty().lazy()).collect_schema()

    def frame(self) -> pl.DataFrame:
        """Every row in one frame (tests and small tables)."""
        return pl.concat([pl.DataFrame(schema=self.schema()), *self.frames()], rechunk=False)


class JointTable:
    """A table planned for several days at once: its rows, each with the place of its day in
    column ``place``. Staged whole when its days are staged together (:meth:`rows_of`); split
    into each day's part only when a part is asked for."""

    def __init__(self, frame: pl.DataFrame, days: int) -> None:
        self.frame = frame
        self.days = days
        self.schema = frame.drop("place").schema
        self.parts: list[pl.DataFrame] | None = None

    def part(self, place: int) -> pl.DataFrame:
        if self.parts is None:
            parts = self.frame.partition_by("place", as_dict=True, include_key=False)
            empty = self.frame.clear().drop("place")
            self.parts = [parts.get((n,), empty) for n in range(self.days)]
        return self.parts[place]

    def rows_of(self, accounts: dict[int, int]) -> pa.Table:
        """The rows of the days at the places of ``accounts`` (place -> account id), each with
        its day's account id first."""
        ids = pl.Series([accounts.get(n) for n in range(self.days)], dtype=pl.Int64)
        account_id = ids.gather(self.frame.get_column("place")).alias("account_id")
        rows = self.frame.select(account_id, *self.schema.names())
        return rows.filter(pl.col("account_id").is_not_null()).to_arrow()


class RowBatches:
    """Decoded rows of one kind, moved into ``records`` as an Arrow batch every ``batch_values``
    values (a row counts one, plus one per element of its mapping array), so that Python objects
    never pile up, also when a few records hold millions of ids. A row whose timestamp text is
    no timestamp goes to ``errors`` instead, as the record's VALIDATION_ERROR."""

    def __init__(
        self,
        kind: RecordKind,
        records: Records,
        batch_values: int = BATCH_VALUES,
        *,
        errors: list[RecordError],
    ) -> None:
        self.kind = kind
        self.schema = records.schema
        self.mapping = kind.schema.names.index(kind.mapping) if kind.mapping else None
        self.timestamps = [i for i, f in enumerate(kind.schema) if f.type == TIMESTAMP]
        self.errors = errors  # where a row whose timestamp is none goes
        self.records = records
        self.batch_values = batch_values
        self.pending: list[tuple[Any, ...]] = []
        self.values = 0
        self.count = 0  # rows moved so far: the next batch's first ordinal

    def append(self, row: tuple[Any, ...]) -> None:
        """Add one row, cutting batches as :meth:`move_full_batches` would, without going over
        the pending rows again (one file per agent: a row at a time)."""
        values = 1 if self.mapping is None else 1 + len(row[self.mapping] or ())
        if self.pending and self.values + values > self.batch_values:
            self._move(self.pending)
            self.pending, self.values = [], 0
        self.pending.append(row)
        self.values += values
        if self.values >= self.batch_values:
            self._move(self.pending)
            self.pending, self.values = [], 0

    def extend(self, rows: Iterable[tuple[Any, ...]]) -> None:
        start = len(self.pending)
        self.pending.extend(rows)
        self.values += len(self.pending) - start
        if self.mapping is not None:
            m = self.mapping
            self.values += sum(len(row[m]) for row in self.pending[start:] if row[m])
        if self.values >= self.batch_values:
            self.move_full_batches()

    def move_full_batches(self) -> None:
        """Move the pending rows out in batches of at most ``batch_values`` values (a row with
        more ids than that is a batch of its own); a last, unfilled batch stays pending."""
        m = self.mapping
        if m is None:  # a row is one value: cut by count, not row by row
            full = len(self.pending) - len(self.pending) % self.batch_values
            for start in range(0, full, self.batch_values):
                self._move(self.pending[start : start + self.batch_values])
            self.pending, self.values = self.pending[full:], len(self.pending) - full
            return
        start = size = 0
        for index, row in enumerate(self.pending):
            values = 1 + len(row[m] or ())
            if size and size + values > self.batch_values:
                self._move(self.pending[start:index])
                start, size = index, 0
            size += values
        rest = self.pending[start:]
        if size >= self.batch_values:
            self._move(rest)
            rest, size = [], 0
        self.pending, self.values = rest, size

    def close(self) -> Records:
        """Move the last rows out; the records are complete."""
        if self.pending:
            self._move(self.pending)
        self.pending, self.values = [], 0
        self.records.close()
        return self.records

    def _move(self, rows: list[tuple[Any, ...]]) -> None:
        columns = list(zip(*rows, strict=True))
        times: dict[int, pa.Array] = {}
        rejected: dict[int, RecordError] = {}  # row -> its first timestamp that is none
        for column in self.timestamps:
            times[column], bad = timestamp_column(columns[column])
            for row, text in bad.items():
                rejected.setdefault(row, self._bad_timestamp(rows[row], column, text))
        if rejected:
            self.errors.extend(rejected.values())
            rows = [row for n, row in enumerate(rows) if n not in rejected]
            if rows:
                self._move(rows)
            return
        arrays = [
            times[i] if i in times else pa.array(c, type=f.type)
            for i, (c, f) in enumerate(zip(columns, self.schema, strict=False))
        ]
        start, self.count = self.count, self.count + len(rows)
        arrays.append(pa.array(range(start, self.count), pa.int64()))  # ordinal
        self.records.add(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _bad_timestamp(self, row: tuple[Any, ...], column: int, text: str) -> RecordError:
        source_file, index, path = row[-3:]
        name = self.kind.schema.names[column]
        return bad_timestamp(self.kind, name, text, row[0], source_file, index, path)
