"""Database access: connections, transactions, named queries, and an account's row.

Every statement is a named query from ``sql/queries.sql`` or a file of ``sql/`` (see
:mod:`etl.migrate`); values are always bound. Driver errors are wrapped in
:class:`~etl.errors.DatabaseError` here. The advisory locks are in :mod:`etl.locks`, the run
ledger in :mod:`etl.ledger`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
from adbc_driver_manager import AdbcConnection, AdbcDatabase

from etl.errors import DatabaseError
from etl.imports import without
from etl.server import open_database, wrapped

# ADBC's DB-API layer imports polars, when installed, to offer polars frames for parameters and
# results, which etl never asks for (it passes and fetches Arrow): a slow import for a command
# that needs no polars (a fleet's parent).
with without("polars"):
    from adbc_driver_manager.dbapi import Connection as Connection


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


def by_account(table: pa.Table, account_ids: Sequence[int]) -> dict[int, pa.Table]:
    """``table``'s rows by their ``account_id`` (that column left out), for each of
    ``account_ids``."""
    rest = table.drop_columns("account_id")
    if len(account_ids) == 1:
        return {account_ids[0]: rest}
    column = table.column("account_id")
    return {a: rest.filter(pc.equal(column, a)) for a in account_ids}
