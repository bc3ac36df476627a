"""The advisory locks a run holds: its account's (runs of one account never interleave) and the
schema's, shared (a migration takes it alone). Each is tried until taken or its timeout passes."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from etl.db import Connection, commit, execute, rollback
from etl.errors import DatabaseError, LockTimeoutError
from etl.log import get_logger


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
