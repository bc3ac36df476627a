"""One sync run: for each entity of a day, read -> decode -> plan -> stage -> apply.

Each (entity, day) gets a ledger row before any work, one staging transaction and one apply
transaction. The first entity that fails stops the run: later entities are not applied.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from etl import BATCH_VALUES, db, faults, source, split
from etl.apply import apply_run
from etl.batches import Table
from etl.decode import (
    AGENT,
    AGENT_DETAILS,
    GROUP,
    RECORD_KINDS,
    ROLE,
    Decoded,
    RecordKind,
    decode_files,
    iter_records,
)
from etl.errors import EtlError, InputError, RefusedError
from etl.log import get_logger
from etl.pages import FileDigest
from etl.plan import Plan, plan_agents, plan_groups, plan_roles
from etl.progress import NoProgress, Progress
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
    conn: db.Connection, day: str, entities: tuple[str, ...], options: SyncOptions
) -> list[RunResult]:
    """Sync the given entities of ``day`` in order; raises on the first one that fails.

    Entities applied for the first time share one sync time: the moment this run started."""
    now = datetime.now(UTC)
    return [sync_entity(conn, day, entity, options, now) for entity in entities]


def sync_entity(
    conn: db.Connection, day: str, entity: str, options: SyncOptions, now: datetime
) -> RunResult:
    log = get_logger().bind(day=day, entity=entity)
    synced_at = options.synced_at or db.first_synced_at(conn, entity, day) or now
    run_id = db.start_run(conn, day, entity, synced_at, options.force)
    log = log.bind(run_id=run_id)
    watch = Stopwatch(options.progress(f"{day} {entity}") if options.progress else None)
    ledger = db.FileLedger(conn, run_id)
    try:
        check_day_order(conn, entity, day, options.force)
        with watch.stage("list", "list files"):
            inputs = list_inputs(options.data_dir, day, ENTITY_KINDS[entity])
        faults.pause_point("decode", entity)
        with tempfile.TemporaryDirectory(prefix="etl-batches-", dir=options.spill_dir) as spill:
            plan = plan_entity(conn, entity, inputs, ledger, watch, Path(spill), options)
            ledger.flush()
            log.debug("read", files=ledger.count)
            with watch.stage("plan", "read bad records' text"):
                hashes = db.run_file_hashes(conn, run_id, error_files(plan))
                errors = attach_raw(plan, inputs, hashes)
            with watch.stage("stage", "stage rows"):
                tables = {**plan.tables, "stg_errors": Table(errors)}
                stage_tables(conn, entity, tables, on_rows=watch.progress.advance)
                faults.pause_point("stage", entity)
                db.commit(conn, "staging")
        with watch.stage("apply", "apply (one transaction)"):
            apply_run(conn, run_id, allow_mass_removal=options.allow_mass_removal)
            faults.pause_point("apply", entity)
            db.commit(conn, "apply")
    except EtlError as error:
        watch.progress.close()
        status = "refused" if isinstance(error, RefusedError) else "failed"
        _close_failed_run(conn, ledger, status, str(error))
        log.error("run_" + status, message=str(error))
        raise
    except BaseException as error:
        watch.progress.close()
        _close_failed_run(conn, ledger, "failed", f"unexpected {type(error).__name__}: {error}")
        raise
    watch.progress.close()
    try:  # the run is committed: a failure to read its figures back no longer fails it
        db.record_seconds(conn, run_id, watch.seconds)
        counts = db.run_counts(conn, run_id)  # the ledger's figures
    except EtlError as error:
        log.warning("ledger_figures_unread", message=str(error))
        counts = {}
    log.info("synced", synced_at=synced_at.isoformat(), **{**counts, "seconds": watch.seconds})
    return RunResult(entity, day, run_id, counts, watch.seconds)


def _close_failed_run(
    conn: db.Connection, ledger: db.FileLedger, status: str, message: str
) -> None:
    with contextlib.suppress(EtlError):  # a batch whose write failed is lost with the run
        ledger.wait()  # the connection is free again
    with contextlib.suppress(EtlError):  # if the database is gone, the next run marks it abandoned
        db.rollback(conn)
        ledger.flush()  # the files read up to the failure, the failing one included
        db.end_run(conn, ledger.run_id, status, message)


def check_day_order(conn: db.Connection, entity: str, day: str, force: bool) -> None:
    """Refuse a day that sorts before the last day applied for the entity, unless forced."""
    later = [
        d for d in db.applied_days(conn, entity) if source.natural_key(d) > source.natural_key(day)
    ]
    if later and not force:
        last = max(later, key=source.natural_key)
        raise RefusedError(
            f"{entity}: day {day} sorts before {last}, which is already applied; "
            "re-apply an older day only with --force"
        )


def list_inputs(
    data_dir: Path, day: str, kinds: tuple[RecordKind, ...]
) -> dict[str, Sequence[InputFile]]:
    """Every input file of the entity, by record kind, unread; all folders are checked first."""
    return {k.name: source.list_files(data_dir, day, k.folder) for k in kinds}


def plan_entity(
    conn: db.Connection,
    entity: str,
    inputs: dict[str, Sequence[InputFile]],
    ledger: db.FileLedger,
    watch: Stopwatch,
    spill: Path,
    options: SyncOptions,
) -> Plan:
    """Decode the entity's files (stage "decode", reading included) and plan its rows. Decoded
    batches are spilled to files in the folder ``spill``, which must outlive staging."""

    def on_file(digest: FileDigest) -> None:
        ledger.add(digest)
        watch.progress.advance()

    def decode(kind: RecordKind) -> Decoded:
        files = inputs[kind.name]
        with watch.stage("decode", f"decode {kind.folder} files", len(files)):
            batches = spill / f"{kind.name}.arrow"
            parts = split.split_parts(files)
            if parts is not None:
                decoded = split.decode_split(
                    kind, *parts, batches, on_file=on_file, batch_values=options.batch_values
                )
            else:
                decoded = decode_files(
                    kind, files, on_file=on_file, spill=batches, batch_values=options.batch_values
                )
            ledger.wait()  # the plan reads from the connection the ledger writes on
            return decoded

    if entity == "agents":
        agents = decode(AGENT)
        with watch.stage("plan"):
            return plan_agents(agents)
    if entity == "roles":
        roles = decode(ROLE)
        details = decode(AGENT_DETAILS)
        with watch.stage("plan"):
            known_agents = db.fetch_column(conn, "known_agent_ids")
            known_roles = db.fetch_column(conn, "known_role_ids")
            db.commit(conn)
            return plan_roles(roles, details, known_agents, known_roles)
    groups = decode(GROUP)
    with watch.stage("plan"):
        known_agents = db.fetch_column(conn, "known_agent_ids")
        stored_groups = db.fetch_table(conn, "stored_groups")
        db.commit(conn)
        return plan_groups(groups, known_agents, stored_groups)


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
