"""This tree against another revision: ``python -m bench --scale M --against REV`` (or
``--fleet N --against REV``).

This machine's timings drift by 20% within an hour, so a figure means something only beside a
baseline run in the same session. REV is checked out in a git worktree; each round syncs the
days on a fresh database once with this tree and once with REV's, the order swapped from round
to round. Per day it prints every round's seconds of both -- a scale's ``work``, a fleet
command's wall -- their medians, and this tree's median over REV's.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import ROOT, fresh_database, warm_page_cache
from bench.fleet import age, fleet_dir, run_fleet_command
from bench.scale import data_dir, run_day
from etl import synth

Side = Callable[[Path], dict[str, float]]  # a round of one tree (its root) -> seconds by day


@contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """``revision`` checked out (detached) in a temporary git worktree of this repository."""
    with tempfile.TemporaryDirectory(prefix="etl-bench-against-") as scratch:
        tree = Path(scratch) / "tree"
        git("worktree", "add", "--quiet", "--detach", str(tree), revision)
        try:
            yield tree
        finally:
            git("worktree", "remove", "--force", str(tree))


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def compare(what: str, revision: str, commit: str, rounds: int, side: Side) -> dict[str, Any]:
    """``side`` run ``rounds`` times for this tree and for ``revision``'s (``commit``),
    alternating."""
    print(f"{what}: this tree against {revision} ({commit}), {rounds} rounds", flush=True)
    seconds: dict[str, dict[str, list[float]]] = {"this": {}, "against": {}}
    with checkout(commit) as tree:
        for number in range(rounds):
            order = [("this", ROOT), ("against", tree)]
            for name, root in order if number % 2 == 0 else order[::-1]:
                for day, spent in side(root).items():
                    seconds[name].setdefault(day, []).append(spent)
    report: dict[str, Any] = {"what": what, "against": revision, "commit": commit, "days": {}}
    for day, ours in seconds["this"].items():
        theirs = seconds["against"][day]
        ratio = statistics.median(ours) / statistics.median(theirs)
        report["days"][day] = {"this": ours, "against": theirs, "ratio": round(ratio, 2)}
        print(
            f"{day}: this {' / '.join(f'{s:.2f}' for s in ours)}"
            f" | {revision} {' / '.join(f'{s:.2f}' for s in theirs)}"
            f" | medians {statistics.median(ours):.2f} / {statistics.median(theirs):.2f}"
            f" = {ratio:.2f}x",
            flush=True,
        )
    return report


def compare_scale(
    scale: str, days: int, revision: str, rounds: int, workdir: Path
) -> dict[str, Any]:
    """A scale's days, ``work`` seconds (the sync's own, from its log)."""
    commit = git("rev-parse", "--short", revision)  # before any data is generated
    folder = data_dir(workdir, scale, days)

    def side(root: Path) -> dict[str, float]:
        with fresh_database() as url:
            spent = {}
            for n in range(1, days + 1):
                warm_page_cache(folder, f"day{n}")
                spent[f"day{n}"] = run_day(url, folder, f"day{n}", root=root)["work_s"]
            return spent

    return compare(f"scale {scale}, work seconds", revision, commit, rounds, side)


def compare_fleet(
    accounts: int,
    days: int,
    workers: int,
    revision: str,
    rounds: int,
    workdir: Path,
    history_days: int = 0,
) -> dict[str, Any]:
    """A fleet's days, the fleet command's wall seconds (with ``history_days``, on a database
    given that many days of history after day1)."""
    commit = git("rev-parse", "--short", revision)  # before any data is generated
    folder = fleet_dir(workdir, accounts, days)
    keys = [synth.fleet_key(n) for n in range(1, accounts + 1)]

    def side(root: Path) -> dict[str, float]:
        with fresh_database() as url:
            spent = {}
            for n in range(1, days + 1):
                if n == 2 and history_days:
                    age(url, history_days)
                for key in keys:
                    warm_page_cache(folder / key, f"day{n}")
                ran = run_fleet_command(url, folder, f"day{n}", workers, root=root)
                spent[f"day{n}"] = round(ran["wall_s"], 3)
            return spent

    what = f"{accounts} accounts, fleet command wall seconds"
    if history_days:
        what += f", {history_days} days of history before day2"
    return compare(what, revision, commit, rounds, side)
