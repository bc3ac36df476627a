"""Reaching the database server: which server a command uses, the driver's handle on a URL,
and the driver's errors in etl's terms (the embedded server: etl.embedded).

Only light modules are imported here (ADBC's driver manager without its DB-API layer): the
command line imports polars, pyarrow and the DB-API layer only for the commands that use them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlencode

import adbc_driver_manager
import adbc_driver_postgresql

from etl.errors import DatabaseError
from etl.log import mask_secrets, mask_url


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
        reason = mask_secrets(driver_message(error), url)
        raise DatabaseError(f"cannot connect to {mask_url(url)}: {reason}") from error
    return database


# libpq's variables that name a server or a database: any of them set chooses that server
LIBPQ_SERVER = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE")


def configured_url(given: str | None) -> tuple[str, str] | None:
    """The URL of the server to use and where it was found -- ``given`` (--database-url),
    ETL_DATABASE_URL, DATABASE_URL, or libpq's PG* variables (libpq reads them itself) --
    else None: the embedded server."""
    if given:
        return given, "--database-url"
    for name in ("ETL_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(name):
            return os.environ[name], name
    libpq = [name for name in LIBPQ_SERVER if os.environ.get(name)]
    if libpq:
        return "postgresql://", " ".join(libpq)
    return None


def libpq_url() -> str:
    """A URL that says what libpq's PG* variables name (for a person or another tool): host,
    port, user, database and service; never the password."""
    env = os.environ.get
    host = env("PGHOST") or env("PGHOSTADDR") or ""
    socket = host.startswith("/")
    user = quote(env("PGUSER") or "", safe="")
    netloc = (f"{user}@" if user else "") + ("" if socket else quote(host, safe=""))
    netloc += f":{env('PGPORT')}" if env("PGPORT") and not socket else ""
    query = [("host", host)] if socket else []
    query += [("port", env("PGPORT") or "")] if socket and env("PGPORT") else []
    query += [("service", env("PGSERVICE") or "")] if env("PGSERVICE") else []
    database = quote(env("PGDATABASE") or "", safe="")
    return f"postgresql://{netloc}/{database}" + (f"?{urlencode(query)}" if query else "")
