"""``etl sync --day DAY|FIRST..LAST``: one account's days, with what to do next when one
fails or is interrupted (a fleet's: cli_fleet)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from etl import BATCH_VALUES, ENTITIES, __version__, log, server
from etl.cli_args import (
    add_account_option,
    add_database_options,
    add_log_options,
    days_of,
    default_account_and_data_dir,
    failed,
    parse_timestamp,
    positive_int,
    sync_options,
)
from etl.cli_db import resolve_database
from etl.cli_fleet import run_fleet_days
from etl.cli_hints import days_before, days_done, finish_hint, rerun_command
from etl.cli_views import VIEWS
from etl.errors import EtlError, Interrupted, UsageError
from etl.progress import Progress, TerminalProgress
from etl.signals import terminate_as_interrupt

if TYPE_CHECKING:
    from etl import db
    from etl.run import SyncOptions


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    views_help = "; ".join(f"etl {name}: {text}" for name, text in VIEWS.items())
    parser = argparse.ArgumentParser(
        prog="etl",
        description="Sync one day of help-desk admin exports (agents, roles, groups) into "
        "PostgreSQL.",
        epilog=f"Views of what is stored (each with --help): {views_help}. "
        "Exit status: 0 success, 1 a failed or refused run, 2 a usage error.",
    )
    parser.add_argument(
        "--day",
        required=True,
        help="the day to sync (folder sync-DAY of the data dir), or FIRST..LAST: those days in "
        "order, stopping at the first failure",
    )
    fleet = parser.add_argument_group(
        "a fleet", "one day of many accounts: account KEY reads ACCOUNTS_DIR/KEY/sync-DAY/"
    )
    fleet.add_argument(
        "--accounts-dir",
        type=Path,
        default=env("ETL_ACCOUNTS_DIR") or None,
        help="folder of account folders (env ETL_ACCOUNTS_DIR); every one that has the day, "
        "unless --accounts",
    )
    fleet.add_argument(
        "--accounts",
        metavar="KEY,...|@FILE",
        help="only these accounts: keys separated by commas, or @FILE with one key a line",
    )
    fleet.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes, each syncing one account at a time (default: one per core, "
        f"{os.cpu_count() or 1})",
    )
    fleet.add_argument(
        "--results", type=Path, help="write each account's outcome to this file, as JSON"
    )
    parser.add_argument(
        "--entity",
        choices=[*ENTITIES, "all"],
        default="all",
        help="what to sync; all = agents, roles, groups in that order (default: all)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding sync-<day>/ folders (env ETL_DATA_DIR; default: fixtures)",
    )
    add_account_option(parser)
    add_database_options(parser)
    parser.add_argument(
        "--synced-at",
        type=parse_timestamp,
        default=None,
        help="the sync time T as ISO-8601, of every day of a range (default: T of the day's "
        "first run, else now)",
    )
    parser.add_argument(
        "--force", action="store_true", help="apply a day older than the last applied one"
    )
    parser.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="apply a step that removes or inactivates more than half of what is present",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=float(env("ETL_LOCK_TIMEOUT", "300")),
        help="seconds to wait for another run's lock (env ETL_LOCK_TIMEOUT; default: 300)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run every stage and apply in one transaction, print what would change, then "
        "roll it all back (ledger rows included)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=env("ETL_BATCH_SIZE", str(BATCH_VALUES)),
        help="records plus mapping-array ids per decoded batch: peak memory follows it "
        f"(env ETL_BATCH_SIZE; default: {BATCH_VALUES:,})",
    )
    parser.add_argument(
        "--spill-dir",
        type=Path,
        default=env("ETL_SPILL_DIR") or None,
        help="folder for a run's decoded batches, removed when each entity ends (env "
        "ETL_SPILL_DIR; default: the system's temporary folder, TMPDIR)",
    )
    parser.add_argument(
        "--serial",
        action="store_true",
        help="one thing at a time: no apply beside the next entity's reading; the same "
        "result, slower on big days",
    )
    add_log_options(parser)
    parser.add_argument("--version", action="version", version=f"etl {__version__}")
    return parser


def main_sync(argv: list[str]) -> int:
    """``etl sync --day DAY ...`` (``sync`` may be left out)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.accounts_dir is not None:
        for option in ("account", "data_dir"):
            if getattr(args, option) is not None:
                parser.error(
                    f"--{option.replace('_', '-')} is for one account: not with --accounts-dir"
                )
        if args.dry_run:
            parser.error("--dry-run is for one account: not with --accounts-dir")
        if args.results is not None:
            check_results_path(parser, args.results)
        args.workers = args.workers or os.cpu_count() or 1
    elif args.accounts is not None or args.results is not None or args.workers is not None:
        parser.error("--accounts, --results and --workers go with --accounts-dir")
    log.configure(verbose=args.verbose, fmt=args.log_format)
    try:
        with terminate_as_interrupt():
            default_account_and_data_dir(args)
            return run(args)
    except Interrupted as error:
        before = days_before(args)
        synced = f" ({', '.join(before)} synced before)" if before else ""
        print(f"{error}{synced}; re-run `{rerun_command(args)}`", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # before any entity of the day began (starting, migrating, locking)
        print(f"interrupted: {days_done(args)}; re-run `{rerun_command(args)}`", file=sys.stderr)
        return Interrupted.exit_code
    except EtlError as error:
        if error.applied:
            print(f"etl: {finish_hint(args, error.applied)}", file=sys.stderr)
        elif len(getattr(args, "range_days", ())) > 1:
            hint = f"{days_done(args)}; once fixed, go on with `{rerun_command(args)}`"
            print(f"etl: {hint}", file=sys.stderr)
        return failed(error, args.verbose)


def check_results_path(parser: argparse.ArgumentParser, path: Path) -> None:
    """A usage error unless ``path`` can be a file in a folder there is: told before any
    account syncs, not after."""
    if path.is_dir():
        parser.error(f"--results {path}: is a folder; name the file to write")
    if not path.parent.is_dir():
        parser.error(f"--results {path}: no such folder {path.parent}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        parser.error(f"--results {path}: cannot write there")


def run(args: argparse.Namespace) -> int:
    if args.spill_dir is not None and not Path(args.spill_dir).is_dir():
        raise UsageError(f"--spill-dir {args.spill_dir}: no such folder")
    entities = ENTITIES if args.entity == "all" else (args.entity,)
    if args.accounts_dir is not None:
        return run_fleet_days(args, entities)
    args.range_days = days = days_of(args.day, [args.data_dir], one_account=True)
    args.day = days[0]
    if len(days) > 1 and args.dry_run:
        raise UsageError("--dry-run takes one day, not a range")
    url, _server = resolve_database(args)
    database = server.open_database(url)
    try:
        from etl import db
    except BaseException:
        database.close()
        raise
    # Everything imported lives until exit: freezing it keeps the collector off those objects,
    # during the run and in the collection at exit.
    gc.freeze()
    conn = db.connection(database)
    try:
        for day in days:  # a failure ends the range: its error is raised
            args.day = day
            # a dry run skips every commit, pending migrations' included, and rolls all back
            with db.uncommitted(conn) if args.dry_run else contextlib.nullcontext():
                run_on(conn, args, entities)
    finally:
        db.close(conn)
    return 0


def run_on(conn: db.Connection, args: argparse.Namespace, entities: tuple[str, ...]) -> None:
    from etl.account import account_session
    from etl.sync import day_summary, sync_day

    options = sync_options(args, args.data_dir, progress=terminal_progress(args.log_format))
    unstarted = None if args.dry_run else (args.day, entities, args.synced_at, args.force)
    with account_session(
        conn,
        args.account,
        lock_timeout=args.lock_timeout,
        migrate_first=True,
        unstarted=unstarted,
    ) as account_id:
        if args.dry_run:
            print(dry_run(conn, account_id, args.day, entities, options))
            return
        started = time.perf_counter()
        results = sync_day(conn, account_id, args.day, entities, options)
    if options.progress is not None:  # a person at a terminal: a few lines to end with
        seconds = time.perf_counter() - started
        print(day_summary(args.day, results, seconds), file=sys.stderr)


def terminal_progress(log_format: str | None) -> Callable[[str], Progress] | None:
    """A live progress line per entity when a person watches stderr and logs are for people."""
    if log_format == "json" or not sys.stderr.isatty():
        return None
    return lambda title: TerminalProgress(title, sys.stderr)


def dry_run(
    conn: db.Connection,
    account_id: int,
    day: str,
    entities: tuple[str, ...],
    options: SyncOptions,
) -> str:
    """Sync ``entities`` of the account's ``day`` and report the difference; the caller rolls it
    all back (``db.uncommitted``)."""
    from etl import dryrun
    from etl.sync import sync_day

    log.get_logger().info("dry_run", day=day, note="every step is rolled back at the end")
    dryrun.take_snapshot(conn, account_id)
    sync_day(conn, account_id, day, entities, dataclasses.replace(options, serial=True))
    return dryrun.diff_report(conn, account_id, day)
