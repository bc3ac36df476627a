"""The benchmark of a fleet: ``python -m bench --fleet N`` (``just bench-fleet N``).

Day1 and day2 of N small synthetic accounts: the fleet command, the same accounts as a process
per account-day run as many at a time, and the floor (read + decode + COPY of every account's
final rows), side by side in one run; account-days per minute, per-account p50/p95, peak RSS
per worker, the CPU per account-day of the server and of the fleet command (its workers
included), how busy that kept the machine's cores, and a sample of accounts compared with their
single-account runs. Figures go to ``.bench/fleet-N.json``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.common import (
    FINAL_TABLES,
    FLOOR_DECODERS,
    ROOT,
    RUN_ETL,
    account_state,
    admin,
    etl_env,
    fetch,
    fresh_database,
    load_floor,
    read_folder,
    warm_page_cache,
)
from etl import db, synth

# The same sync time in both databases, so that their accounts can be compared row by row.
FLEET_SYNCED_AT = {f"day{n}": f"2026-01-{n:02d}T06:00:00Z" for n in range(1, 29)}


def fleet_dir(workdir: Path, accounts: int, days: int) -> Path:
    folder = workdir / f"fleet-{accounts}-seed1-days{days}"
    if not (folder / synth.fleet_key(accounts) / f"sync-day{days}").is_dir():
        started = time.perf_counter()
        synth.generate_fleet(accounts, days, 1, folder)
        print(f"generated {folder} in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def run_fleet_command(
    url: str, folder: Path, day: str, workers: int, root: Path = ROOT
) -> dict[str, Any]:
    """``etl sync --accounts-dir`` for the day, of the tree at ``root``: wall time, the CPU
    seconds of the command and its workers, and each account's outcome."""
    with tempfile.TemporaryDirectory(prefix="etl-bench-fleet-") as scratch:
        results = Path(scratch) / "results.json"
        argv = ["sync", "--day", day, "--accounts-dir", str(folder), "--database-url", url]
        argv += ["--workers", str(workers), "--log-format", "json", "--results", str(results)]
        argv += ["--synced-at", FLEET_SYNCED_AT[day]]
        cpu_before = children_cpu_seconds()
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", RUN_ETL, *argv],
            cwd=root,
            env=etl_env(root),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        cpu = children_cpu_seconds() - cpu_before
        if not results.exists():
            raise SystemExit(f"the fleet command failed on {day}:\n{done.stderr[-3000:]}")
        document = json.loads(results.read_text())
    peak_kb = max(
        (int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak_rss")),
        default=0,
    )
    return {"wall_s": wall, "cpu_s": cpu, "document": document, "parent_rss_mb": peak_kb // 1024}


def children_cpu_seconds() -> float:
    """User and system CPU seconds of this process's ended children, theirs included (the fleet
    command waits for its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_process_per_account(
    url: str, folder: Path, day: str, keys: list[str], at_once: int
) -> float:
    """Each account's day as its own ``python -m etl`` process, ``at_once`` at a time: the wall
    time of them all."""
    started = time.perf_counter()
    waiting = list(keys)
    running: list[subprocess.Popen[bytes]] = []
    while waiting or running:
        while waiting and len(running) < at_once:
            key = waiting.pop(0)
            argv = ["--day", day, "--account", key, "--data-dir", str(folder / key)]
            argv += ["--database-url", url, "--log-format", "json"]
            argv += ["--synced-at", FLEET_SYNCED_AT[day]]
            running.append(
                subprocess.Popen(
                    [sys.executable, "-m", "etl", *argv],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(0.005)
        running = [process for process in running if process.poll() is None]
    return time.perf_counter() - started


def fleet_floor(url: str, folder: Path, day: str, keys: list[str]) -> dict[str, float]:
    """The floor of a fleet's day: every account's files read and decoded, and the day's final
    rows of every account bulk-loaded into empty unlogged tables, two ways: all accounts in one
    load (``total_s``), and each account's own load, summed (``total_each_s``: the issue's
    floor, which costs more)."""
    read_s = decode_s = 0.0
    for key in keys:
        for kind, decoder in FLOOR_DECODERS.items():
            started = time.perf_counter()
            pages = read_folder(folder / key / f"sync-{day}" / kind)
            read_s += time.perf_counter() - started
            started = time.perf_counter()
            for page in pages:
                try:
                    decoder.decode(page)
                except msgspec.ValidationError:  # a page with a bad record: decoded untyped
                    msgspec.json.decode(page)
            decode_s += time.perf_counter() - started
    conn = db.connect(url)
    try:
        tables = {t: fetch(conn, f"SELECT * FROM etl.{t}") for t in FINAL_TABLES}  # noqa: S608
        load_s, _ = load_floor(conn, tables)
        load_each_s, _ = load_floor(conn, tables, by_account=True)
    finally:
        conn.close()
    return {
        "read_s": read_s,
        "decode_s": decode_s,
        "load_s": load_s,
        "load_each_s": load_each_s,
        "total_s": read_s + decode_s + load_s,
        "total_each_s": read_s + decode_s + load_each_s,
    }


def server_cpu_seconds(url: str) -> float:
    """CPU seconds the server's processes have used so far: the postmaster with the backends it
    has reaped, and those still running (Linux /proc; the server on this machine)."""
    conn = db.connect(url)
    try:
        data_directory = (
            fetch(conn, "SELECT current_setting('data_directory')").column(0)[0].as_py()
        )
    finally:
        conn.close()
    postmaster = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def same_as_alone(fleet_url: str, alone_url: str, keys: list[str]) -> list[str]:
    """The sampled accounts whose state differs between the two databases."""
    differ = []
    one, other = db.connect(fleet_url), db.connect(alone_url)
    try:
        for key in keys:
            if account_state(one, key) != account_state(other, key):
                differ.append(key)
    finally:
        one.close()
        other.close()
    return differ


# Days of history for every account: each day's three succeeded runs (labels "a0001"... sort
# before "day1"; each staged what the account's last run of the entity did, so the fleet still
# weighs its accounts by size), 20 files recorded a run, and two history rows of an assignment
# a day (and AGE_ERRORS); then what autovacuum would have done by then.
AGE_STATEMENTS = (
    """INSERT INTO etl.sync_runs (account_id, sync_day, entity, status, finished_at, synced_at,
                                 rows_staged, rows_inserted, rows_updated, rows_unchanged,
                                 rows_removed, rows_quarantined, details)
       SELECT a.account_id, 'a' || lpad(d::text, 4, '0'), e.entity, 'succeeded',
              '2025-01-01'::timestamptz + d * interval '1 day',
              '2025-01-01'::timestamptz + d * interval '1 day', s.rows_staged, 0, 0,
              s.rows_staged, 0, 1, '{}'
         FROM etl.accounts a, generate_series(1, $1::int) d,
              unnest(ARRAY['agents', 'roles', 'groups']) WITH ORDINALITY e(entity, n)
        CROSS JOIN LATERAL (SELECT r.rows_staged FROM etl.sync_runs r
                             WHERE r.account_id = a.account_id AND r.entity = e.entity
                               AND r.status = 'succeeded'
                             ORDER BY r.run_id DESC LIMIT 1) s
        ORDER BY a.account_id, d, e.n""",
    """INSERT INTO etl.sync_run_files (account_id, run_id, file_index, file, bytes, sha256)
       SELECT r.account_id, r.run_id, i, r.sync_day || '/' || r.entity || '/' || i || '.json',
              1000, md5(r.sync_day || r.entity) || md5(i::text)
         FROM etl.sync_runs r, generate_series(0, 19) i
        WHERE r.sync_day LIKE 'a____'""",
    """INSERT INTO etl.agent_role_history (account_id, agent_id, role_id, from_status,
                                          to_status, changed_at, sync_day, run_id)
       SELECT r.account_id, m.agent_id, m.role_id, s.from_status, s.to_status,
              r.finished_at, r.sync_day, r.run_id
         FROM etl.sync_runs r
        CROSS JOIN LATERAL (SELECT agent_id, role_id FROM etl.agent_role_mapping p
                             WHERE p.account_id = r.account_id
                             ORDER BY agent_id, role_id LIMIT 1) m,
              (VALUES ('assigned', 'removed'), ('removed', 'assigned')) s(from_status, to_status)
        WHERE r.sync_day LIKE 'a____' AND r.entity = 'roles'
        ORDER BY r.run_id, s.from_status""",
)


# An error row a run of the history, into each entity's errors table ($1, $2, $3: the record
# kind, the folder, the entity).
AGE_ERRORS = """
    INSERT INTO etl.{table} (account_id, run_id, sync_day, record_kind, error_type, error_message,
                             field, record_id, source_file, record_index, raw_record, raw_text,
                             ingested_at)
    SELECT r.account_id, r.run_id, r.sync_day, $1, 'VALIDATION_ERROR',
           '$[0].name: expected a string, got null', 'name', 1,
           r.sync_day || '/' || $2 || '/0.json', 0, '{{"id": 1}}', '{{"id": 1}}', r.finished_at
      FROM etl.sync_runs r WHERE r.sync_day LIKE 'a____' AND r.entity = $3"""
ERROR_TABLES = {
    "agent_pipeline_errors": ("agent", "agents", "agents"),
    "role_pipeline_errors": ("role", "roles", "roles"),
    "group_pipeline_errors": ("group", "admin_groups", "groups"),
}


def age(url: str, history_days: int) -> float:
    """Give every account of the database ``history_days`` days of history (AGE_STATEMENTS),
    vacuumed and analyzed as autovacuum would have by then; the seconds it took."""
    started = time.perf_counter()
    conn = db.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(AGE_STATEMENTS[0], (history_days,))
            for statement in AGE_STATEMENTS[1:]:
                cur.execute(statement)
            for table, values in ERROR_TABLES.items():
                cur.execute(AGE_ERRORS.format(table=table), values)
        conn.commit()
    finally:
        conn.close()
    admin(url, "VACUUM ANALYZE")
    return time.perf_counter() - started


def bench_fleet(
    accounts: int,
    days: int,
    workers: int,
    workdir: Path,
    history_days: int = 0,
    rounds: int = 1,
) -> dict[str, Any]:
    """A fleet's days: the fleet command, the same accounts as a process per account-day
    (``workers`` at a time), and the floor, side by side; a sample of accounts compared. With
    ``history_days``, both databases get that many days of history after day1. With ``rounds``
    above one, all of it again on fresh databases each round, and per day the median of each
    figure over the rounds (of the ratios too, each taken within its round: this machine's
    speed drifts from minute to minute, and the fleet command runs minutes apart from its
    process-per-account baseline); peak RSS is the highest of any round."""
    folder = fleet_dir(workdir, accounts, days)
    keys = [synth.fleet_key(n) for n in range(1, accounts + 1)]
    each_round = []
    differ: set[str] = set()
    for number in range(1, rounds + 1):
        if rounds > 1:
            print(f"round {number} of {rounds}", flush=True)
        figures, sample_differs = fleet_round(folder, keys, days, workers, history_days)
        each_round.append(figures)
        differ.update(sample_differs)
    report: dict[str, Any] = {
        "accounts": accounts,
        "workers": workers,
        "history_days": history_days,
        "rounds": rounds,
        "days": {day: medians([r[day] for r in each_round]) for day in each_round[0]},
        "each_round": each_round,
        "sample_differs": sorted(differ),
    }
    if rounds > 1:
        for day, figures in report["days"].items():
            print_day(f"{day}, median of {rounds} rounds", figures, workers)
    return report


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' figures of one day as one: the median of each, the highest peak RSS, and
    every account that did not succeed in some round."""
    merged: dict[str, Any] = {}
    for name, first in rounds[0].items():
        values = [r[name] for r in rounds]
        if name == "worker_peak_rss_mb":
            merged[name] = max(values)
        elif isinstance(first, list):
            merged[name] = sorted({key for value in values for key in value})
        elif all(isinstance(value, int) for value in values):
            merged[name] = round(statistics.median(values))
        else:
            merged[name] = round(statistics.median(values), 3)
    return merged


def fleet_round(
    folder: Path, keys: list[str], days: int, workers: int, history_days: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """One round on fresh databases: each day's figures, and the sampled accounts that differ
    from their single-account runs."""
    accounts = len(keys)
    cores = os.cpu_count() or 1
    by_day: dict[str, dict[str, Any]] = {}
    with fresh_database() as fleet_url, fresh_database() as alone_url:
        for n in range(1, days + 1):
            day = f"day{n}"
            if n == 2 and history_days:
                aging_s = age(fleet_url, history_days) + age(alone_url, history_days)
                print(f"gave both databases {history_days} days of history in {aging_s:.1f} s")
            for key in keys:
                warm_page_cache(folder / key, day)
            cpu_before = server_cpu_seconds(fleet_url)
            ran = run_fleet_command(fleet_url, folder, day, workers)
            server_cpu = server_cpu_seconds(fleet_url) - cpu_before
            outcomes = ran["document"]["accounts"]
            seconds = sorted(o["seconds"] for o in outcomes)
            per_process = run_process_per_account(alone_url, folder, day, keys, workers)
            bottom = fleet_floor(fleet_url, folder, day, keys)
            figures = {
                "fleet_wall_s": round(ran["wall_s"], 2),
                "per_process_wall_s": round(per_process, 2),
                "floor_s": round(bottom["total_s"], 2),
                "floor_each_s": round(bottom["total_each_s"], 2),
                "fleet_per_minute": round(accounts / ran["wall_s"] * 60),
                "per_process_per_minute": round(accounts / per_process * 60),
                "speedup": round(per_process / ran["wall_s"], 1),
                "fleet_over_floor": round(ran["wall_s"] / bottom["total_s"], 2),
                "fleet_over_floor_each": round(ran["wall_s"] / bottom["total_each_s"], 2),
                "server_cpu_ms_per_account": round(server_cpu / accounts * 1000, 1),
                "command_cpu_ms_per_account": round(ran["cpu_s"] / accounts * 1000, 1),
                "cpu_busy": round((ran["cpu_s"] + server_cpu) / (cores * ran["wall_s"]), 2),
                "account_p50_s": seconds[len(seconds) // 2],
                "account_p95_s": seconds[int(len(seconds) * 0.95)],
                "worker_peak_rss_mb": max(o["worker_rss_mb"] for o in outcomes),
                "not_succeeded": [o["key"] for o in outcomes if o["status"] != "succeeded"],
            }
            by_day[day] = figures
            print_day(day, figures, workers)
        sample = keys[:: max(1, accounts // 10)]
        sample_differs = same_as_alone(fleet_url, alone_url, sample)
        print(
            f"sample of {len(sample)} accounts: {len(sample_differs)} differ from "
            "their single-account runs (must be 0)",
            flush=True,
        )
    return by_day, sample_differs


def print_day(label: str, figures: dict[str, Any], workers: int) -> None:
    print(
        f"{label}: fleet {figures['fleet_wall_s']} s ({figures['fleet_per_minute']} "
        f"account-days/min) | a process per account-day, {workers} at a time: "
        f"{figures['per_process_wall_s']} s ({figures['per_process_per_minute']}/min) "
        f"| speed-up {figures['speedup']}x | floor {figures['floor_s']} s, fleet/floor "
        f"{figures['fleet_over_floor']} (a load an account: {figures['floor_each_s']} s,"
        f" {figures['fleet_over_floor_each']}) | account p50 {figures['account_p50_s']} s, "
        f"p95 {figures['account_p95_s']} s | worker peak RSS "
        f"{figures['worker_peak_rss_mb']} MB | not succeeded: "
        f"{len(figures['not_succeeded'])} | server CPU "
        f"{figures['server_cpu_ms_per_account']} ms an account-day, the command's "
        f"{figures['command_cpu_ms_per_account']} ms | cores busy "
        f"{figures['cpu_busy']:.0%}",
        flush=True,
    )
