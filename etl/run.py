"""One entity run under way: its options, its clock, its ledger row from start to end -- the
summary line once applied, the status and message once failed -- and the day-order guard."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from etl import BATCH_VALUES, db, signals, source
from etl.errors import EtlError, RefusedError
from etl.ledger import FileLedger, StartedRun, end_run, record_seconds
from etl.log import get_logger
from etl.progress import NoProgress, Progress


@dataclass(frozen=True)
class SyncOptions:
    data_dir: Path
    synced_at: datetime | None = None
    force: bool = False
    allow_mass_removal: bool = False
    progress: Callable[[str], Progress] | None = None  # a live line per entity (a terminal)
    batch_values: int = BATCH_VALUES  # records plus mapping elements per decoded batch
    spill_dir: Path | None = None  # where decoded batches go; None: the system's temp folder
    serial: bool = False  # one thing at a time: none of etl/overlap.py's speed-ups (--serial)


@dataclass
class RunResult:
    entity: str
    day: str
    run_id: int
    counts: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


class Stopwatch:
    """Seconds spent per stage, for the summary line (a stage timed twice adds up); each stage
    also shows on ``progress``, as ``shown`` when given, with ``total`` steps when known."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress or NoProgress()

    @contextmanager
    def stage(
        self, name: str, shown: str | None = None, total: int | None = None
    ) -> Iterator[None]:
        self.progress.stage(shown or name, total)
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.seconds[name] = round(spent, 4)


@dataclass
class EntityRun:
    """One (entity, day) run under way: its connection, ledger row, input files and clock, and
    the days its entity was applied for before it started."""

    conn: db.Connection
    account_id: int
    entity: str
    day: str
    run_id: int
    synced_at: datetime
    watch: Stopwatch
    ledger: FileLedger
    log: Any
    applied_days: list[str]


def entity_run(
    conn: db.Connection,
    started: StartedRun,
    day: str,
    entity: str,
    options: SyncOptions,
    **context: Any,
) -> EntityRun:
    """The run under way whose ledger row ``started`` is; its log lines carry ``context``."""
    watch = Stopwatch(options.progress(f"{day} {entity}") if options.progress else None)
    log = get_logger().bind(**context, day=day, entity=entity, run_id=started.run_id)
    files = FileLedger(conn, started.account_id, started.run_id)
    return EntityRun(
        conn,
        started.account_id,
        entity,
        day,
        started.run_id,
        started.synced_at,
        watch,
        files,
        log,
        started.applied_days,
    )


def finish_run(run: EntityRun) -> RunResult:
    """The applied run's seconds in the ledger, and its summary line."""
    return finish_runs(run.conn, [run])[0]


def finish_runs(conn: db.Connection, runs: list[EntityRun]) -> list[RunResult]:
    """The applied runs' seconds in the ledger (one statement on ``conn``), and each one's
    summary line; their results, in order."""
    for run in runs:
        run.watch.progress.close()
    try:  # the runs are committed: a failure to read their figures back no longer fails them
        spent = [(run.account_id, run.run_id, run.watch.seconds) for run in runs]
        counts = record_seconds(conn, spent)  # the ledger's figures
    except EtlError as error:
        for run in runs:
            run.log.warning("ledger_figures_unread", message=str(error))
        counts = {}
    results = []
    for run in runs:
        figures, seconds = counts.get(run.run_id, {}), run.watch.seconds
        run.log.info(
            "synced", synced_at=run.synced_at.isoformat(), **{**figures, "seconds": seconds}
        )
        results.append(RunResult(run.entity, run.day, run.run_id, figures, seconds))
    return results


def close_failed_run(run: EntityRun, error: BaseException) -> None:
    """End the failed run in the ledger ('refused', 'interrupted' or 'failed', with the error's
    message) and log it; the files read up to the failure, the failing one included, are
    recorded."""
    run.watch.progress.close()
    is_etl = isinstance(error, EtlError)
    message = str(error) if is_etl else f"unexpected {type(error).__name__}: {error}"
    status = "refused" if isinstance(error, RefusedError) else "failed"
    if isinstance(error, KeyboardInterrupt):
        how = "stopped by SIGTERM" if signals.terminated() else "stopped by the user (Ctrl-C)"
        status, message = "interrupted", f"{how}; nothing of it was applied"
    with contextlib.suppress(EtlError):  # if the database is gone, the next run marks it abandoned
        db.rollback(run.conn)
        run.ledger.flush()
        end_run(run.conn, run.account_id, run.run_id, status, message)
    if is_etl or status == "interrupted":
        run.log.error("run_" + status, message=message)


def check_day_order(run: EntityRun, force: bool) -> None:
    """Refuse a day that sorts before the last day applied for the account's entity, unless
    forced."""
    this = source.day_key(run.day)
    later = [d for d in run.applied_days if source.day_key(d) > this]
    if later and not force:
        last = max(later, key=source.day_key)
        raise RefusedError(
            f"{run.entity}: day {run.day} sorts before {last}, which is already applied; "
            "re-apply an older day only with --force"
        )


def record_files(run: EntityRun) -> None:
    """Every file the run read recorded in the ledger; the connection is free afterwards."""
    run.ledger.flush()
    run.log.debug("read", files=run.ledger.count)
