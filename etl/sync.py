"""One sync run: for each entity of a day, read -> decode -> plan -> stage -> apply.

Each (entity, day) gets a ledger row before any work, one staging transaction and one apply
transaction. The first entity that fails stops the run: later entities are not applied (the
next one may have started reading its input while the failing one applied; it is closed
unapplied).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from etl import BATCH_VALUES, db, faults, source, split
from etl.apply import apply_run
from etl.batches import Table
from etl.decode import Decoded, decode_files, iter_records
from etl.errors import EtlError, InputError, Interrupted, RefusedError
from etl.log import get_logger
from etl.pages import FileDigest
from etl.plan import AccountDay, Plan, plan_day
from etl.progress import NoProgress, Progress
from etl.records import AGENT, AGENT_DETAILS, GROUP, RECORD_KINDS, ROLE, RecordKind
from etl.source import InputFile
from etl.stage import stage_tables

ENTITY_KINDS: dict[str, tuple[RecordKind, ...]] = {
    "agents": (AGENT,),
    "roles": (ROLE, AGENT_DETAILS),
    "groups": (GROUP,),
}


@dataclass(frozen=True)
class SyncOptions:
    data_dir: Path
    synced_at: datetime | None = None
    force: bool = False
    allow_mass_removal: bool = False
    progress: Callable[[str], Progress] | None = None  # a live line per entity (a terminal)
    batch_values: int = BATCH_VALUES  # records plus mapping elements per decoded batch
    spill_dir: Path | None = None  # where decoded batches go; None: the system's temp folder


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


def sync_day(
    conn: db.Connection,
    account_id: int,
    day: str,
    entities: tuple[str, ...],
    options: SyncOptions,
    *,
    overlap: bool = False,
) -> list[RunResult]:
    """Sync the given entities of the account's ``day`` in order; raises on the first one that
    fails.

    With ``overlap``, each entity's apply runs on a thread of its own while the next entity
    starts and reads its input on a second connection (the driver lets go of the GIL while the
    server works). The next entity plans once that apply has committed if its plan reads what
    that apply stores (roles after agents), else beside it (groups after roles); it is applied
    only after that apply has committed, and not at all if it failed. Without, each entity is
    done before the next begins: a dry run needs that, as its one uncommitted transaction lives
    on ``conn`` alone.

    Entities applied for the first time share one sync time: the moment this run started."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    results: list[RunResult] = []
    try:
        run_entities(conn, account_id, day, entities, options, overlap, now, results)
    except KeyboardInterrupt:
        applied = [r.entity for r in results]
        under_way = next((e for e in entities if e not in applied), entities[-1])
        raise Interrupted(day, under_way, applied) from None
    except EtlError as error:
        error.applied = tuple(r.entity for r in results)
        raise
    seconds = round(time.perf_counter() - started, 4)
    totals = day_totals(results)
    get_logger().info(
        "day_synced", day=day, status="succeeded", entities=len(results), seconds=seconds, **totals
    )
    return results


TOTALS = ("staged", "inserted", "updated", "unchanged", "removed", "quarantined")


def day_totals(results: list[RunResult]) -> dict[str, int]:
    """The day's counts summed over its entities."""
    return {key: sum(int(r.counts.get(key) or 0) for r in results) for key in TOTALS}


def day_summary(day: str, results: list[RunResult], seconds: float) -> str:
    """A few lines for a person: per entity what changed, what was quarantined and the command
    that shows it, and the time."""
    lines = [f"day {day} synced in {seconds:.1f} s"]
    for result in results:
        counts = result.counts
        changed = [f"{counts.get(k) or 0} {k}" for k in ("inserted", "updated", "removed")]
        quarantined = counts.get("quarantined") or 0
        lines.append(
            f"  {result.entity}: {counts.get('staged') or 0} staged, {', '.join(changed)}, "
            f"{quarantined} quarantined"
        )
    if day_totals(results)["quarantined"]:
        lines.append(f"quarantined records: etl errors --day {day}")
    return "\n".join(lines)


def run_entities(
    conn: db.Connection,
    account_id: int,
    day: str,
    entities: tuple[str, ...],
    options: SyncOptions,
    overlap: bool,
    now: datetime,
    results: list[RunResult],
) -> None:
    """The entities in order, each result added to ``results`` once applied."""
    applying: Applying | None = None
    with ReadAhead(day, entities, options) as ahead, Sessions(conn) as sessions:
        overlap = overlap and len(entities) > 1 and sessions.open_spare()
        for entity in entities:
            previous, applying = applying, None
            try:
                conn_free = sessions.free(previous)
                run = begin_run(conn_free, account_id, day, entity, options, now, previous)
                prepare_run(run, options, ahead, previous, results)
            finally:
                settle(previous, results)  # at the latest; its failure is raised first
            background = overlap and entity != entities[-1]
            applying = Applying(run, options.allow_mass_removal, background=background)
            if not background:
                settle(applying, results)


class Sessions:
    """The sync's connection, and a spare one for the run that starts while an apply holds the
    first (opened before the first run, closed at the end)."""

    def __init__(self, conn: db.Connection) -> None:
        self.conn = conn
        self.spare: db.Connection | None = None

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spare is not None:
            db.close(self.spare)

    def open_spare(self) -> bool:
        """Open the spare connection; False if the server refuses it (too many clients, say):
        the sync then runs one entity after the other, as the overlap is only a speed-up."""
        try:
            self.spare = db.clone(self.conn)
        except EtlError as error:
            get_logger().warning("no_second_connection", message=str(error))
            return False
        return True

    def free(self, applying: Applying | None) -> db.Connection:
        """A connection that ``applying``, if still applying, does not hold."""
        if applying is None or applying.thread is None or applying.run.conn is not self.conn:
            return self.conn
        assert self.spare is not None  # an apply goes to the background only with it
        return self.spare


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
    ledger: db.FileLedger
    log: Any
    applied_days: list[str]


def begin_run(
    conn: db.Connection,
    account_id: int,
    day: str,
    entity: str,
    options: SyncOptions,
    now: datetime,
    previous: Applying | None,
) -> EntityRun:
    """The run's ledger row ('running'), started while ``previous`` may still be applying."""
    applying = previous.run.run_id if previous is not None else None
    account = (account_id, options.synced_at, options.force)
    started = db.start_runs(conn, day, entity, [account], now, applying)
    return entity_run(conn, started[account_id], day, entity, options)


def entity_run(
    conn: db.Connection,
    started: db.StartedRun,
    day: str,
    entity: str,
    options: SyncOptions,
    **context: Any,
) -> EntityRun:
    """The run under way whose ledger row ``started`` is; its log lines carry ``context``."""
    watch = Stopwatch(options.progress(f"{day} {entity}") if options.progress else None)
    log = get_logger().bind(**context, day=day, entity=entity, run_id=started.run_id)
    ledger = db.FileLedger(conn, started.account_id, started.run_id)
    return EntityRun(
        conn,
        started.account_id,
        entity,
        day,
        started.run_id,
        started.synced_at,
        watch,
        ledger,
        log,
        started.applied_days,
    )


def prepare_run(
    run: EntityRun,
    options: SyncOptions,
    ahead: ReadAhead,
    previous: Applying | None,
    results: list[RunResult],
) -> None:
    """Read, decode, plan and stage the run's input (staging committed). The input is read
    while ``previous`` applies. The plan waits for it if it reads what that apply stores
    (:data:`PLAN_READS`); otherwise the run plans and stages beside it, and waits before its
    own apply. On failure the run is closed, and a failure of ``previous`` is raised first."""
    try:
        waits = plan_waits_for(run.entity, previous)
        with tempfile.TemporaryDirectory(prefix="etl-batches-", dir=options.spill_dir) as spill:
            try:
                check_day_order(run, options.force)
                with run.watch.stage("list", "list files"):
                    inputs = list_inputs(options.data_dir, run.day, ENTITY_KINDS[run.entity], ahead)
                faults.pause_point("decode", run.entity)
                # the other core may be busy: with the previous apply, or reading ahead
                alone = (previous is None or previous.thread is None) and not ahead.running()
                decoded = decode_entity(run, inputs, Path(spill), ahead, options, split_ok=alone)
                record_files(run)
                if not waits:
                    plan_and_stage(run, decoded, inputs)
            finally:
                wait_for_previous(run, previous, results)
            if waits:
                plan_and_stage(run, decoded, inputs)
    except BaseException as error:
        if previous is not None and error is previous.error:
            how = "was refused" if isinstance(error, RefusedError) else "failed"
            message = f"not applied: the {previous.run.entity} step of this run {how}"
            close_failed_run(run, EtlError(message))
        else:
            close_failed_run(run, error)
        raise


def plan_and_stage(
    run: EntityRun, decoded: dict[str, Decoded], inputs: dict[str, Sequence[InputFile]]
) -> None:
    """Plan the decoded records, and stage the plan's tables and bad records in one committed
    transaction."""
    with run.watch.stage("plan"):
        plan = plan_entity(run.conn, run.account_id, run.entity, decoded)
    tables = staged_tables(run, plan, inputs)
    with run.watch.stage("stage", "stage rows"):
        stage_tables(
            run.conn, run.account_id, run.entity, tables, on_rows=run.watch.progress.advance
        )
        faults.pause_point("stage", run.entity)
        db.commit(run.conn, "staging")


def staged_tables(
    run: EntityRun, plan: Plan, inputs: dict[str, Sequence[InputFile]]
) -> dict[str, Table]:
    """The tables the run stages: the plan's, and its bad records with their text read again
    from their files."""
    with run.watch.stage("plan", "read bad records' text"):
        wanted = [(run.account_id, run.run_id, error_files(plan))]
        hashes = db.run_file_hashes(run.conn, wanted)[run.run_id]
        return with_bad_records(plan, inputs, hashes)


def with_bad_records(
    plan: Plan, inputs: dict[str, Sequence[InputFile]], hashes: dict[str, str]
) -> dict[str, Table]:
    """The plan's tables, and its bad records with their text read again from their files
    (``hashes``: the files' SHA-256 as the run recorded them)."""
    return {**plan.tables, "stg_errors": Table(attach_raw(plan, inputs, hashes))}


# What an entity's plan reads of what the steps before it store: the stored agents (roles'
# pairs and groups' members name them). Groups plan and stage while roles applies.
PLAN_READS: dict[str, tuple[str, ...]] = {"agents": (), "roles": ("agents",), "groups": ("agents",)}


def plan_waits_for(entity: str, previous: Applying | None) -> bool:
    """Whether ``entity`` must wait for ``previous`` to commit before it plans."""
    return previous is not None and previous.run.entity in PLAN_READS[entity]


def wait_for_previous(run: EntityRun, previous: Applying | None, results: list[RunResult]) -> None:
    """Settle ``previous`` (see :func:`settle`), its summary line before this run's progress."""
    if previous is not None and not previous.settled:
        run.watch.progress.close()
    settle(previous, results)


class Applying:
    """A run's apply: at once, or on a thread of its own (``background``) while the next
    entity reads its input (and plans and stages it, for groups); :func:`settle` waits for
    it."""

    def __init__(self, run: EntityRun, allow_mass_removal: bool, *, background: bool) -> None:
        self.run = run
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.settled = False  # waited for, and its result or failure taken
        if not background:
            self.apply(allow_mass_removal)
            return
        run.watch.progress.stage("apply (one transaction)")
        run.watch.progress.close()  # the terminal line is the next entity's
        run.watch.progress = NoProgress()
        thread = threading.Thread(
            target=self.apply, args=(allow_mass_removal,), name=f"etl-apply-{run.entity}"
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: apply here and now
            self.apply(allow_mass_removal)
            return
        self.thread = thread

    def apply(self, allow_mass_removal: bool) -> None:
        run = self.run
        try:
            with run.watch.stage("apply", "apply (one transaction)"):
                apply_run(
                    run.conn, run.account_id, run.run_id, allow_mass_removal=allow_mass_removal
                )
                faults.pause_point("apply", run.entity)
                db.commit(run.conn, "apply")
        except BaseException as error:
            self.error = error

    def wait(self) -> None:
        """Wait for the apply's thread to end. Ctrl-C (only the main thread hears it) cancels
        the statement in the server, as it does for an apply on the main thread, and still
        waits: the connection is the thread's until it ends."""
        if self.thread is None:
            return
        try:
            self.thread.join()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                self.run.conn.adbc_cancel()
            while self.thread.is_alive():
                with contextlib.suppress(KeyboardInterrupt):
                    self.thread.join()
            raise


def settle(applying: Applying | None, results: list[RunResult]) -> None:
    """Wait for ``applying``, if any: add its result to ``results``, or close its run and raise
    its failure (once: a second call does nothing)."""
    if applying is None or applying.settled:
        return
    interrupted: KeyboardInterrupt | None = None
    try:
        applying.wait()
    except KeyboardInterrupt as error:
        interrupted = error  # the apply ended all the same; its run is closed first
    applying.settled = True
    if applying.error is not None:
        close_failed_run(applying.run, applying.error)
        raise interrupted or applying.error
    results.append(finish_run(applying.run))
    if interrupted is not None:
        raise interrupted


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
        counts = db.record_seconds(conn, spent)  # the ledger's figures
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
        status, message = "interrupted", "stopped by the user (Ctrl-C); nothing of it was applied"
    with contextlib.suppress(EtlError):  # a batch whose write failed is lost with the run
        run.ledger.wait()  # the connection is free again
    with contextlib.suppress(EtlError):  # if the database is gone, the next run marks it abandoned
        db.rollback(run.conn)
        run.ledger.flush()
        db.end_run(run.conn, run.account_id, run.run_id, status, message)
    if is_etl or status == "interrupted":
        run.log.error("run_" + status, message=message)


def check_day_order(run: EntityRun, force: bool) -> None:
    """Refuse a day that sorts before the last day applied for the account's entity, unless
    forced."""
    later = [d for d in run.applied_days if source.natural_key(d) > source.natural_key(run.day)]
    if later and not force:
        last = max(later, key=source.natural_key)
        raise RefusedError(
            f"{run.entity}: day {run.day} sorts before {last}, which is already applied; "
            "re-apply an older day only with --force"
        )


def list_inputs(
    data_dir: Path, day: str, kinds: tuple[RecordKind, ...], ahead: ReadAhead | None = None
) -> dict[str, Sequence[InputFile]]:
    """Every input file of the entity, by record kind, unread; all folders are checked first.
    A folder ``ahead`` reads keeps the listing it was given."""
    early = ahead.listed() if ahead is not None else {}
    return {
        k.name: early[k.name] if k.name in early else source.list_files(data_dir, day, k.folder)
        for k in kinds
    }


class ReadAhead:
    """The second half of the day's agent_details folder decoded by a worker process from the
    start of a sync that runs roles after other entities: one file per agent makes it the
    slowest folder to decode (200,000 files: 4.1 s on one core), and the agents step before it
    leaves a core free for much of its time; the roles run decodes the first half and joins
    the worker's. Nothing of it reaches the database before the roles run takes it; unless
    taken, the worker is stopped at the end. Anything but a folder that cannot be listed
    (which the roles run reports) only costs the read-ahead."""

    KIND = AGENT_DETAILS

    def __init__(self, day: str, entities: tuple[str, ...], options: SyncOptions) -> None:
        self.day, self.entities, self.options = day, entities, options
        self.files: source.FolderFiles | None = None
        self.first: source.FolderFiles | None = None  # the part this process decodes
        self.part: split.SecondPart | None = None
        self.folder: tempfile.TemporaryDirectory[str] | None = None
        self.taken = False

    def __enter__(self) -> ReadAhead:
        if "roles" not in self.entities[1:]:
            return self
        try:
            self.start()
        except EtlError:  # the folder cannot be listed: the roles run says so in its turn
            self.__exit__()
        except Exception as error:  # only a speed-up lost: roles reads the folder itself
            self.__exit__()
            get_logger().warning("read_ahead_skipped", reason=f"{type(error).__name__}: {error}")
        return self

    def start(self) -> None:
        files = source.list_files(self.options.data_dir, self.day, self.KIND.folder)
        if not split.worth_reading_ahead(files):
            return
        self.folder = tempfile.TemporaryDirectory(prefix="etl-ahead-", dir=self.options.spill_dir)
        spill = Path(self.folder.name) / f"{self.KIND.name}.arrow"
        first, second = files.split(len(files) // 2)
        self.part = split.SecondPart(
            self.KIND, second, spill, batch_values=self.options.batch_values
        )
        self.files, self.first = files, first

    def __exit__(self, *exc: object) -> None:
        if self.part is not None:
            self.part.stop()
        if self.folder is not None:
            self.folder.cleanup()
        self.files = self.first = self.part = self.folder = None

    def running(self) -> bool:
        """Whether the worker is still decoding (or sending its result)."""
        return self.part is not None and self.part.running()

    def listed(self) -> dict[str, Sequence[InputFile]]:
        """The listing the worker decodes, by record kind (none if no worker started)."""
        return {} if self.files is None else {self.KIND.name: self.files}

    def take(self, kind: RecordKind) -> tuple[source.FolderFiles, split.SecondPart] | None:
        """For ``kind``'s folder, if read ahead and not taken yet: the part left to decode
        here, and the worker on the rest, which whoever takes it waits for and stops (the end
        of the sync stops it again, which does nothing then)."""
        if kind is not self.KIND or self.part is None or self.first is None or self.taken:
            return None
        self.taken = True
        return self.first, self.part


def decode_entity(
    run: EntityRun,
    inputs: dict[str, Sequence[InputFile]],
    spill: Path,
    ahead: ReadAhead,
    options: SyncOptions,
    *,
    split_ok: bool = True,
) -> dict[str, Decoded]:
    """Decode the run's files (stage "decode", reading included), by record kind, each file
    added to the run's ledger (see :func:`record_files`); a big folder on both cores if
    ``split_ok``. Decoded batches are spilled to files in the folder ``spill``, which must
    outlive staging."""

    def on_file(digest: FileDigest) -> None:
        run.ledger.add(digest)
        run.watch.progress.advance()

    decoded = {}
    for kind in ENTITY_KINDS[run.entity]:
        files = inputs[kind.name]
        with run.watch.stage("decode", f"decode {kind.folder} files", len(files)):
            batches = spill / f"{kind.name}.arrow"
            # read ahead (a worker on part of it since the sync began), else maybe split now
            parts: tuple[source.FolderFiles, source.FolderFiles | split.SecondPart] | None
            parts = ahead.take(kind) or (split.split_parts(files) if split_ok else None)
            if parts is not None:
                first, second = parts
                decoded[kind.name] = split.decode_split(
                    kind, first, second, batches, on_file=on_file, batch_values=options.batch_values
                )
            else:
                decoded[kind.name] = decode_files(
                    kind, files, on_file=on_file, spill=batches, batch_values=options.batch_values
                )
    return decoded


def record_files(run: EntityRun) -> None:
    """Every file the run read recorded in the ledger; the connection is free afterwards."""
    run.ledger.flush()
    run.log.debug("read", files=run.ledger.count)


def plan_entity(
    conn: db.Connection, account_id: int, entity: str, decoded: dict[str, Decoded]
) -> Plan:
    """The entity's planned rows, checked against the ids the account stores now."""
    return plan_day(entity, account_days(conn, entity, {account_id: decoded})[account_id])


def account_days(
    conn: db.Connection, entity: str, decoded: dict[int, dict[str, Decoded]]
) -> dict[int, AccountDay]:
    """Each account's decoded records (``decoded``: by account id), with the ids the account
    stores that the entity's plan checks them against, read for all the accounts at once."""
    ids = list(decoded)
    if entity == "agents":
        return {a: AccountDay(records) for a, records in decoded.items()}
    agents = db.by_account(db.fetch_table(conn, "known_agent_ids", (ids,)), ids)
    if entity == "roles":
        roles = db.by_account(db.fetch_table(conn, "known_role_ids", (ids,)), ids)
        db.commit(conn)
        return {
            a: AccountDay(records, first_column(agents[a]), known_roles=first_column(roles[a]))
            for a, records in decoded.items()
        }
    groups = db.by_account(db.fetch_table(conn, "stored_groups", (ids,)), ids)
    db.commit(conn)
    return {
        a: AccountDay(records, first_column(agents[a]), stored_groups=groups[a])
        for a, records in decoded.items()
    }


def first_column(table: pa.Table) -> pa.Array:
    return table.column(0).combine_chunks()


def error_files(plan: Plan) -> list[str]:
    """The files that hold the plan's error records."""
    return plan.errors.get_column("source_file").unique().sort().to_list()


def attach_raw(
    plan: Plan, inputs: dict[str, Sequence[InputFile]], hashes: dict[str, str]
) -> pl.DataFrame:
    """The plan's error rows, each with its record's exact JSON text, read again from its file
    (one file at a time; ``hashes`` are the files' SHA-256 at the first read, and a file that
    changed since is an InputError)."""
    wanted = plan.errors.select("record_kind", "source_file", "record_index")
    by_file = wanted.group_by("record_kind", "source_file", maintain_order=True).agg("record_index")
    texts: dict[tuple[str, int], str] = {}
    for kind_name, name, indexes in by_file.iter_rows():
        file = source.file_named(inputs[kind_name], name)
        texts.update(read_raw_texts(RECORD_KINDS[kind_name], file, set(indexes), hashes[name]))
    positions = wanted.select("source_file", "record_index").iter_rows()
    raw = [texts[position] for position in positions]
    return plan.errors.select(
        entity=pl.lit(plan.entity),
        record_kind="record_kind",
        error_type="error_type",
        error_message="error_message",
        field="field",
        record_id="record_id",
        source_file="source_file",
        record_index="record_index",
        raw_text=pl.Series(raw, dtype=pl.String),
    )


def read_raw_texts(
    kind: RecordKind, file: InputFile, indexes: set[int], sha256: str
) -> dict[tuple[str, int], str]:
    """(file, index) -> the exact text of the records at ``indexes`` in ``file``."""
    digest = FileDigest(file.name)
    texts = {}
    for index, _, raw in iter_records(kind, file, digest=digest):
        if index in indexes:
            texts[(file.name, index)] = bytes(raw).decode("utf-8", "backslashreplace")
    if digest.sha256 != sha256:
        raise InputError(
            f"{file.name}: changed while this run read it (SHA-256 {sha256[:12]}... at first, "
            f"{digest.sha256[:12]}... now); run the day again"
        )
    return texts
