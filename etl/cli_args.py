"""Options and argument types the commands share, and what ``--day`` names."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etl.errors import EtlError, InputError, UsageError

DAY_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def add_account_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--account",
        type=account_key,
        default=None,
        help="the customer account the day belongs to: 1-64 of A-Za-z0-9._- (env ETL_ACCOUNT; "
        "default: default)",
    )


def account_key(text: str) -> str:
    from etl.fleet import is_account_key

    if not is_account_key(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an account key: 1-64 characters of A-Za-z0-9._-"
        )
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def parse_timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 timestamp (e.g. 2026-01-05T06:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def default_account_and_data_dir(args: argparse.Namespace) -> None:
    """The account and data folder not given: from the environment, else the defaults."""
    if getattr(args, "account", None) is None:
        try:
            args.account = account_key(os.environ.get("ETL_ACCOUNT") or "default")
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"ETL_ACCOUNT: {error}") from None
    if getattr(args, "data_dir", "") is None:
        args.data_dir = Path(os.environ.get("ETL_DATA_DIR") or "fixtures")


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (else env ETL_DATABASE_URL, DATABASE_URL, or libpq's PGHOST, "
        "PGHOSTADDR, PGPORT, PGDATABASE, PGSERVICE); with none, the embedded server in --home",
    )
    parser.add_argument(
        "--home",
        type=Path,
        help="etl's folder, whose postgres/ holds the embedded server's data (env ETL_HOME; "
        "default: .etl/ of a source checkout etl runs from, else ~/.local/share/etl)",
    )


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default=os.environ.get("ETL_LOG_FORMAT"),
        help="log rendering (env ETL_LOG_FORMAT; default: console on a terminal, else json)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug events and tracebacks")


def failed(error: EtlError, verbose: bool) -> int:
    """Say why on stderr in one line (``-v``: with the traceback); the exit status."""
    if verbose:
        import traceback

        traceback.print_exc()
    print(f"etl: error: {error}", file=sys.stderr)
    return error.exit_code


def days_of(spec: str, folders: Sequence[Path], *, one_account: bool) -> list[str]:
    """The days ``--day`` names: DAY, or FIRST..LAST -- the days of ``folders`` (data folders)
    from FIRST to LAST, in natural order. Each named day must be one of theirs (checked for a
    fleet's DAY when its accounts are found): an InputError lists the days there are."""
    from etl import source  # only now: it imports pyarrow

    first, dots, last = spec.partition("..")
    for label in (first, last) if dots else (first,):
        if not DAY_LABEL.match(label) or ".." in label:
            raise UsageError(
                f"--day {spec!r}: use letters, digits, '.', '_' or '-' (FIRST..LAST for a range)"
            )
    if one_account:
        for end in (first, last) if dots else (first,):
            check_day_exists(folders[0], end)
    if not dots:
        return [first]
    if source.natural_key(first) > source.natural_key(last):
        raise UsageError(f"--day {spec}: {first} sorts after {last}")
    found = sorted({d for f in folders for d in source.list_days(f)}, key=source.natural_key)
    for end in (first, last):
        if end not in found:
            raise InputError(f"no account has day {end}; the days there: {', '.join(found)}")
    low, high = source.natural_key(first), source.natural_key(last)
    return [d for d in found if low <= source.natural_key(d) <= high]


def check_day_exists(data_dir: Path, day: str) -> None:
    """An InputError listing the days there are, if ``data_dir`` has no folder of ``day``: told
    before any server starts, and nothing is recorded."""
    try:
        if (data_dir / f"sync-{day}").is_dir():
            return
    except OSError as error:  # the data folder cannot be searched
        raise InputError(f"--data-dir {data_dir}: cannot read: {error.strerror}") from None
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: no such folder")
    from etl import source  # only now: it imports pyarrow

    days = source.list_days(data_dir)
    there = f"the days there: {', '.join(days)}" if days else "it holds no sync-DAY folder"
    raise InputError(f"no day {day} in {data_dir} (no folder sync-{day}); {there}")


def sync_options(args: argparse.Namespace, data_dir: Path, progress: Any = None) -> Any:
    """The sync's options from the command line (``data_dir``: a data folder or accounts
    folder); a SyncOptions, imported only now (it brings polars and pyarrow)."""
    from etl.run import SyncOptions

    return SyncOptions(
        data_dir=data_dir,
        synced_at=args.synced_at,
        force=args.force,
        allow_mass_removal=args.allow_mass_removal,
        batch_values=args.batch_size,
        progress=progress,
        spill_dir=args.spill_dir,
        serial=args.serial,
    )
