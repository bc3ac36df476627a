"""The benchmark of one account: ``python -m bench --scale S`` (``just bench S``).

Generates the scale's days once (``etl.synth``, seed 1, kept under ``.bench/``), then syncs day1
to day3 on a fresh database, each day in its own ``python -m etl`` process, and prints per day:
seconds per stage summed over entities (stages of neighbouring entities overlap), the sync's
own seconds (work), rows per second, the process's peak RSS and wall time,
and the *floor* measured in the same run: reading every input byte, decoding it with msgspec
Structs of only the fields used, and bulk-loading the day's final rows into empty unlogged
tables. A re-run of the last day must change nothing. Figures go to ``.bench/<scale>.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    FINAL_TABLES,
    FLOOR_DECODERS,
    ROOT,
    RUN_ETL,
    etl_env,
    fetch,
    fresh_database,
    load_floor,
    read_folder,
    warm_page_cache,
)
from etl import cli, db, synth
from etl.log import mask_url

STAGES = ("list", "decode", "plan", "stage", "apply")


def data_dir(workdir: Path, scale: str, days: int) -> Path:
    """The scale's days, generated on first use."""
    folder = workdir / f"{scale}-seed1-days{days}"
    if not (folder / f"sync-day{days}").is_dir():
        started = time.perf_counter()
        synth.generate(scale, days, 1, folder)
        print(f"generated {folder} in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def run_day(url: str, folder: Path, day: str, *extra: str, root: Path = ROOT) -> dict[str, Any]:
    """One ``python -m etl`` process for ``day`` (every entity, unless ``extra`` options say
    otherwise), of the tree at ``root``: its stage seconds, rows, peak RSS and wall time."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            *(sys.executable, "-c", RUN_ETL, "--day", day, "--data-dir", str(folder)),
            *("--database-url", url, "--log-format", "json", "--verbose", *extra),
        ],
        cwd=root,
        env=etl_env(root),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"etl failed on {day}:\n{result.stderr}")
    seconds = dict.fromkeys(STAGES, 0.0)
    rows = 0
    changed = 0
    work = 0.0
    for line in result.stderr.splitlines():
        if line.startswith("peak_rss_kb"):
            peak_kb = int(line.split()[1])
        elif '"event": "day_synced"' in line:  # the sync's own time: its stages overlap
            work = json.loads(line)["seconds"]
        elif '"event": "synced"' in line:
            event = json.loads(line)
            for stage, spent in event["seconds"].items():
                seconds[stage] = seconds.get(stage, 0.0) + spent
            rows += event["staged"] + event.get("pairs_staged", 0) + event.get("members_staged", 0)
            changed += event["inserted"] + event["updated"] + event["removed"]
    return {
        "wall_s": round(wall, 3),
        "work_s": round(work, 3),
        "stages_s": {k: round(v, 3) for k, v in seconds.items()},
        "rows": rows,
        "changed": changed,
        "peak_rss_mb": peak_kb // 1024,
    }


def floor(url: str, folder: Path, day: str) -> dict[str, float]:
    """The physical floor of one day: read every byte, decode with minimal Structs, bulk-load
    the day's final rows (as etl left them) into empty unlogged tables."""
    read_s = decode_s = 0.0
    for kind, decoder in FLOOR_DECODERS.items():
        started = time.perf_counter()
        pages = read_folder(folder / f"sync-{day}" / kind)
        read_s += time.perf_counter() - started
        started = time.perf_counter()
        for page in pages:
            decoder.decode(page)
        decode_s += time.perf_counter() - started
    conn = db.connect(url)
    try:
        # Identifiers come from the fixed FINAL_TABLES; the account is bound. The bench's own
        # account is 'default'.
        account = db.account_id(conn, "default")
        tables = {
            t: fetch(conn, f"SELECT * FROM etl.{t} WHERE account_id = $1", (account,))  # noqa: S608
            for t in FINAL_TABLES
        }
        load_s, _ = load_floor(conn, tables)
    finally:
        conn.close()
    total = read_s + decode_s + load_s
    return {
        "read_s": round(read_s, 3),
        "decode_s": round(decode_s, 3),
        "load_s": round(load_s, 3),
        "total_s": round(total, 3),
    }


def fill_with_accounts(url: str, accounts: int, workdir: Path) -> None:
    """Sync day1 of ``accounts`` small synthetic accounts (``synth.generate_fleet``) into the
    database, one after the other in this process: the others that the bench's account then
    shares the database with."""
    folder = workdir / f"fleet-{accounts}-seed1-days1"
    if not folder.is_dir():
        synth.generate_fleet(accounts, 1, 1, folder)
    started = time.perf_counter()
    for number in range(1, accounts + 1):
        key = synth.fleet_key(number)
        argv = ["--day", "day1", "--data-dir", str(folder / key), "--account", key]
        argv += ["--database-url", url, "--log-format", "json"]
        with contextlib.redirect_stderr(io.StringIO()):
            if cli.main(argv) != 0:
                raise SystemExit(f"filling the database: account {key} failed")
    print(f"{accounts} other accounts synced in {time.perf_counter() - started:.1f} s", flush=True)


def bench(
    scale: str, days: int, workdir: Path = ROOT / ".bench", other_accounts: int = 0
) -> dict[str, Any]:
    folder = data_dir(workdir, scale, days)
    report: dict[str, Any] = {"scale": scale, "other_accounts": other_accounts, "days": {}}
    with fresh_database() as url:
        print(f"database {mask_url(url)}", flush=True)
        if other_accounts:
            fill_with_accounts(url, other_accounts, workdir)
        for n in range(1, days + 1):
            day = f"day{n}"
            warm_page_cache(folder, day)
            figures = run_day(url, folder, day)
            figures["floor"] = floor(url, folder, day)
            work = figures["work_s"]
            figures["ratio_to_floor"] = round(work / figures["floor"]["total_s"], 2)
            figures["rows_per_s"] = round(figures["rows"] / work) if work else None
            report["days"][day] = figures
            print_day(day, figures)
        rerun = run_day(url, folder, f"day{days}")
        report["rerun_changed"] = rerun["changed"]
        print(f"re-run of day{days}: {rerun['changed']} rows changed (must be 0)", flush=True)
    return report


def print_day(day: str, f: dict[str, Any]) -> None:
    stages = " ".join(f"{k}={v:.2f}" for k, v in f["stages_s"].items())
    print(
        f"{day}: {stages} | work {f['work_s']:.2f} s, wall {f['wall_s']:.2f} s,"
        f" {f['rows']} rows, {f['rows_per_s']} rows/s, peak RSS {f['peak_rss_mb']} MB"
        f" | floor {f['floor']['total_s']:.2f} s (read {f['floor']['read_s']:.2f},"
        f" decode {f['floor']['decode_s']:.2f}, load {f['floor']['load_s']:.2f})"
        f" | etl/floor {f['ratio_to_floor']}",
        flush=True,
    )
