"""Benchmark: ``python -m etl.bench --scale S`` (``just bench S``).

Generates the scale's days once (``etl.synth``, seed 1, kept under ``.bench/``), then syncs day1
to day3 on a fresh database, each day in its own ``python -m etl`` process, and prints per day:
seconds per stage summed over entities (stages of neighbouring entities overlap), the sync's
own seconds (work), rows per second, the process's peak RSS and wall time,
and the *floor* measured in the same run: reading every input byte, decoding it with msgspec
Structs of only the fields used, and bulk-loading the day's final rows into empty unlogged
tables. A re-run of the last day must change nothing. Figures go to ``.bench/<scale>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import msgspec

from etl import cli, db, server, synth
from etl.log import mask_url

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("list", "decode", "plan", "stage", "apply")
FINAL_TABLES = ("agents", "roles", "agent_role_mapping", "groups", "group_membership")

# The peak RSS of the etl process itself.
RUN_ETL = """
import sys
from etl.cli import main
from etl.log import peak_rss_kb
code = main(sys.argv[1:])
print("peak_rss_kb", peak_rss_kb(), file=sys.stderr)
sys.exit(code)
"""


class FloorContact(msgspec.Struct):
    name: str | None = None
    email: str | None = None
    active: bool | None = None


class FloorAgent(msgspec.Struct):
    id: int
    deactivated: bool | None = None
    contact: FloorContact | None = None


class FloorDetail(msgspec.Struct):
    id: int
    role_ids: list[int] | None = None


class FloorRole(msgspec.Struct):
    id: int
    name: str
    agent_ids: list[int] | None = None


class FloorGroup(msgspec.Struct):
    id: int
    name: str
    parent_group_id: int | None = None
    agent_ids: list[int] | None = None


FLOOR_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "agents": msgspec.json.Decoder(list[FloorAgent]),
    "agent_details": msgspec.json.Decoder(FloorDetail),
    "roles": msgspec.json.Decoder(list[FloorRole]),
    "admin_groups": msgspec.json.Decoder(list[FloorGroup]),
}


def data_dir(workdir: Path, scale: str, days: int) -> Path:
    """The scale's days, generated on first use."""
    folder = workdir / f"{scale}-seed1-days{days}"
    if not (folder / f"sync-day{days}").is_dir():
        started = time.perf_counter()
        synth.generate(scale, days, 1, folder)
        print(f"generated {folder} in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database on ETL_DATABASE_URL's server, else on a new embedded server."""
    admin_url = os.environ.get("ETL_DATABASE_URL")
    if admin_url:
        name = f"etl_bench_{os.getpid()}"
        admin(admin_url, f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory(prefix="etl-bench-pg-") as folder:
        url, server_handle = server.start_embedded(Path(folder), temporary=True)
        try:
            yield url
        finally:
            server_handle.cleanup()


def admin(url: str, sql: str) -> None:
    with pg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)


def run_day(url: str, folder: Path, day: str, *extra: str) -> dict[str, Any]:
    """One ``python -m etl`` process for ``day`` (every entity, unless ``extra`` options say
    otherwise): its stage seconds, rows, peak RSS and wall time."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            *(sys.executable, "-c", RUN_ETL, "--day", day, "--data-dir", str(folder)),
            *("--database-url", url, "--log-format", "json", "--verbose", *extra),
        ],
        cwd=ROOT,
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
    worker_kb = 0
    work = 0.0
    for line in result.stderr.splitlines():
        if line.startswith("peak_rss_kb"):
            peak_kb = int(line.split()[1])
        elif '"event": "day_synced"' in line:  # the sync's own time: its stages overlap
            work = json.loads(line)["seconds"]
        elif '"event": "decode_split"' in line:  # a folder decoded with a worker process
            worker_kb = max(worker_kb, json.loads(line)["worker_peak_rss_kb"])
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
        "worker_peak_rss_mb": worker_kb // 1024,  # 0: no folder was big enough to split
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
        load_s = load_floor(conn, tables)
    finally:
        conn.close()
    total = read_s + decode_s + load_s
    return {
        "read_s": round(read_s, 3),
        "decode_s": round(decode_s, 3),
        "load_s": round(load_s, 3),
        "total_s": round(total, 3),
    }


def load_floor(conn: db.Connection, tables: dict[str, Any]) -> float:
    """Seconds to COPY ``tables`` (final table -> rows) into empty unlogged copies of them."""
    with conn.cursor() as cur:
        for table in FINAL_TABLES:
            cur.execute(f"CREATE UNLOGGED TABLE etl.floor_{table} (LIKE etl.{table})")
    conn.commit()
    started = time.perf_counter()
    with conn.cursor() as cur:
        for table, rows in tables.items():
            cur.adbc_ingest(f"floor_{table}", rows, mode="append", db_schema_name="etl")
    conn.commit()
    load_s = time.perf_counter() - started
    with conn.cursor() as cur:
        for table in FINAL_TABLES:
            cur.execute(f"DROP TABLE etl.floor_{table}")
    conn.commit()
    return load_s


def warm_page_cache(folder: Path, day: str) -> None:
    """Read the day's files once, untimed, so that etl reads them from the page cache as the
    floor does (cold, the 200k small files of scale L took 21 s to decode instead of 7)."""
    for kind in FLOOR_DECODERS:
        read_folder(folder / f"sync-{day}" / kind)


def read_folder(path: Path) -> list[bytes]:
    """Every file's bytes, by the cheapest calls there are: names relative to an open directory,
    one ``os.read`` of the file's size (plus the one that finds its end)."""
    pages = []
    folder = os.open(path, os.O_RDONLY)
    try:
        for name in os.listdir(folder):
            fd = os.open(name, os.O_RDONLY, dir_fd=folder)
            try:
                size = os.fstat(fd).st_size
                parts = [os.read(fd, size + 1)]
                while parts[-1]:
                    parts.append(os.read(fd, 1 << 20))
            finally:
                os.close(fd)
            pages.append(b"".join(parts))
    finally:
        os.close(folder)
    return pages


def fetch(conn: db.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        table = cur.fetch_arrow_table()
    conn.commit()
    return table


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
        f" (decode worker {f['worker_peak_rss_mb']} MB)"
        f" | floor {f['floor']['total_s']:.2f} s (read {f['floor']['read_s']:.2f},"
        f" decode {f['floor']['decode_s']:.2f}, load {f['floor']['load_s']:.2f})"
        f" | etl/floor {f['ratio_to_floor']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m etl.bench", description=__doc__.splitlines()[0]
    )
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
    args = parser.parse_args(argv)
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


# -- a fleet ----------------------------------------------------------------------------------


# The same sync time in both databases, so that their accounts can be compared row by row.
FLEET_SYNCED_AT = {f"day{n}": f"2026-01-{n:02d}T06:00:00Z" for n in range(1, 29)}


def fleet_dir(workdir: Path, accounts: int, days: int) -> Path:
    folder = workdir / f"fleet-{accounts}-seed1-days{days}"
    if not (folder / synth.fleet_key(accounts) / f"sync-day{days}").is_dir():
        started = time.perf_counter()
        synth.generate_fleet(accounts, days, 1, folder)
        print(f"generated {folder} in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def run_fleet_command(url: str, folder: Path, day: str, workers: int) -> dict[str, Any]:
    """``etl sync --accounts-dir`` for the day: wall time, and each account's outcome."""
    with tempfile.TemporaryDirectory(prefix="etl-bench-fleet-") as scratch:
        results = Path(scratch) / "results.json"
        argv = ["sync", "--day", day, "--accounts-dir", str(folder), "--database-url", url]
        argv += ["--workers", str(workers), "--log-format", "json", "--results", str(results)]
        argv += ["--synced-at", FLEET_SYNCED_AT[day]]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", RUN_ETL, *argv], cwd=ROOT, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        if not results.exists():
            raise SystemExit(f"the fleet command failed on {day}:\n{done.stderr[-3000:]}")
        document = json.loads(results.read_text())
    peak_kb = max(
        (int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak_rss")),
        default=0,
    )
    return {"wall_s": wall, "document": document, "parent_rss_mb": peak_kb // 1024}


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
    rows of every account bulk-loaded into empty unlogged tables (one load: the sum of each
    account's own would cost more)."""
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
        load_s = load_floor(conn, tables)
    finally:
        conn.close()
    return {
        "read_s": read_s,
        "decode_s": decode_s,
        "load_s": load_s,
        "total_s": read_s + decode_s + load_s,
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
    from etl.replay import dump_state

    differ = []
    one, other = db.connect(fleet_url), db.connect(alone_url)
    try:
        for key in keys:
            if dump_state(one, account=key) != dump_state(other, account=key):
                differ.append(key)
    finally:
        one.close()
        other.close()
    return differ


def bench_fleet(accounts: int, days: int, workers: int, workdir: Path) -> dict[str, Any]:
    """A fleet's days: the fleet command, the same accounts as a process per account-day
    (``workers`` at a time), and the floor, side by side; a sample of accounts compared."""
    folder = fleet_dir(workdir, accounts, days)
    keys = [synth.fleet_key(n) for n in range(1, accounts + 1)]
    report: dict[str, Any] = {"accounts": accounts, "workers": workers, "days": {}}
    with fresh_database() as fleet_url, fresh_database() as alone_url:
        for n in range(1, days + 1):
            day = f"day{n}"
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
                "fleet_per_minute": round(accounts / ran["wall_s"] * 60),
                "per_process_per_minute": round(accounts / per_process * 60),
                "speedup": round(per_process / ran["wall_s"], 1),
                "fleet_over_floor": round(ran["wall_s"] / bottom["total_s"], 2),
                "server_cpu_ms_per_account": round(server_cpu / accounts * 1000, 1),
                "account_p50_s": seconds[len(seconds) // 2],
                "account_p95_s": seconds[int(len(seconds) * 0.95)],
                "worker_peak_rss_mb": max(o["worker_rss_mb"] for o in outcomes),
                "not_succeeded": [o["key"] for o in outcomes if o["status"] != "succeeded"],
            }
            report["days"][day] = figures
            print(
                f"{day}: fleet {figures['fleet_wall_s']} s ({figures['fleet_per_minute']} "
                f"account-days/min) | a process per account-day, {workers} at a time: "
                f"{figures['per_process_wall_s']} s ({figures['per_process_per_minute']}/min) "
                f"| speed-up {figures['speedup']}x | floor {figures['floor_s']} s, fleet/floor "
                f"{figures['fleet_over_floor']} | account p50 {figures['account_p50_s']} s, "
                f"p95 {figures['account_p95_s']} s | worker peak RSS "
                f"{figures['worker_peak_rss_mb']} MB | not succeeded: "
                f"{len(figures['not_succeeded'])} | server CPU "
                f"{figures['server_cpu_ms_per_account']} ms an account-day",
                flush=True,
            )
        sample = keys[:: max(1, accounts // 10)]
        report["sample_differs"] = same_as_alone(fleet_url, alone_url, sample)
        print(
            f"sample of {len(sample)} accounts: {len(report['sample_differs'])} differ from "
            "their single-account runs (must be 0)",
            flush=True,
        )
    return report


if __name__ == "__main__":
    raise SystemExit(main())
