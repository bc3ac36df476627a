"""The run ledger: a run's row in etl.sync_runs from start to end, the files it read in
etl.sync_run_files, and what earlier runs recorded (file hashes, counts)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from etl.db import Connection, commit, execute, rollback
from etl.pages import FileDigest
from etl.server import wrapped


@dataclass(frozen=True)
class StartedRun:
    """A run's new ledger row: its id, its sync time, and the days its entity was applied for
    before it."""

    account_id: int
    run_id: int
    synced_at: datetime
    applied_days: list[str]


def start_runs(
    conn: Connection,
    day: str,
    entity: str,
    accounts: Sequence[tuple[int, datetime | None, bool]],
    now: datetime,
    applying: int | None = None,
) -> dict[int, StartedRun]:
    """A new ledger row, 'running', for the run of the entity's ``day`` of each of ``accounts``
    (account id, sync time or None, forced), in one statement, committed; by account id. A run
    not given a sync time takes that of the day's first succeeded run of the entity, else
    ``now``. Any other 'running' row of the account belongs to a process that died and is marked
    'abandoned', except ``applying``: this process's run still applying on another connection."""
    ids, synced, forced = (list(column) for column in zip(*accounts, strict=True))
    rows = execute(conn, "start_runs", (ids, day, entity, synced, forced, now, applying))
    commit(conn)
    return {int(a): StartedRun(int(a), int(r), at, list(days)) for a, r, at, days in rows}


def record_unstarted_run(
    conn: Connection,
    account_id: int,
    day: str,
    entity: str,
    synced_at: datetime,
    forced: bool,
    message: str,
) -> None:
    """Ledger row for a run that never started (another run held the lock); leaves that run's
    'running' row alone."""
    rollback(conn)
    execute(conn, "record_unstarted_run", (account_id, day, entity, synced_at, forced, message))
    commit(conn)


def end_run(conn: Connection, account_id: int, run_id: int, status: str, message: str) -> None:
    """Close a run that did not apply (its own transaction; the failed one is rolled back)."""
    rollback(conn)
    execute(conn, "end_run", (account_id, run_id, status, message))
    commit(conn)


class FileLedger:
    """Records a run's input files in etl.sync_run_files as they are read, a batch at a time
    (each batch committed), so that a day of a million files never sits in memory."""

    SCHEMA = pa.schema(
        [
            ("account_id", pa.int64()),
            ("run_id", pa.int64()),
            ("file_index", pa.int32()),
            ("file", pa.string()),
            ("bytes", pa.int64()),
            ("sha256", pa.string()),
        ]
    )

    def __init__(
        self,
        conn: Connection,
        account_id: int,
        run_id: int,
        batch: int = 10_000,
    ) -> None:
        self.conn, self.account_id, self.run_id, self.batch = conn, account_id, run_id, batch
        self.count = 0  # files taken into a batch so far
        self.pending: list[tuple[str, int, str]] = []

    def add(self, file: FileDigest) -> None:
        self.pending.append((file.name, file.bytes, file.sha256))
        if len(self.pending) >= self.batch:
            self._write(self._take_pending())

    def flush(self) -> None:
        """Write every file added so far."""
        if self.pending:
            self._write(self._take_pending())

    @staticmethod
    def flush_together(conn: Connection, ledgers: Sequence[FileLedger]) -> None:
        """Write every file the ledgers hold, of their runs alike, with one COPY, committed on
        ``conn``. Should it fail, each ledger still holds its files."""
        held = [ledger for ledger in ledgers if ledger.pending]
        if not held:
            return
        table = pa.concat_tables([ledger._pending_table() for ledger in held])
        with wrapped("the ledger write"), conn.cursor() as cur:
            cur.adbc_ingest("sync_run_files", table, mode="append", db_schema_name="etl")
        commit(conn, "the ledger write")
        for ledger in held:
            ledger._take_pending()

    def _take_pending(self) -> pa.Table:
        table = self._pending_table()
        self.count += table.num_rows
        self.pending = []
        return table

    def _pending_table(self) -> pa.Table:
        files, sizes, hashes = zip(*self.pending, strict=True)
        first = self.count
        return pa.table(
            [
                pa.array([self.account_id] * len(files), pa.int64()),
                pa.array([self.run_id] * len(files), pa.int64()),
                pa.array(range(first, first + len(files)), pa.int32()),
                pa.array(files, pa.string()),
                pa.array(sizes, pa.int64()),
                pa.array(hashes, pa.string()),
            ],
            schema=self.SCHEMA,
        )

    def _write(self, table: pa.Table) -> None:
        with wrapped("the ledger write"), self.conn.cursor() as cur:
            cur.adbc_ingest("sync_run_files", table, mode="append", db_schema_name="etl")
        commit(self.conn, "the ledger write")


def run_file_hashes(
    conn: Connection, wanted: Sequence[tuple[int, int, dict[str, int]]]
) -> dict[int, dict[str, str]]:
    """run id -> file -> sha256 as the run recorded it, for each (account id, run id, files with
    their ``file_index``) of ``wanted``, in one statement: a key lookup a file, however many
    files the runs and the ledger hold."""
    asked = [(a, r, i, f) for a, r, files in wanted for f, i in files.items()]
    found: dict[int, dict[str, str]] = {run_id: {} for _, run_id, _ in wanted}
    if not asked:
        return found
    accounts, runs, places, files = (list(column) for column in zip(*asked, strict=True))
    rows = execute(conn, "run_file_hashes", (accounts, runs, places, files))
    for run_id, file, sha256 in rows:
        found[int(run_id)][file] = sha256
    commit(conn)
    return found


def record_seconds(
    conn: Connection, runs: Sequence[tuple[int, int, dict[str, float]]]
) -> dict[int, dict[str, Any]]:
    """Add each applied run's seconds per stage (account id, run id, seconds) to its ledger row
    (``details.seconds``), in one statement, committed; run id -> the row's counts."""
    if not runs:
        return {}
    accounts = [account_id for account_id, _, _ in runs]
    run_ids = [run_id for _, run_id, _ in runs]
    seconds = [json.dumps(spent) for _, _, spent in runs]
    rows = execute(conn, "record_seconds", (accounts, run_ids, seconds))
    commit(conn)
    return {int(row[0]): run_counts(row[1:]) for row in rows}


def run_counts(row: Sequence[Any]) -> dict[str, Any]:
    """A ledger row's counts, and its details."""
    staged, inserted, updated, unchanged, removed, quarantined, details = row
    return {
        "staged": staged,
        "inserted": inserted,
        "updated": updated,
        "unchanged": unchanged,
        "removed": removed,
        "quarantined": quarantined,
        **json.loads(details or "{}"),
    }
