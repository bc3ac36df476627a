"""Command line: ``python -m etl --day DAY [--entity E] ...`` syncs a day, and
``python -m etl status|tree|errors ...`` shows what is stored; exit 0 success, 1 a failed or
refused run, 2 a usage error."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from etl import BATCH_VALUES, ENTITIES, __version__, faults, log, server
from etl.dbcommands import (
    add_database_options,
    add_log_options,
    failed,
    main_db,
    main_psql,
    resolve_database,
)
from etl.errors import (
    EtlError,
    InputError,
    Interrupted,
    NoSuchAccountError,
    UsageError,
)
from etl.progress import Progress, TerminalProgress

if TYPE_CHECKING:
    from etl import db
    from etl.sync import SyncOptions

# What a sync needs beyond this module: polars, pyarrow and ADBC's DB-API layer come with them.
# They are imported while the database is reached (see import_in_background).
SYNC_MODULES = ("etl.db", "etl.account", "etl.sync", "etl.dryrun")

DAY_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VIEWS = {
    "status": "the ledger: each day and entity's last run, with status and counts",
    "tree": "the stored group hierarchy with member counts; inactive, orphans, cycles marked",
    "errors": "a day's quarantined records, by error type and field, with examples",
    "accounts": "the accounts of the database with their last day and status; "
    "`accounts delete KEY` removes one",
}


COMMANDS = {"db": main_db, "psql": main_psql}


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
        "--day", required=True, help="the day to sync: folder sync-DAY of the data dir"
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
        default=os.cpu_count() or 1,
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
    add_log_options(parser)
    parser.add_argument("--version", action="version", version=f"etl {__version__}")
    return parser


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


def build_view_parser(view: str) -> argparse.ArgumentParser:
    from etl import views

    parser = argparse.ArgumentParser(prog=f"etl {view}", description=VIEWS[view] + ".")
    parser.add_argument("--json", action="store_true", help="print it as JSON, for programs")
    if view == "accounts":
        parser.add_argument("action", nargs="?", choices=["delete"], help="delete KEY: remove it")
        parser.add_argument("key", nargs="?", type=account_key, help="the account to delete")
        parser.add_argument("--yes", action="store_true", help="delete without asking")
        add_database_options(parser)
        add_log_options(parser)
        return parser
    if view == "status":
        parser.add_argument("--day", help="only this day")
        parser.add_argument("--all", action="store_true", help="every run, not just the last")
    elif view == "tree":
        parser.add_argument("--group", type=positive_int, help="only this group's subtree")
    else:
        parser.add_argument("--day", required=True, help="the day whose errors to show")
        parser.add_argument(
            "--examples",
            type=positive_int,
            default=views.EXAMPLES,
            help=f"records shown per error type and field (default: {views.EXAMPLES})",
        )
    add_account_option(parser)
    add_database_options(parser)
    add_log_options(parser)
    return parser


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


def commands() -> str:
    """What ``etl`` alone prints: the commands, one line each."""
    lines = [
        "etl: sync help-desk admin exports (agents, roles, groups) into PostgreSQL",
        "",
        "commands:",
        "  etl sync --day DAY                      sync one day of one account",
        "  etl sync --day FIRST..LAST              sync the days from FIRST to LAST, in order",
        "  etl sync --day DAY --accounts-dir DIR   sync one day of many accounts",
        *(f"  etl {name:<35} {text.split(';')[0].split(', ')[0]}" for name, text in VIEWS.items()),
        "  etl db start|stop|url                   keep the embedded server running, stop it, "
        "its URL",
        "  etl psql                                psql on etl's database",
        "",
        "`etl COMMAND --help` for its options; `etl --version`.",
        "Exit status: 0 success, 1 a failed or refused run, 2 a usage error.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(commands(), file=sys.stderr)
        return 2
    if argv[0] in VIEWS:
        return main_view(argv[0], argv[1:])
    if argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] == "sync":
        argv = argv[1:]
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
    elif args.accounts is not None or args.results is not None:
        parser.error("--accounts and --results go with --accounts-dir")
    log.configure(verbose=args.verbose, fmt=args.log_format)
    gate = os.environ.get("ETL_TEST_PAUSE_GATE")
    try:
        default_account_and_data_dir(args)
        faults.configure(os.environ.get("ETL_TEST_PAUSE_AT"), Path(gate) if gate else None)
        return run(args)
    except Interrupted as error:
        print(f"{error}; re-run `{rerun_command(args)}`", file=sys.stderr)
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


def finish_hint(args: argparse.Namespace, applied: Sequence[str]) -> str:
    """For a day whose later entity failed: what was applied, and the commands that finish."""
    chosen = ENTITIES if args.entity == "all" else (args.entity,)
    left = [e for e in chosen if e not in applied]
    one_day = rerun_command(args, with_entity=False, rest_of_range=False)
    steps = [f"`{one_day} --entity {e}`" for e in left]
    later = days_after(args)
    if later:
        steps.append(f"`{rerun_command(args, first_day=later)}`")
    return f"{' and '.join(applied)} of {args.day} applied; once fixed, finish with " + (
        ", then ".join(steps)
    )


def days_done(args: argparse.Namespace) -> str:
    """What a range synced before the day under way: "nothing was synced" if nothing."""
    days = getattr(args, "range_days", None) or [args.day]
    done = days[: days.index(args.day)] if args.day in days else []
    if not done:
        return "nothing was synced"
    return f"{', '.join(done)} synced, nothing of {args.day}"


def days_after(args: argparse.Namespace) -> str | None:
    """The next day of a range being synced, if the current one is not its last."""
    days = getattr(args, "range_days", None) or [args.day]
    place = days.index(args.day)
    return days[place + 1] if place + 1 < len(days) else None


def rerun_command(
    args: argparse.Namespace,
    *,
    with_entity: bool = True,
    rest_of_range: bool = True,
    first_day: str | None = None,
) -> str:
    """The command that syncs the day again, as the user gave it (entities already applied
    are applied again as no changes); for a range, from that day (or ``first_day``) to its
    end, unless not ``rest_of_range``."""
    first = first_day or args.day
    days = getattr(args, "range_days", None) or [args.day]
    last = days[-1]
    words = [
        "etl",
        "sync",
        "--day",
        f"{first}..{last}" if rest_of_range and last != first else first,
    ]
    if getattr(args, "accounts_dir", None) is not None:
        return " ".join([*words, "--accounts-dir", str(args.accounts_dir)])
    if args.account != "default":
        words += ["--account", args.account]
    if args.data_dir != Path("fixtures"):
        words += ["--data-dir", str(args.data_dir)]
    if with_entity and args.entity != "all":
        words += ["--entity", args.entity]
    if args.synced_at is not None:
        words += ["--synced-at", args.synced_at.isoformat()]
    words += ["--force"] if args.force else []
    words += ["--allow-mass-removal"] if args.allow_mass_removal else []
    return " ".join(words)


def default_account_and_data_dir(args: argparse.Namespace) -> None:
    """The account and data folder not given: from the environment, else the defaults."""
    if getattr(args, "account", None) is None:
        try:
            args.account = account_key(os.environ.get("ETL_ACCOUNT") or "default")
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"ETL_ACCOUNT: {error}") from None
    if getattr(args, "data_dir", "") is None:
        args.data_dir = Path(os.environ.get("ETL_DATA_DIR") or "fixtures")


def main_view(view: str, argv: list[str]) -> int:
    """``etl status|tree|errors|accounts``: print the view on stdout (logs stay on stderr)."""
    parser = build_view_parser(view)
    args = parser.parse_args(argv)
    if view == "accounts" and (args.action is None) != (args.key is None):
        parser.error("use `etl accounts` to list, `etl accounts delete KEY` to delete one")
    log.configure(verbose=args.verbose, fmt=args.log_format)
    try:
        default_account_and_data_dir(args)
        text, code = show_view(view, args)
        print(text)
    except EtlError as error:
        return failed(error, args.verbose)
    return code


def show_view(view: str, args: argparse.Namespace) -> tuple[str, int]:
    """The view's text, and the exit status: 1 from ``status`` when an entity's latest run
    failed, was refused or was abandoned (for monitoring), else 0."""
    from etl import db, views

    url, _server = resolve_database(args, create=False)
    conn = db.connect(url)
    try:
        ready = db.execute(conn, "view_ready")[0][0]  # the schema is there
        if not ready and not args.json:
            return "nothing synced yet: this database has no etl schema", 0
        if view == "accounts":
            if args.action == "delete":
                return delete_account(conn, args.key, args.yes), 0
            accounts = views.account_rows(conn) if ready else []
            if args.json:
                return as_json({"accounts": accounts}), 0
            return views.accounts_text(accounts), 0
        account_id = db.account_id(conn, args.account) if ready else None
        if account_id is None:
            raise NoSuchAccountError(
                f"no account {args.account} in this database yet: sync a day of it first"
            )
        if view == "status":
            runs = views.ledger_runs(conn, account_id, args.day)
            under_way = db.execute(conn, "account_lock_held", (args.account,))[0][0]
            code = 1 if views.needs_attention(runs, under_way) else 0
            if args.json:
                return as_json(views.status_document(args.account, runs, args.all, under_way)), code
            return views.status_text(runs, args.day, args.all), code
        if view == "tree":
            rows = views.tree_rows(conn, account_id, args.group)
            if args.json:
                return as_json(views.tree_document(args.account, rows)), 0
            dim = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
            return views.tree_text(rows, args.group, dim=dim), 0
        entities = views.error_rows(conn, account_id, args.day, args.examples)
        if args.json:
            return as_json({"account": args.account, "day": args.day, "entities": entities}), 0
        return views.errors_text(entities, args.day), 0
    finally:
        db.close(conn)


def as_json(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2)


def delete_account(conn: db.Connection, key: str, yes: bool) -> str:
    """Delete the account ``key`` and every row it owns in one transaction, once confirmed
    (``yes``, or an answer on the terminal), while no run of it goes on."""
    from etl import db

    account_id = db.account_id(conn, key)
    if account_id is None:
        raise NoSuchAccountError(f"no account {key} in this database")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"not deleting account {key}: confirm with --yes (no terminal to ask)")
        answer = input(f"delete account {key} and all of its rows? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return f"account {key} kept"
    with db.account_lock(conn, key, timeout=0), db.schema_in_use(conn, timeout=10):
        deleted = db.delete_account(conn, account_id)
    rows = sum(deleted.values())
    log.get_logger().info("account_deleted", account=key, rows=rows, tables=deleted)
    return f"deleted account {key}: {rows} rows"


def run(args: argparse.Namespace) -> int:
    if args.spill_dir is not None and not Path(args.spill_dir).is_dir():
        raise UsageError(f"--spill-dir {args.spill_dir}: no such folder")
    entities = ENTITIES if args.entity == "all" else (args.entity,)
    if args.accounts_dir is not None:
        return run_fleet_days(args, entities)
    args.range_days = days = days_of(args.day, [args.data_dir], one_account=True)
    if len(days) > 1 and args.dry_run:
        raise UsageError("--dry-run takes one day, not a range")
    loading = import_in_background(SYNC_MODULES)
    try:
        url, _server = resolve_database(args)
        database = server.open_database(url)
    finally:
        loading.join()  # also on failure: no import may be cut off by the interpreter's exit
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
    if (data_dir / f"sync-{day}").is_dir():
        return
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: no such folder")
    from etl import source  # only now: it imports pyarrow

    days = source.list_days(data_dir)
    there = f"the days there: {', '.join(days)}" if days else "it holds no sync-DAY folder"
    raise InputError(f"no day {day} in {data_dir} (no folder sync-{day}); {there}")


def run_fleet_days(args: argparse.Namespace, entities: tuple[str, ...]) -> int:
    """``--accounts-dir``: each day of ``--day`` in turn; a day where an account failed or was
    refused ends the range (its exit status)."""
    folders = [args.accounts_dir]
    if ".." in args.day:
        if args.results is not None:
            raise UsageError("--results takes one day, not a range")
        if not args.accounts_dir.is_dir():
            raise UsageError(f"--accounts-dir {args.accounts_dir}: no such folder")
        folders = [Path(e.path) for e in os.scandir(args.accounts_dir) if e.is_dir()]
    args.range_days = days_of(args.day, folders, one_account=False)
    for day in args.range_days:
        args.day = day
        code = run_fleet(args, entities)
        if code != 0:
            return code
    return 0


def run_fleet(args: argparse.Namespace, entities: tuple[str, ...]) -> int:
    """``--accounts-dir``: the day of every account, on worker processes; a summary on stdout;
    exit 0 if every account succeeded, else 1 (130 after Ctrl-C)."""
    from etl import db, fleet
    from etl.migrate import migrate
    from etl.progress import FleetProgress
    from etl.sync import SyncOptions

    keys = fleet.parse_accounts(args.accounts) if args.accounts else None
    for key in keys or ():
        if not fleet.is_account_key(key):
            raise UsageError(f"--accounts: {key!r} is not an account key: 1-64 of A-Za-z0-9._-")
    keys = fleet.find_accounts(args.accounts_dir, args.day, keys)
    url, _server = resolve_database(args)
    conn = db.connect(url)
    try:
        applied = migrate(conn, args.lock_timeout)
        if applied:
            log.get_logger().info("migrated", files=applied)
        jobs = fleet.weigh(conn, args.accounts_dir, args.day, keys)
    finally:
        db.close(conn)
    log_format = args.log_format or ("console" if sys.stderr.isatty() else "json")
    options = SyncOptions(
        data_dir=args.accounts_dir,
        synced_at=args.synced_at,
        force=args.force,
        allow_mass_removal=args.allow_mass_removal,
        batch_values=args.batch_size,
        spill_dir=args.spill_dir,
    )
    settings = fleet.FleetSettings(
        url, args.day, entities, options, args.lock_timeout, log_format, args.verbose
    )
    on_terminal = log_format == "console" and sys.stderr.isatty()
    progress = FleetProgress(f"day {args.day}", len(jobs), sys.stderr) if on_terminal else None
    logger = log.get_logger()
    log.get_logger().info("fleet_started", day=args.day, accounts=len(jobs), workers=args.workers)

    ended: list[fleet.Outcome] = []  # as they come: after Ctrl-C, those that ended

    def on_outcome(outcome: fleet.Outcome) -> None:
        ended.append(outcome)
        if progress is not None:
            progress.account_done(outcome.status == "succeeded", outcome.rows)
        elif outcome.status == "succeeded":
            logger.info("account_synced", **vars(outcome))
        else:
            logger.error("account_" + outcome.status, **vars(outcome))

    started = time.perf_counter()
    interrupted = False
    try:
        outcomes = fleet.run_fleet(settings, jobs, args.workers, on_outcome)  # largest first
    except KeyboardInterrupt:
        interrupted, outcomes = True, ended
    seconds = time.perf_counter() - started
    if progress is not None:
        progress.close()
    document = fleet.results_document(args.day, outcomes, seconds)
    if args.results is not None:
        args.results.write_text(json.dumps(document, indent=2) + "\n")
    totals = {k: document[k] for k in ("succeeded", "failed", "refused", "rows", "seconds")}
    logger.info("fleet_synced", day=args.day, accounts=len(jobs), **totals)
    if interrupted:
        print(f"interrupted: {len(outcomes)} of {len(jobs)} accounts ended", file=sys.stderr)
    print(fleet.summary(args.day, outcomes, seconds))
    if interrupted:
        return 130
    return 0 if all(o.status == "succeeded" for o in outcomes) else 1


def import_in_background(modules: tuple[str, ...]) -> threading.Thread:
    """Import ``modules`` on another thread, started now; join it before using them.

    Importing polars, pyarrow and ADBC's DB-API layer holds the GIL for about 0.5 s, while
    starting the embedded server and the driver's first connect mostly wait without it, so the
    two overlap. A module that fails to import here is imported again, and fails with its
    error, where it is used."""

    def load() -> None:
        with contextlib.suppress(Exception):
            for name in modules:
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="etl-imports", daemon=True)
    thread.start()
    return thread


def run_on(conn: db.Connection, args: argparse.Namespace, entities: tuple[str, ...]) -> None:
    from etl.account import account_session
    from etl.sync import SyncOptions, day_summary, sync_day

    options = SyncOptions(
        data_dir=args.data_dir,
        synced_at=args.synced_at,
        force=args.force,
        allow_mass_removal=args.allow_mass_removal,
        batch_values=args.batch_size,
        progress=terminal_progress(args.log_format),
        spill_dir=args.spill_dir,
    )
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
        results = sync_day(conn, account_id, args.day, entities, options, overlap=True)
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
    sync_day(conn, account_id, day, entities, options)
    return dryrun.diff_report(conn, account_id, day)
