"""Benchmarks: ``python -m bench --scale S|M|L`` (one account, day1 to day3) and
``python -m bench --fleet N`` (day1 and day2 of N small accounts); with ``--against REV``, this
tree beside revision REV, alternating. See bench/scale.py, bench/fleet.py and bench/compare.py
for what they measure."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bench.common import ROOT
from bench.compare import compare_fleet, compare_scale
from bench.fleet import bench_fleet
from bench.scale import bench
from etl import synth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(synth.SCALES), default="S")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument(
        "--other-accounts",
        type=int,
        default=0,
        metavar="N",
        help="first sync N small accounts into the database, which the benched one then shares",
    )
    parser.add_argument(
        "--fleet", type=int, metavar="N", help="bench a fleet of N small accounts instead"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--against",
        metavar="REV",
        help="time this tree beside git revision REV instead, alternating, on fresh databases",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of each, medians reported (default: 3 with --against, else 1 for --fleet)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="DAYS",
        help="with --fleet: give every account DAYS days of history before day2",
    )
    args = parser.parse_args(argv)
    if args.history and not args.fleet:
        parser.error("--history takes --fleet N")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds takes a number of 1 or more")
    if args.rounds is not None and not (args.fleet or args.against):
        parser.error("--rounds takes --fleet N or --against REV")
    fleet_days = 2 if args.days == 3 else args.days  # a fleet's default is day1 and day2
    if args.against:
        return against(args, fleet_days)
    if args.fleet:
        rounds = args.rounds or 1
        report = bench_fleet(
            args.fleet, fleet_days, args.workers, ROOT / ".bench", args.history, rounds
        )
        history = f"-history-{args.history}" if args.history else ""
        write(report, f"fleet-{args.fleet}{history}")
        return 0 if not report["sample_differs"] else 1
    report = bench(args.scale, args.days, other_accounts=args.other_accounts)
    write(report, args.scale + (f"-with-{args.other_accounts}" if args.other_accounts else ""))
    return 0 if report["rerun_changed"] == 0 else 1


def against(args: argparse.Namespace, fleet_days: int) -> int:
    """``--against REV``: this tree and REV's, alternating."""
    workdir = ROOT / ".bench"
    rounds = args.rounds or 3
    if args.fleet:
        report = compare_fleet(
            args.fleet, fleet_days, args.workers, args.against, rounds, workdir, args.history
        )
        history = f"-history-{args.history}" if args.history else ""
        write(report, f"fleet-{args.fleet}{history}-against")
    else:
        report = compare_scale(args.scale, args.days, args.against, rounds, workdir)
        write(report, f"{args.scale}-against")
    return 0


def write(report: dict[str, Any], name: str) -> None:
    """The report as .bench/<name>.json."""
    out = ROOT / ".bench" / f"{name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
