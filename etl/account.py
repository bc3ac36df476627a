"""One account's turn at the database: its lock, the schema held still, its id."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from etl import db
from etl.errors import DatabaseError, LockTimeoutError
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
        with db.account_lock(conn, account, lock_timeout):
            if migrate_first:  # under the lock: a run waiting for it changes nothing at all
                applied = migrate(conn, lock_timeout)
                if applied:
                    get_logger().info("migrated", files=applied)
            with db.schema_in_use(conn, lock_timeout):
                yield db.ensure_account(conn, account)
    except LockTimeoutError as error:
        if unstarted is not None:
            record_unstarted(conn, account, *unstarted, message=str(error))
        raise


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
            db.record_unstarted_run(
                conn, account_id, day, entity, synced_at or datetime.now(UTC), forced, message
            )
