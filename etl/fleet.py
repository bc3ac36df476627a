"""A fleet: one day of many accounts, on long-lived worker processes.

The parent lists the accounts (``DIR/KEY/sync-DAY``), migrates the schema once and hands the
accounts out largest first to N worker processes. Each worker imports etl once, keeps one
connection, and syncs the accounts it is given one after the other, each as its own sync
(:mod:`etl.fleet_worker`): its lock, its entity runs, its ledger rows, its guards. One account
failing or being refused stops nothing else. Outcomes come back as each account ends, for the
progress line, the summary and the results file (:mod:`etl.fleet_report`).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from etl import db
from etl.errors import UsageError
from etl.fleet_report import Outcome
from etl.fleet_worker import FleetSettings, Job, worker_main

ACCOUNT_KEY = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$")  # SEMANTICS 10; never . or ..
BYTES_PER_ROW = 150  # to weigh an account never synced by its input against one by its rows


def find_accounts(accounts_dir: Path, day: str, keys: list[str] | None) -> list[str]:
    """The accounts to sync: ``keys`` as given (a missing folder then fails that account), or
    every folder of ``accounts_dir`` that has the day, in name order."""
    if not accounts_dir.is_dir():
        raise UsageError(f"--accounts-dir {accounts_dir}: no such folder")
    if keys is not None:
        return keys
    try:
        found = sorted(
            entry.name
            for entry in os.scandir(accounts_dir)
            if entry.is_dir() and has_day(Path(entry.path), day)
        )
    except OSError as error:
        raise UsageError(f"--accounts-dir {accounts_dir}: cannot read: {error.strerror}") from None
    for key in found:
        if not is_account_key(key):
            raise UsageError(
                f"--accounts-dir {accounts_dir}: folder {key!r} is not an account key "
                "(1-64 of A-Za-z0-9._-, not dots alone); name the accounts with --accounts"
            )
    if not found:
        raise UsageError(f"--accounts-dir {accounts_dir}: no account folder has sync-{day}")
    return found


def without_day(accounts_dir: Path, day: str, keys: list[str]) -> dict[str, str]:
    """The accounts of ``keys`` whose folder has no such day, each with why: they fail before
    anything of theirs is recorded (a mistyped key creates no account), as a single-account
    sync of a day it does not have."""
    missing = {}
    for key in keys:
        folder = accounts_dir / key
        if not has_day(folder, day):
            there = f"no day {day} in {folder} (no folder sync-{day})"
            missing[key] = there if folder.is_dir() else f"{folder}: no such folder"
    return missing


def has_day(folder: Path, day: str) -> bool:
    """Whether the account folder has the day; True if the folder cannot be searched, so that
    the account fails saying so rather than being left out unsaid."""
    try:
        return (folder / f"sync-{day}").is_dir()
    except OSError:
        return True


def is_account_key(text: str) -> bool:
    return ACCOUNT_KEY.match(text) is not None


def weigh(conn: db.Connection, accounts_dir: Path, day: str, keys: list[str]) -> list[Job]:
    """The accounts as jobs, largest first: by the rows their last runs staged, else by the
    bytes of the day's input (an account never synced)."""
    rows = dict(db.execute(conn, "account_weights", (keys,)))
    db.commit(conn)
    jobs = []
    for key in keys:
        folder = accounts_dir / key
        weight = rows.get(key) or input_bytes(folder / f"sync-{day}") // BYTES_PER_ROW
        jobs.append(Job(key, folder, int(weight)))
    return sorted(jobs, key=lambda job: (-job.weight, job.key))


def input_bytes(day_folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for folder in os.scandir(day_folder):
            if folder.is_dir():
                total += sum(f.stat().st_size for f in os.scandir(folder.path) if f.is_file())
    return total


def run_fleet(
    settings: FleetSettings,
    jobs: list[Job],
    workers: int,
    on_outcome: Callable[[Outcome], None],
) -> list[Outcome]:
    """Sync ``jobs`` on ``workers`` worker processes, largest first; each outcome is passed to
    ``on_outcome`` as it comes. A worker that dies is replaced: the account it held alone
    fails, and the accounts of a chunk it held are each synced again alone (which of them
    killed it is not known; it then fails alone). Ctrl-C stops handing out accounts, lets the
    workers end the runs they hold (their ledger rows say so) and raises KeyboardInterrupt."""
    context = multiprocessing.get_context("spawn")
    tasks: multiprocessing.Queue[list[Job] | None] = context.Queue()
    results: multiprocessing.Queue[tuple[str, int, Any]] = context.Queue()
    for task in in_tasks(jobs):
        tasks.put(task)
    count = max(1, min(workers, len(jobs)))
    by_key = {job.key: job for job in jobs}
    pool: dict[int, SpawnProcess] = {}
    holding: dict[int, list[str]] = {}  # worker -> the accounts it syncs
    outcomes: dict[str, Outcome] = {}
    numbers = itertools.count()  # a worker's number is never reused
    idle_deaths = count  # workers that may die holding nothing (at start) and be replaced

    def start(number: int) -> None:
        process = context.Process(
            target=worker_main,
            args=(number, settings, tasks, results),
            name=f"etl-worker-{number}",
            daemon=True,
        )
        with ctrl_c_ignored():
            process.start()
        pool[number] = process

    def take(outcome: Outcome) -> None:
        outcomes[outcome.key] = outcome
        on_outcome(outcome)

    for _ in range(count):
        start(next(numbers))
    try:
        while len(outcomes) < len(jobs):
            try:
                kind, number, payload = results.get(timeout=0.2)
            except queue.Empty:
                for number, process in list(pool.items()):
                    if process.is_alive():
                        continue
                    drain(results, holding, take)  # what it said before it died
                    held = holding.pop(number, [])
                    del pool[number]
                    died(process, [by_key[key] for key in held], tasks, take)
                    if not held:
                        idle_deaths -= 1
                    if held or idle_deaths > 0:
                        start(next(numbers))
                if not pool and len(outcomes) < len(jobs):
                    break
                continue
            heard(kind, number, payload, holding, take)
    except KeyboardInterrupt:
        stop(pool, tasks, results, holding, take)
        raise
    for _ in pool:
        tasks.put(None)  # one stop sign per worker, behind every task
    for process in pool.values():
        process.join(timeout=30)
    for job in jobs:  # workers gone before their turn came (each died at start)
        if job.key not in outcomes:
            take(Outcome(job.key, "failed", message="no worker process was left to sync it"))
    return [outcomes[job.key] for job in jobs]


@contextlib.contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ctrl-C ignored while a worker process starts: the worker inherits that, and heeds Ctrl-C
    again once it has imported etl (see worker_main), so that a Ctrl-C during its imports is
    the parent's alone to handle. Only the main thread can set a signal's handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def drain(
    results: multiprocessing.Queue[tuple[str, int, Any]],
    holding: dict[int, list[str]],
    take: Callable[[Outcome], None],
) -> None:
    """Take every message already sent."""
    with contextlib.suppress(queue.Empty):
        while True:
            heard(*results.get(timeout=0.05), holding, take)


def heard(
    kind: str,
    number: int,
    payload: Any,
    holding: dict[int, list[str]],
    take: Callable[[Outcome], None],
) -> None:
    """A worker's message: the accounts it starts ("start"), or how one ended ("done")."""
    if kind == "start":
        holding[number] = list(payload)
        return
    outcome = Outcome(**payload)
    keys = holding.get(number, [])
    if outcome.key in keys:
        keys.remove(outcome.key)
    if not keys:
        holding.pop(number, None)
    take(outcome)


def died(
    process: SpawnProcess,
    held: list[Job],
    tasks: multiprocessing.Queue[list[Job] | None],
    take: Callable[[Outcome], None],
) -> None:
    """A worker that ended without its stop sign: the account it held alone failed; the
    accounts of a chunk go back to be synced each alone."""
    if len(held) == 1:
        message = f"the worker process syncing it died (exit code {process.exitcode})"
        take(Outcome(held[0].key, "failed", message=message))
        return
    for job in held:
        tasks.put([job])


def stop(
    pool: dict[int, SpawnProcess],
    tasks: multiprocessing.Queue[list[Job] | None],
    results: multiprocessing.Queue[tuple[str, int, Any]],
    holding: dict[int, list[str]],
    take: Callable[[Outcome], None],
) -> None:
    """After Ctrl-C: no new account starts; the runs under way end as interrupted (the workers
    heard the same Ctrl-C) and their outcomes are taken."""
    with contextlib.suppress(queue.Empty, OSError, ValueError):
        while True:
            tasks.get_nowait()
    with contextlib.suppress(OSError, ValueError):
        for _ in pool:
            tasks.put(None)  # a worker between tasks ends
    deadline = time.monotonic() + 60
    while holding and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty, KeyboardInterrupt):
            kind, number, payload = results.get(timeout=0.2)
            if kind == "done":
                heard(kind, number, payload, holding, take)
        if not any(p.is_alive() for p in pool.values()):
            break
    for process in pool.values():
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()


CHUNK_ACCOUNTS = 16  # small accounts taken through each entity together, at most
SMALL = 20_000  # rows: an account of more is synced on its own


def in_tasks(jobs: list[Job]) -> list[list[Job]]:
    """The jobs, largest first, as the workers take them: an account of ``SMALL`` rows or more
    alone, smaller ones in chunks of up to ``CHUNK_ACCOUNTS`` of neighbouring sizes."""
    tasks: list[list[Job]] = []
    chunk: list[Job] = []
    for job in jobs:
        if job.weight >= SMALL:
            tasks.append([job])
            continue
        chunk.append(job)
        if len(chunk) == CHUNK_ACCOUNTS:
            tasks.append(chunk)
            chunk = []
    if chunk:
        tasks.append(chunk)
    return tasks


def parse_accounts(text: str) -> list[str]:
    """``--accounts KEY,KEY,...`` or ``--accounts @FILE`` (one key a line, # comments)."""
    if text.startswith("@"):
        try:
            lines = Path(text[1:]).read_text().splitlines()
        except OSError as error:
            raise UsageError(f"--accounts {text}: {error.strerror}") from None
        keys = [line.split("#")[0].strip() for line in lines]
    else:
        keys = [key.strip() for key in text.split(",")]
    keys = [key for key in keys if key]
    if not keys:
        shown = f" {text}" if text else ""
        raise UsageError(f"--accounts{shown}: no account keys")
    return list(dict.fromkeys(keys))
