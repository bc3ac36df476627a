"""What to run next when a sync stops early: the command that goes on (or re-runs the day)
as the user gave it, and what a range or a day had done by then."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from etl import ENTITIES, log


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


def days_before(args: argparse.Namespace) -> list[str]:
    """The days of a range synced before the day under way."""
    days = getattr(args, "range_days", None) or [args.day]
    return days[: days.index(args.day)] if args.day in days else []


def days_done(args: argparse.Namespace) -> str:
    """What a range synced before the day under way: "nothing was synced" if nothing."""
    done = days_before(args)
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
    """The command that syncs the day again, with the options the user gave (entities already
    applied are applied again as no changes); for a range, from that day (or ``first_day``) to
    its end, unless not ``rest_of_range``. A database URL given on the command line is shown
    masked: the user puts theirs back."""
    first = first_day or args.day
    days = getattr(args, "range_days", None) or [args.day]
    last = days[-1]
    day = f"{first}..{last}" if rest_of_range and last != first else first
    words = ["etl", "sync", "--day", day]
    if getattr(args, "accounts_dir", None) is not None:
        words += ["--accounts-dir", str(args.accounts_dir)]
        words += ["--accounts", args.accounts] if args.accounts else []
        words += ["--workers", str(args.workers)]
    else:
        words += ["--account", args.account] if args.account != "default" else []
        words += ["--data-dir", str(args.data_dir)] if args.data_dir != Path("fixtures") else []
    if with_entity and args.entity != "all":
        words += ["--entity", args.entity]
    if args.synced_at is not None:
        words += ["--synced-at", args.synced_at.isoformat()]
    words += ["--force"] if args.force else []
    words += ["--allow-mass-removal"] if args.allow_mass_removal else []
    words += ["--home", str(args.home)] if args.home is not None else []
    words += ["--database-url", log.mask_url(args.database_url)] if args.database_url else []
    return " ".join(words)
