"""Database access: connections, named queries, the run lock and the ledger.

Every statement is a named query from ``sql/queries.sql`` or a file of ``sql/`` (see
:mod:`etl.migrate`); values are always bound. Driver errors are wrapped in
:class:`~etl.errors.DatabaseError` here.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
from adbc_driver_manager import AdbcConnection, AdbcDatabase
from adbc_driver_manager.dbapi import Connection as Connection

from etl.errors import DatabaseError, LockTimeoutError
from etl.log import get_logger
from etl.pages import FileDigest
from etl.server import cancelled_by_user as cancelled_by_user
from etl.server import driver_message as driver_message
from etl.server import open_database
from etl.server import wrapped as wrapped


def sql_folder() -> Traversable:
    """The SQL of this etl: the package's data folder ``sql`` when etl is installed, else the
    ``sql/`` folder beside the package in the source checkout it was imported from."""
    packaged = importlib.resources.files("etl").joinpath("sql")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


@cache
def queries() -> dict[str, str]:
    """The named queries of sql/queries.sql (``-- name: x`` starts query x)."""
    text = sql_folder().joinpath("queries.sql").read_text()
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def connect(url: str) -> Connection:
    """A connection to ``url``."""
    return connection(open_database(url))


def connection(database: AdbcDatabase) -> Connection:
    """A DB-API connection on the driver's database handle (``server.open_database``), which it
    then owns: on failure both are closed."""
    handle = None
    try:
        with wrapped("connect"):
            handle = AdbcConnection(database)
            return Connection(database, handle)
    except BaseException:
        if handle is not None:
            with contextlib.suppress(adbc_driver_manager.Error):
                handle.close()
        with contextlib.suppress(adbc_driver_manager.Error, RuntimeError):
            database.close()
        raise


def clone(conn: Connection) -> Connection:
    """Another connection on ``conn``'s database handle (a new session, a few ms)."""
    with wrapped("connect"):
        return conn.adbc_clone()


_UNCOMMITTED: set[int] = set()  # connections in a dry run (by id): their commits are skipped


def commit(conn: Connection, stage: str = "commit") -> None:
    """Commit (not in a dry run); a failure is a DatabaseError naming ``stage``."""
    if id(conn) in _UNCOMMITTED:
        return
    with wrapped(stage):
        conn.commit()


@contextmanager
def uncommitted(conn: Connection) -> Iterator[None]:
    """Every commit on ``conn`` inside is skipped, and all is rolled back at the end: what runs
    inside leaves nothing behind, and each step still sees what the earlier ones did."""
    _UNCOMMITTED.add(id(conn))
    try:
        yield
    finally:
        _UNCOMMITTED.discard(id(conn))
        rollback(conn)


def rollback(conn: Connection) -> None:
    """Roll back; a connection already lost is a DatabaseError like any other failure."""
    with wrapped("rollback"):
        conn.rollback()


def close(conn: Connection) -> None:
    """Close the connection; one already lost needs no closing."""
    with contextlib.suppress(adbc_driver_manager.Error):
        conn.close()


def execute(conn: Connection, name: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run a named query with bound values; return its rows (none for statements)."""
    with wrapped(name.replace("_", " ")), conn.cursor() as cur:
        cur.execute(queries()[name], tuple(params) or None)
        return cur.fetchall() if cur.description else []


def execute_script(conn: Connection, name: str) -> None:
    """Run a named query of several statements, without values."""
    with wrapped(name.replace("_", " ")):
        run_script(conn, queries()[name])


def run_script(conn: Connection, text: str) -> None:
    """Several statements in one go, inside the current transaction, on a cursor of their own
    (no values bound). The DBAPI's ``executescript`` commits whatever is pending first: that
    split the migrations into one transaction each, released the migration lock, and would end
    a dry run."""
    with conn.cursor() as cur:
        statement = cur.adbc_statement
        statement.set_sql_query(text)
        statement.execute_update()


def fetch_table(conn: Connection, name: str, params: Sequence[Any] = ()) -> pa.Table:
    """The rows of a named query, as Arrow (for row sets that may be large)."""
    with wrapped(name.replace("_", " ")), conn.cursor() as cur:
        cur.execute(queries()[name], tuple(params) or None)
        return cur.fetch_arrow_table()


def server_version(conn: Connection) -> str:
    version = execute(conn, "server_version")[0][0]
    commit(conn)
    return str(version)


@contextmanager
def account_lock(conn: Connection, account: str, timeout: float) -> Iterator[None]:
    """Hold the account's advisory lock: runs of one account never interleave (runs of other
    accounts go on). Waits up to ``timeout`` seconds for a run already holding it, saying so
    once."""
    wait_for_lock(conn, "try_lock", (account,), timeout, held_by_another(account))
    try:
        yield
    finally:
        release_lock(conn, "unlock", (account,))


@contextmanager
def account_locks(
    conn: Connection, accounts: Sequence[str], timeout: float
) -> Iterator[dict[str, LockTimeoutError]]:
    """Hold the advisory locks of several accounts (see :func:`account_lock`), tried with one
    statement; a lock that another run holds is waited for as there, one after the other.
    Yields the accounts whose lock was not taken in time, with their error."""
    held = [key for key, taken in execute(conn, "try_locks", (list(accounts),)) if taken]
    commit(conn)
    missed: dict[str, LockTimeoutError] = {}
    try:
        for account in accounts:
            if account not in held:
                try:
                    wait_for_lock(conn, "try_lock", (account,), timeout, held_by_another(account))
                    held.append(account)
                except LockTimeoutError as error:
                    missed[account] = error
        yield missed
    finally:
        release_lock(conn, "unlock_all", (held,))


def held_by_another(account: str) -> str:
    return f"another etl run holds the sync lock of account {account} on this database"


@contextmanager
def schema_in_use(conn: Connection, timeout: float) -> Iterator[None]:
    """Hold the schema lock shared while runs go on: a migration (which takes it exclusively)
    waits for them to end, and they wait up to ``timeout`` seconds for a migration."""
    wait_for_lock(
        conn,
        "share_schema",
        (),
        timeout,
        "a migration of this database's schema is going on",
    )
    try:
        yield
    finally:
        release_lock(conn, "unshare_schema", ())


def wait_for_lock(
    conn: Connection, query: str, params: Sequence[Any], timeout: float, holder: str
) -> None:
    """Try the advisory lock of ``query`` until it is taken, for up to ``timeout`` seconds;
    then a LockTimeoutError saying who holds it."""
    deadline = time.monotonic() + timeout
    waiting = False
    while not execute(conn, query, params)[0][0]:
        commit(conn)
        if not waiting:
            get_logger().info("waiting_for_lock", lock=query, timeout_s=timeout)
            waiting = True
        if time.monotonic() >= deadline:
            raise LockTimeoutError(f"{holder}; gave up after {timeout:g} s (see --lock-timeout)")
        time.sleep(0.1)
    commit(conn)


def release_lock(conn: Connection, query: str, params: Sequence[Any]) -> None:
    try:
        rollback(conn)
        execute(conn, query, params)
        commit(conn)
    except DatabaseError:
        pass  # the connection is gone, and its session locks with it


def ensure_account(conn: Connection, account: str) -> int:
    """The account's id, the account created (and committed) if new."""
    account_id = int(execute(conn, "ensure_account", (account,))[0][0])
    commit(conn)
    return account_id


def ensure_accounts(conn: Connection, accounts: Sequence[str]) -> dict[str, int]:
    """Each account's id by its key, in one statement, the accounts created (and committed) if
    new."""
    if not accounts:
        return {}
    ids = {
        key: int(account_id)
        for key, account_id in execute(conn, "ensure_accounts", (list(accounts),))
    }
    commit(conn)
    return ids


def account_id(conn: Connection, account: str) -> int | None:
    """The account's id, or None if no account has that key."""
    rows = execute(conn, "account_id", (account,))
    commit(conn)
    return int(rows[0][0]) if rows else None


def delete_account(conn: Connection, account_id: int) -> dict[str, int]:
    """Delete the account and every row it owns, in one committed transaction; rows deleted
    per table."""
    try:
        deleted = execute(conn, "delete_account", (account_id,))[0][0]
        commit(conn)
    except BaseException:
        with contextlib.suppress(DatabaseError):
            rollback(conn)
        raise
    return {table: int(rows) for table, rows in json.loads(deleted).items() if rows}


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
    (each batch committed), so that a day of a million files never sits in memory.

    A full batch is written by a background thread while decoding goes on: the driver releases
    the GIL, so the server's COPY runs on the other core instead of stopping the decoder. The
    connection is the caller's: call :meth:`wait` (or
    :meth:`flush`) before using it for anything else."""

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
        *,
        background: bool = True,
    ) -> None:
        self.conn, self.account_id, self.run_id, self.batch = conn, account_id, run_id, batch
        self.background = background  # else a full batch is written at once, on this thread
        self.count = 0  # files taken into a batch so far
        self.pending: list[tuple[str, int, str]] = []
        self.writing: tuple[threading.Thread, list[BaseException]] | None = None

    def add(self, file: FileDigest) -> None:
        self.pending.append((file.name, file.bytes, file.sha256))
        if len(self.pending) >= self.batch and not self.background:
            self._write(self._take_pending())
        elif len(self.pending) >= self.batch:
            self.wait()
            table = self._take_pending()
            failures: list[BaseException] = []
            thread = threading.Thread(
                target=self._write, args=(table, failures), name="etl-ledger", daemon=True
            )
            self.writing = (thread, failures)  # before it starts: wait() must always see it
            try:
                thread.start()
            except BaseException:
                self.writing = None
                raise

    def wait(self) -> None:
        """Wait for the batch being written, if any; raise its failure. Interrupted (Ctrl-C),
        the batch is still being written, and the next call waits for it again."""
        if self.writing is None:
            return
        thread, failures = self.writing
        thread.join()
        self.writing = None
        if failures:
            raise failures[0]

    def flush(self) -> None:
        """Write every file added so far; the connection is free afterwards."""
        self.wait()
        if self.pending:
            self._write(self._take_pending())

    @staticmethod
    def flush_together(conn: Connection, ledgers: Sequence[FileLedger]) -> None:
        """Write every file the ledgers hold, of their runs alike, with one COPY, committed on
        ``conn``. Should it fail, each ledger still holds its files."""
        for ledger in ledgers:
            ledger.wait()
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

    def _write(self, table: pa.Table, failures: list[BaseException] | None = None) -> None:
        try:
            with wrapped("the ledger write"), self.conn.cursor() as cur:
                cur.adbc_ingest("sync_run_files", table, mode="append", db_schema_name="etl")
            commit(self.conn, "the ledger write")
        except BaseException as error:
            if failures is None:
                raise
            failures.append(error)


def run_file_hashes(
    conn: Connection, wanted: Sequence[tuple[int, int, list[str]]]
) -> dict[int, dict[str, str]]:
    """run id -> file -> sha256 as the run recorded it, for each (account id, run id, files)
    of ``wanted``, in one statement."""
    asked = [(a, r, f) for a, r, files in wanted for f in files]
    found: dict[int, dict[str, str]] = {run_id: {} for _, run_id, _ in wanted}
    if not asked:
        return found
    accounts, runs, files = (list(column) for column in zip(*asked, strict=True))
    for run_id, file, sha256 in execute(conn, "run_file_hashes", (accounts, runs, files)):
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


def by_account(table: pa.Table, account_ids: Sequence[int]) -> dict[int, pa.Table]:
    """``table``'s rows by their ``account_id`` (that column left out), for each of
    ``account_ids``."""
    rest = table.drop_columns("account_id")
    if len(account_ids) == 1:
        return {account_ids[0]: rest}
    column = table.column("account_id")
    return {a: rest.filter(pc.equal(column, a)) for a in account_ids}
