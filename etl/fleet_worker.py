"""A fleet's worker process: it imports etl once, keeps one connection, and syncs the tasks it
is given (an account alone, or a chunk of small ones) one after the other until the stop sign;
each account as its own sync would do it (:func:`sync_job`), and how each ended goes back to
the parent as it ends."""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from etl import db, log
from etl.account import account_session, accounts_session
from etl.errors import EtlError, Interrupted, RefusedError
from etl.fleet_report import Outcome
from etl.signals import terminate_as_interrupt


@dataclass(frozen=True)
class Job:
    """One account's day: its key, its folder (holding ``sync-DAY``), and how big it is."""

    key: str
    folder: Path
    weight: int


@dataclass(frozen=True)
class FleetSettings:
    """What every worker needs: where the database is, the day, and the sync's options."""

    url: str
    day: str
    entities: tuple[str, ...]
    options: Any  # sync.SyncOptions (imported by the workers, not by the command line)
    lock_timeout: float
    log_format: str
    verbose: bool


def worker_main(
    number: int,
    settings: FleetSettings,
    tasks: multiprocessing.Queue[list[Job] | None],
    results: multiprocessing.Queue[tuple[str, int, Any]],
) -> None:
    """A worker: one connection, then one task (an account, or a chunk of small ones) after
    another until the stop sign. It starts with Ctrl-C held back (fleet.ctrl_c_held_back) and
    lets it through from here on; a Ctrl-C (or SIGTERM) while it waits for a task ends it
    quietly, as does its parent's death. A connection it cannot make is said to the parent and
    logged, not a traceback."""
    # On a terminal the parent shows progress and the summary: the workers keep quiet there.
    quiet = settings.log_format == "console"
    log.configure(verbose=settings.verbose, fmt=settings.log_format, quiet=quiet)
    with terminate_as_interrupt():
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            import_sync()
            conn = db.connect(settings.url)
        except EtlError as error:
            give_up(number, results, f"a worker could not connect: {error}")
        except KeyboardInterrupt:
            return
        except Exception as error:  # etl cannot be imported here (a broken install, say)
            give_up(number, results, f"a worker could not start: {type(error).__name__}: {error}")
        try:
            while (task := next_task(tasks)) is not None:
                try:
                    outcomes = sync_task(conn, task, settings)
                except (KeyboardInterrupt, Interrupted):
                    for job in task:
                        outcome = Outcome(job.key, "failed", message="interrupted")
                        results.put(("done", number, asdict(outcome)))
                    return
                for outcome in outcomes:
                    outcome.worker_rss_mb = log.peak_rss_kb() // 1024
                    results.put(("done", number, asdict(outcome)))
                try:
                    conn = connected(conn, settings.url)
                except EtlError as error:  # what it is handed next goes back, untried
                    give_up(number, results, f"a worker lost its connection: {error}")
        except KeyboardInterrupt:  # while it waited for a task
            return
        finally:
            db.close(conn)
    exit_now(results)


PARENT_CHECKED_EVERY = 1.0  # seconds a worker waits for a task before it looks for its parent


def next_task(tasks: multiprocessing.Queue[list[Job] | None]) -> list[Job] | None:
    """The next task; None for the stop sign, or once the parent is gone (killed: nobody would
    hand out another task or hear of its outcome)."""
    parent = multiprocessing.parent_process()
    while True:
        try:
            return tasks.get(timeout=PARENT_CHECKED_EVERY)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None


def import_sync() -> None:
    """What a sync runs on, imported as the worker starts (while its parent weighs the
    accounts), not when its first account comes: the command line does without it."""
    importlib.import_module("etl.chunk")


def give_up(
    number: int, results: multiprocessing.Queue[tuple[str, int, Any]], why: str
) -> NoReturn:
    """End the worker without a connection: why, logged and said to the parent (which gives
    back what it handed this worker, untried); exit status 2."""
    log.get_logger().error("worker_not_connected", worker=number, error=why)
    results.put(("gone", number, why))
    sys.exit(2)  # the queue's thread sends the message first


def exit_now(results: multiprocessing.Queue[tuple[str, int, Any]]) -> NoReturn:
    """End the worker (status 0) once what it put in ``results`` is sent and its output is
    flushed, without the interpreter's teardown: unloading polars, pyarrow and the driver is
    slow, and the parent waits for it at the end of every fleet."""
    results.close()
    parent = multiprocessing.parent_process()
    if parent is None or parent.is_alive():
        results.join_thread()
    else:  # nobody reads the results: sending them could wait for ever
        results.cancel_join_thread()
    with contextlib.suppress(OSError, ValueError):  # the reader of the output may be gone
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def connected(conn: db.Connection, url: str) -> db.Connection:
    """``conn`` if it still answers, else a new connection (the server restarted, say)."""
    try:
        db.execute(conn, "server_version")
        db.commit(conn)
        return conn
    except EtlError:
        db.close(conn)
        return db.connect(url)


def sync_task(conn: db.Connection, task: list[Job], settings: FleetSettings) -> list[Outcome]:
    """A task's accounts synced: one alone, a chunk together (:mod:`etl.chunk`)."""
    if len(task) == 1:
        return [sync_job(conn, task[0], settings)]
    from etl.chunk import Member, sync_chunk

    started = time.perf_counter()
    options = settings.options
    unstarted = (settings.day, settings.entities, options.synced_at, options.force)
    keys = [job.key for job in task]
    session = accounts_session(conn, keys, lock_timeout=settings.lock_timeout, unstarted=unstarted)
    members: list[Member] = []
    try:
        with session as (ids, failed):
            members = [
                Member(job.key, ids[job.key], replace(options, data_dir=job.folder))
                for job in task
                if job.key in ids
            ]
            sync_chunk(conn, members, settings.day, settings.entities)
    except EtlError as error:  # the database, before any run started (sync_chunk raises none)
        return [Outcome(job.key, "failed", message=str(error)) for job in task]
    share = (time.perf_counter() - started) / len(task)
    outcomes = {key: Outcome(key, "failed", message=str(error)) for key, error in failed.items()}
    for member in members:
        outcomes[member.key] = member_outcome(member, settings.entities, share)
    return [outcomes[job.key] for job in task]


def member_outcome(member: Any, entities: tuple[str, ...], seconds: float) -> Outcome:
    """How a chunk member's day ended (``seconds``: its share of the chunk's time)."""
    error = member.error
    if error is None:
        return day_outcome(member.key, "succeeded", entities, member.results, seconds)
    status = "refused" if isinstance(error, RefusedError) else "failed"
    message = (
        str(error) if isinstance(error, EtlError) else f"unexpected {type(error).__name__}: {error}"
    )
    return day_outcome(member.key, status, entities, member.results, seconds, message)


def day_outcome(
    key: str,
    status: str,
    entities: tuple[str, ...],
    results: Sequence[Any],
    seconds: float,
    message: str | None = None,
) -> Outcome:
    """An account's day that ended ``status``: the entities that applied (``results``) as
    succeeded and their rows; when it did not succeed, the entity under way then as ``status``
    too, so that a scheduler sees how far it got."""
    done = {result.entity: "succeeded" for result in results}
    under_way = next((entity for entity in entities if entity not in done), None)
    if status != "succeeded" and under_way is not None:
        done[under_way] = status
    rows = sum(staged_rows(result.counts) for result in results)
    return Outcome(key, status, rows, round(seconds, 3), message, entities=done)


def sync_job(conn: db.Connection, job: Job, settings: FleetSettings) -> Outcome:
    """One account's day, as its own sync would do it; how it ended."""
    from etl.sync import sync_day

    started = time.perf_counter()
    options = replace(settings.options, data_dir=job.folder)
    unstarted = (settings.day, settings.entities, options.synced_at, options.force)
    with log.bound(account=job.key):
        try:
            with account_session(
                conn, job.key, lock_timeout=settings.lock_timeout, unstarted=unstarted
            ) as account_id:
                results = sync_day(conn, account_id, settings.day, settings.entities, options)
        except Interrupted:
            raise  # the worker stops: its parent heard the same Ctrl-C
        except EtlError as error:
            status = "refused" if isinstance(error, RefusedError) else "failed"
            seconds = time.perf_counter() - started
            if error.results is None:  # before the day's first run began: its lock, say
                return Outcome(job.key, status, seconds=round(seconds, 3), message=str(error))
            ran = settings.entities
            return day_outcome(job.key, status, ran, error.results, seconds, str(error))
        except Exception as error:  # a bug: the account fails, the fleet goes on
            log.get_logger().exception("account_failed", account=job.key)
            message = f"unexpected {type(error).__name__}: {error}"
            return Outcome(job.key, "failed", message=message)
    seconds = time.perf_counter() - started
    return day_outcome(job.key, "succeeded", settings.entities, results, seconds)


def staged_rows(counts: dict[str, Any]) -> int:
    """Rows a run staged: records, and the pairs and memberships they listed."""
    keys = ("staged", "pairs_staged", "members_staged")
    return sum(int(counts.get(key) or 0) for key in keys)
