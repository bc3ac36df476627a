"""A fleet: one day of many accounts, on long-lived worker processes.

The parent lists the accounts (``DIR/KEY/sync-DAY``), migrates the schema once and hands the
accounts out largest first to N worker processes. Each worker imports etl once, keeps one
connection, and syncs the accounts it is given one after the other, each as its own sync
(:mod:`etl.fleet_worker`): its lock, its entity runs, its ledger rows, its guards. One account
failing or being refused stops nothing else. Outcomes come back as each account ends, for the
progress line, the summary and the results file (:mod:`etl.fleet_report`).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import operator
import os
import queue
import re
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from etl import db, signals
from etl.errors import UsageError
from etl.fleet_report import Outcome
from etl.fleet_worker import FleetSettings, Job, worker_main

ACCOUNT_KEY = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$")  # SEMANTICS 10; never . or ..
BYTES_PER_ROW = 150  # to weigh an account never synced by its input against one by its rows
SIZED_FILES = 32  # files of a folder whose sizes weigh an account never synced


def find_accounts(accounts_dir: Path, day: str, keys: list[str] | None) -> list[str]:
    """The accounts to sync: ``keys`` as given (a missing folder then fails that account), or
    every folder of ``accounts_dir`` that has the day, in name order."""
    if not accounts_dir.is_dir():
        raise UsageError(f"--accounts-dir {accounts_dir}: no such folder")
    if keys is not None:
        check_keys(keys)
        return list(dict.fromkeys(keys))  # each account once
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


def check_keys(keys: list[str]) -> None:
    """A usage error naming the first of ``keys`` (as --accounts gave them) that is no key."""
    for key in keys:
        if not is_account_key(key):
            raise UsageError(f"--accounts: {key!r} is not an account key: 1-64 of A-Za-z0-9._-")


def is_account_key(text: str) -> bool:
    return ACCOUNT_KEY.match(text) is not None


def weigh(conn: db.Connection, accounts_dir: Path, day: str, keys: list[str]) -> list[Job]:
    """The accounts as jobs, largest first: by the rows their last runs staged, else by about
    the bytes of the day's input (an account never synced)."""
    rows = dict(db.execute(conn, "account_weights", (keys,)))
    db.commit(conn)
    jobs = []
    for key in keys:
        folder = accounts_dir / key
        weight = rows.get(key) or input_bytes(folder / f"sync-{day}") // BYTES_PER_ROW
        jobs.append(Job(key, folder, int(weight)))
    return sorted(jobs, key=lambda job: (-job.weight, job.key))


def input_bytes(day_folder: Path) -> int:
    """About the bytes of the day's input: each folder's count of files times the mean size of
    ``SIZED_FILES`` of them, spread over the folder in name order (all of a smaller folder).
    Listing a folder reads no file's size: a fleet's first day does not wait for the size of
    every input file."""
    total = 0
    with contextlib.suppress(OSError):
        for folder in os.scandir(day_folder):
            if folder.is_dir():
                files = [f for f in os.scandir(folder.path) if f.is_file()]
                files.sort(key=operator.attrgetter("name"))
                count = len(files)
                if count > SIZED_FILES:
                    files = [files[i * count // SIZED_FILES] for i in range(SIZED_FILES)]
                if files:
                    total += sum(f.stat().st_size for f in files) * count // len(files)
    return total


def run_fleet(
    settings: FleetSettings,
    jobs: Callable[[], list[Job]],
    workers: int,
    on_outcome: Callable[[Outcome], None],
) -> list[Outcome]:
    """Sync the jobs ``jobs()`` makes on ``workers`` worker processes, largest first; each
    outcome is passed to ``on_outcome`` as it comes. The workers start first: they import etl
    and connect while ``jobs()`` weighs the accounts (migrating the schema first, say). A
    worker that dies is replaced, and each account it held is synced again alone, once (it may
    have died of another account of its chunk, or before it began this one): an account that
    kills its worker again fails alone. Ctrl-C stops handing out accounts, lets the workers end
    the runs they hold (their ledger rows say so) and raises KeyboardInterrupt; SIGTERM (taken
    as Ctrl-C by the command) is passed on to them. Should ``jobs()`` raise, the workers end and
    its error is raised."""
    dispatch = Dispatch(settings, max(1, workers), on_outcome)
    try:
        for _ in range(dispatch.workers):
            dispatch.start()
        dispatch.give(jobs())
        while not dispatch.done():
            dispatch.step()
    except BaseException as error:
        # A terminal's Ctrl-C reaches the workers by itself; anything else (SIGTERM, a flow's
        # cancellation, an error here) is passed on to those holding accounts.
        dispatch.stop(pass_on=signals.terminated() or not isinstance(error, KeyboardInterrupt))
        raise
    dispatch.join()
    return dispatch.outcomes_in_order()


class Dispatch:
    """The parent's side of a fleet. Each worker has a task queue of its own and is handed its
    next task (an account, or a chunk) once every account of the last one has ended, so that
    the parent always knows what each worker holds, also of a worker that dies the moment it
    takes a task. How workers end: a stop sign once no task is left and no worker holds one (a
    worker out of tasks waits till then: one that gives up or dies gives its task back); a
    worker that dies holding accounts is replaced; deaths holding nothing (a worker that cannot
    start or connect) are replaced, while work is left, as many times as workers were asked
    for."""

    def __init__(
        self, settings: FleetSettings, workers: int, on_outcome: Callable[[Outcome], None]
    ) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.settings, self.workers = settings, workers
        self.on_outcome = on_outcome
        self.jobs: list[Job] | None = None  # until given: the workers wait for them
        self.by_key: dict[str, Job] = {}
        self.pending: collections.deque[list[Job]] = collections.deque()
        self.results: multiprocessing.Queue[tuple[str, int, Any]] = self.context.Queue()
        self.pool: dict[int, tuple[SpawnProcess, multiprocessing.Queue[list[Job] | None]]] = {}
        self.holding: dict[int, list[str]] = {}  # worker -> the accounts it syncs
        self.waiting: set[int] = set()  # workers out of tasks while others still hold some
        self.stopping: set[int] = set()  # workers sent their stop sign
        self.outcomes: dict[str, Outcome] = {}
        self.numbers = itertools.count()  # a worker's number is never reused
        self.idle_deaths = 0
        self.why_gone: str | None = None  # what the last worker that gave up said
        self.retried: set[str] = set()  # accounts a dead worker held, sent again alone

    def start(self) -> None:
        """A new worker, handed its first task (or waiting for one)."""
        number = next(self.numbers)
        inbox: multiprocessing.Queue[list[Job] | None] = self.context.Queue()
        process = self.context.Process(
            target=worker_main,
            args=(number, self.settings, inbox, self.results),
            name=f"etl-worker-{number}",
            daemon=True,
        )
        with ctrl_c_held_back():
            process.start()
        self.pool[number] = (process, inbox)
        self.hand_out(number)

    def give(self, jobs: list[Job]) -> None:
        """The jobs to sync, largest first: their tasks handed out to the waiting workers."""
        self.jobs = jobs
        self.by_key = {job.key: job for job in jobs}
        self.pending.extend(in_tasks(jobs))
        while self.pending and (number := self.alive_waiting()) is not None:
            self.hand_out(number)
        self.stop_when_all_ended()

    def alive_waiting(self) -> int | None:
        """A waiting worker still alive, no longer waiting; None if there is none (one that died
        waiting is buried when it is noticed: a task handed to it would cost a retry)."""
        for number in sorted(self.waiting):
            if self.pool[number][0].is_alive():
                self.waiting.discard(number)
                return number
        return None

    def hand_out(self, number: int) -> None:
        """The worker's next task. If none is left, it waits while other workers hold accounts
        (a worker that gives up or dies gives them back); once none does, every waiting worker
        gets its stop sign."""
        if self.pending:
            task = self.pending.popleft()
            self.holding[number] = [job.key for job in task]
            with ctrl_c_held_back():  # the inbox's thread, made by its first put, holds it back
                self.pool[number][1].put(task)
            return
        self.holding.pop(number, None)
        self.waiting.add(number)
        self.stop_when_all_ended()

    def give_back(self, task: list[Job]) -> None:
        """A task no worker holds any more, first to be handed out: to a waiting worker now."""
        self.pending.appendleft(task)
        if (number := self.alive_waiting()) is not None:
            self.hand_out(number)

    def stop_when_all_ended(self) -> None:
        """Every waiting worker's stop sign, once no task is left and no worker holds one."""
        if self.jobs is None or self.pending or any(self.holding.values()):
            return
        for number in self.waiting:
            self.stopping.add(number)
            with ctrl_c_held_back():
                self.pool[number][1].put(None)
        self.waiting.clear()

    def done(self) -> bool:
        return (self.jobs is not None and len(self.outcomes) == len(self.jobs)) or not self.pool

    def step(self) -> None:
        """The next message from a worker; or, if none comes soon, the workers that died."""
        try:
            self.heard(*self.results.get(timeout=0.2))
        except queue.Empty:
            self.bury_the_dead()

    def heard(self, kind: str, number: int, payload: Any) -> None:
        """How one of a worker's accounts ended ("done"), or why a worker ends before it
        syncs what it was handed ("gone": that goes back, untried)."""
        if kind == "gone":
            self.why_gone = payload
            self.waiting.discard(number)
            held = self.holding.pop(number, [])
            if held:
                self.give_back([self.by_key[key] for key in held])
            return
        outcome = Outcome(**payload)
        self.take(outcome)
        keys = self.holding.get(number)
        if keys is not None and outcome.key in keys:
            keys.remove(outcome.key)
            if not keys and number in self.pool:
                self.hand_out(number)

    def take(self, outcome: Outcome) -> None:
        self.outcomes[outcome.key] = outcome
        self.on_outcome(outcome)

    def bury_the_dead(self) -> None:
        for number, (process, _) in list(self.pool.items()):
            if process.is_alive():
                continue
            del self.pool[number]  # first: nothing more is handed to it
            self.waiting.discard(number)
            self.drain()  # what it said before it died
            held = self.holding.pop(number, [])
            if number in self.stopping:
                continue
            for key in held:  # each again, alone, once; the one that kills it again fails
                if key in self.retried:
                    message = f"the worker process syncing it died (exit code {process.exitcode})"
                    self.take(Outcome(key, "failed", message=message))
                else:
                    self.retried.add(key)
                    self.give_back([self.by_key[key]])
            if not held:
                self.idle_deaths += 1
            work_left = self.pending or any(self.holding.values())
            if work_left and (held or self.idle_deaths <= self.workers):
                self.start()
        self.stop_when_all_ended()

    def drain(self) -> None:
        """Take every message already sent."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.heard(*self.results.get(timeout=0.05))

    def stop(self, *, pass_on: bool) -> None:
        """After Ctrl-C (or SIGTERM, or an error): no new account starts; the runs under way
        end as interrupted (the workers heard the same Ctrl-C, or, with ``pass_on``, are sent
        SIGTERM) and their outcomes are taken."""
        self.pending.clear()
        for number, (process, inbox) in self.pool.items():
            if pass_on and self.holding.get(number) and process.exitcode is None:
                with contextlib.suppress(OSError):
                    process.terminate()  # SIGTERM: the worker takes it as Ctrl-C
            if number not in self.stopping:
                with contextlib.suppress(OSError, ValueError):
                    inbox.put(None)  # a worker between tasks ends
        deadline = time.monotonic() + 60
        while any(self.holding.values()) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty, KeyboardInterrupt):
                self.heard(*self.results.get(timeout=0.2))
            if not any(process.is_alive() for process, _ in self.pool.values()):
                break
        for process, _ in self.pool.values():
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)

    def join(self) -> None:
        for process, _ in self.pool.values():
            process.join(timeout=30)

    def outcomes_in_order(self) -> list[Outcome]:
        """Every job's outcome, in the jobs' order; a job no worker was left to sync failed."""
        gone = f" ({self.why_gone})" if self.why_gone else ""
        assert self.jobs is not None
        for job in self.jobs:
            if job.key not in self.outcomes:
                message = f"no worker process was left to sync it{gone}"
                self.take(Outcome(job.key, "failed", message=message))
        return [self.outcomes[job.key] for job in self.jobs]


@contextlib.contextmanager
def ctrl_c_held_back() -> Iterator[None]:
    """Ctrl-C held back (blocked) while a worker process starts, or the thread of its inbox
    (made by the inbox's first put). The worker inherits the block and lets Ctrl-C through
    once it has imported etl (see worker_main), so that one during its imports reaches it only
    then, without a traceback; the inbox's thread never takes it; this thread's comes as the
    block ends."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


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
