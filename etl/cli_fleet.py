"""``etl sync --accounts-dir DIR``: a day (or a range of days) of many accounts."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from etl import log
from etl.cli_args import days_of, sync_options
from etl.cli_db import resolve_database
from etl.cli_hints import rerun_command
from etl.errors import UsageError

if TYPE_CHECKING:
    from etl.fleet_report import Outcome


def run_fleet_days(args: argparse.Namespace, entities: tuple[str, ...]) -> int:
    """``--accounts-dir``: the day, or each day of a range in turn. In a range each account
    syncs the days it has; one that fails or is refused on a day is left out of the days
    after (it would skip a day), and the others go on: one account's trouble stops nothing
    of the others'. The end names the accounts left behind, with the command that goes on."""
    from etl import fleet

    if ".." not in args.day:
        args.range_days = [args.day]
        return run_fleet(args, entities)[0]
    if args.results is not None:
        raise UsageError("--results takes one day, not a range")
    if not args.accounts_dir.is_dir():
        raise UsageError(f"--accounts-dir {args.accounts_dir}: no such folder")
    named = fleet.parse_accounts(args.accounts) if args.accounts is not None else None
    fleet.check_keys(named or [])
    folders = (
        [args.accounts_dir / key for key in named]
        if named is not None
        else [Path(e.path) for e in os.scandir(args.accounts_dir) if e.is_dir()]
    )
    args.range_days = days_of(args.day, folders, one_account=False)
    stopped: dict[str, str] = {}  # account -> the day it failed or was refused
    # a named account with none of the days (a mistyped key) fails the first, as alone it would
    absent = {
        key
        for key in named or ()
        if not any(fleet.has_day(args.accounts_dir / key, day) for day in args.range_days)
    }
    for day in args.range_days:
        args.day = day
        listed = named if named is not None else fleet.find_accounts(args.accounts_dir, day, None)
        keys = [
            key
            for key in listed
            if key not in stopped and (fleet.has_day(args.accounts_dir / key, day) or key in absent)
        ]
        if not keys:
            continue
        code, outcomes = run_fleet(args, entities, keys)
        if code == 130:
            return code
        for outcome in outcomes:
            if outcome.status != "succeeded":
                stopped.setdefault(outcome.key, day)
    for day in dict.fromkeys(stopped.values()):
        keys = [key for key, at in stopped.items() if at == day]
        resume = argparse.Namespace(**{**vars(args), "day": day, "accounts": ",".join(keys)})
        print(
            f"etl: {len(keys)} account(s) stopped at {day}; once fixed, go on with "
            f"`{rerun_command(resume)}`",
            file=sys.stderr,
        )
    return 1 if stopped else 0


def run_fleet(
    args: argparse.Namespace, entities: tuple[str, ...], keys: list[str] | None = None
) -> tuple[int, list[Outcome]]:
    """``--accounts-dir``: the day of every account (of ``keys``, in a range), on worker
    processes; a summary on stdout; exit 0 if every account succeeded, else 1 (130 after
    Ctrl-C), and how each account ended."""
    from etl import db, fleet, fleet_report, fleet_worker
    from etl.migrate import migrate
    from etl.progress import FleetProgress

    if keys is None:
        named = fleet.parse_accounts(args.accounts) if args.accounts is not None else None
        keys = fleet.find_accounts(args.accounts_dir, args.day, named)
    missing = fleet.without_day(args.accounts_dir, args.day, keys)
    keys = [key for key in keys if key not in missing]
    url, _server = resolve_database(args)

    def weighed() -> list[fleet_worker.Job]:
        """The accounts as jobs, once the schema is up to date (the workers start meanwhile)."""
        conn = db.connect(url)
        try:
            applied = migrate(conn, args.lock_timeout)
            if applied:
                log.get_logger().info("migrated", files=applied)
            return fleet.weigh(conn, args.accounts_dir, args.day, keys)
        finally:
            db.close(conn)

    log_format = args.log_format or ("console" if sys.stderr.isatty() else "json")
    # a worker is one core's work: the single-account speed-ups would take another's
    options = dataclasses.replace(sync_options(args, args.accounts_dir), serial=True)
    settings = fleet_worker.FleetSettings(
        url, args.day, entities, options, args.lock_timeout, log_format, args.verbose
    )
    on_terminal = log_format == "console" and sys.stderr.isatty()
    total = len(keys) + len(missing)
    progress = FleetProgress(f"day {args.day}", total, sys.stderr) if on_terminal else None
    logger = log.get_logger()
    log.get_logger().info("fleet_started", day=args.day, accounts=total, workers=args.workers)

    ended: list[fleet_report.Outcome] = []  # as they come: after Ctrl-C, those that ended

    def on_outcome(outcome: fleet_report.Outcome) -> None:
        ended.append(outcome)
        if progress is not None:
            progress.account_done(outcome.status == "succeeded", outcome.rows)
        elif outcome.status == "succeeded":
            logger.info("account_synced", **vars(outcome))
        else:
            logger.error("account_" + outcome.status, **vars(outcome))

    started = time.perf_counter()
    for key, message in missing.items():
        on_outcome(fleet_report.Outcome(key, "failed", message=message))
    interrupted = False
    try:
        outcomes = ended[:]  # the accounts without the day
        if keys:
            workers = min(args.workers, len(keys))
            outcomes += fleet.run_fleet(settings, weighed, workers, on_outcome)  # largest first
    except KeyboardInterrupt:
        interrupted, outcomes = True, ended
    finally:  # the progress line ends before anything else is said, an error too
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - started
    document = fleet_report.results_document(args.day, outcomes, seconds)
    totals = {k: document[k] for k in ("succeeded", "failed", "refused", "rows", "seconds")}
    logger.info("fleet_synced", day=args.day, accounts=total, **totals)
    if interrupted:
        print(f"interrupted: {len(outcomes)} of {total} accounts ended", file=sys.stderr)
    print(fleet_report.summary(args.day, outcomes, seconds))
    written = args.results is None or write_results(args.results, document)
    if interrupted:
        return 130, outcomes
    return 0 if written and all(o.status == "succeeded" for o in outcomes) else 1, outcomes


def write_results(path: Path, document: dict[str, object]) -> bool:
    """The results document written to ``path``; whether it was (if not, why is said)."""
    try:
        path.write_text(json.dumps(document, indent=2) + "\n")
    except OSError as error:
        print(f"etl: error: --results {path}: cannot write: {error.strerror}", file=sys.stderr)
        return False
    return True
