"""Apply: one call of the stored procedure applies a staged (entity, day) in one transaction."""

from __future__ import annotations

import contextlib

import adbc_driver_manager

from etl import db
from etl.errors import DatabaseError, RefusedError
from etl.server import cancelled_by_user, driver_message

GUARD_REFUSED = "ET001"  # SQLSTATE raised by a safety guard in etl.apply_sync_v3


def apply_run(
    conn: db.Connection, account_id: int, run_id: int, *, allow_mass_removal: bool
) -> None:
    """Call ``etl.apply_sync_v3`` for the account's staged run, in a transaction the caller
    commits; roll back on any failure."""
    try:
        with conn.cursor() as cur:
            cur.execute(db.queries()["apply"], (account_id, run_id, allow_mass_removal))
    except adbc_driver_manager.Error as error:
        with contextlib.suppress(adbc_driver_manager.Error):  # a lost connection has no transaction
            conn.rollback()
        if cancelled_by_user(error):
            raise KeyboardInterrupt from error
        message = driver_message(error)
        if getattr(error, "sqlstate", None) == GUARD_REFUSED:
            raise RefusedError(message) from error
        raise DatabaseError(f"database error during apply: {message}") from error
