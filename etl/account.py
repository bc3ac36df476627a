"""An account's turn at the database (or a fleet's chunk of accounts'): its lock, the schema
held still, its id."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from etl import db, log
from etl.errors import DatabaseError, EtlError, LockTimeoutError
from etl.ledger import record_unstarted_run
from etl.locks import account_lock, account_locks, schema_in_use
from etl.log import get_logger
from etl.migrate import migrate


@contextmanager
def account_session(
    conn: db.Connection,
    account: str,
    *,
    lock_timeout: float,
    migrate_first: bool = False,
    unstarted: tuple[str, tuple[str, ...], datetime | None, bool] | None = None,
) -> Iterator[int]:
    """Hold the account's lock (runs of one account never interleave), migrate the schema if
    ``migrate_first``, hold the schema still for the runs inside, and yield the account's id
    (the account created if new).

    A run that cannot take a lock in time fails with a LockTimeoutError; with ``unstarted``
    (day, entities, sync time, forced) its entities are recorded in the ledger as failed
    first, where the database has a ledger already."""
    try:
        with account_lock(conn, account, lock_timeout):
            if migrate_first:  # under the lock: a run waiting for it changes nothing at all
                applied = migrate(conn, lock_timeout)
                if applied:
                    get_logger().info("migrated", files=applied)
            with schema_in_use(conn, lock_timeout):
                yield db.ensure_account(conn, account)
    except LockTimeoutError as error:
        if unstarted is not None:
            record_unstarted(conn, account, *unstarted, message=str(error))
        raise


@contextmanager
def accounts_session(
    conn: db.Connection,
    accounts: list[str],
    *,
    lock_timeout: float,
    unstarted: tuple[str, tuple[str, ...], datetime | None, bool],
) -> Iterator[tuple[dict[str, int], dict[str, EtlError]]]:
    """:func:`account_session` for several accounts at once (a fleet's chunk): their locks
    tried and their ids read with one statement each, the schema held still once for all.
    Yields the ids of the accounts whose lock was taken, by key, and the error of each other
    account: a lock not taken in time (its runs recorded in the ledger as failed, see
    :func:`record_unstarted`), or its id not to be had."""
    with (
        account_locks(conn, accounts, lock_timeout) as timed_out,
        contextlib.ExitStack() as held,
    ):
        failed: dict[str, EtlError] = dict(timed_out)
        locked = [key for key in accounts if key not in failed]
        if locked:
            try:
                held.enter_context(schema_in_use(conn, lock_timeout))
            except LockTimeoutError as error:
                failed.update(dict.fromkeys(locked, error))
                locked = []
        for key, reason in failed.items():
            with log.bound(account=key):
                record_unstarted(conn, key, *unstarted, message=str(reason))
        yield account_ids(conn, locked, failed), failed


def account_ids(
    conn: db.Connection, accounts: list[str], failed: dict[str, EtlError]
) -> dict[str, int]:
    """The accounts' ids by key, the accounts created if new, with one statement; should that
    fail, each account's on its own (an account whose id cannot be had gets its error in
    ``failed``)."""
    try:
        return db.ensure_accounts(conn, accounts)
    except DatabaseError:
        with contextlib.suppress(DatabaseError):
            db.rollback(conn)
    ids = {}
    for key in accounts:
        try:
            ids[key] = db.ensure_account(conn, key)
        except DatabaseError as error:
            failed[key] = error
    return ids


def record_unstarted(
    conn: db.Connection,
    account: str,
    day: str,
    entities: tuple[str, ...],
    synced_at: datetime | None,
    forced: bool,
    *,
    message: str,
) -> None:
    """Ledger rows 'failed' for runs that never started; none on a database without a ledger
    (never migrated, or by an older etl): the lock's error is still the one said."""
    with contextlib.suppress(DatabaseError):
        account_id = db.ensure_account(conn, account)
        for entity in entities:
            record_unstarted_run(
                conn, account_id, day, entity, synced_at or datetime.now(UTC), forced, message
            )
