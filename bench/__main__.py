"""Benchmarks: ``python -m bench --scale S|M|L`` (one account, day1 to day3) and
``python -m bench --fleet N`` (day1 and day2 of N small accounts); with ``--against REV``, this
tree beside revision REV, alternating. See bench/scale.py, bench/fleet.py and bench/compare.py
for what they measure."""

from __future__ import annotations

import argparse
import json
import os

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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each, with --against")
    args = parser.parse_args(argv)
    if args.against:
        return against(args)
    if args.fleet:
        days = 2 if args.days == 3 else args.days
        report = bench_fleet(args.fleet, days, args.workers, ROOT / ".bench")
        out = ROOT / ".bench" / f"fleet-{args.fleet}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
        return 0 if not report["sample_differs"] else 1
    report = bench(args.scale, args.days, other_accounts=args.other_accounts)
    name = args.scale + (f"-with-{args.other_accounts}" if args.other_accounts else "")
    out = ROOT / ".bench" / f"{name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if report["rerun_changed"] == 0 else 1


def against(args: argparse.Namespace) -> int:
    """``--against REV``: this tree and REV's, alternating; figures to .bench/*-against.json."""
    workdir = ROOT / ".bench"
    if args.fleet:
        days = 2 if args.days == 3 else args.days
        report = compare_fleet(args.fleet, days, args.workers, args.against, args.rounds, workdir)
        out = workdir / f"fleet-{args.fleet}-against.json"
    else:
        report = compare_scale(args.scale, args.days, args.against, args.rounds, workdir)
        out = workdir / f"{args.scale}-against.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
