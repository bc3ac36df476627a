"""Bringing a database's schema etl up to this etl's: table migrations, then routines.

``sql/migrations/NNN_name.sql`` change tables. Each is applied once, in order, and recorded with
its hash in ``etl.schema_migrations``; an applied file is never edited (add the next number).

``sql/routines/*.sql`` hold the one current text of every object that holds no data: functions,
procedures, triggers and views ("routines" here). When the files' hashes differ from those
recorded in ``etl.schema_routines``, every routine of schema etl is dropped and all the files are
applied again, in name order: the database then holds exactly the routines the files define,
whatever an earlier text named or set.

A database that an etl before the baseline migrated (files 001 to 012 recorded) already has the
baseline's tables: its record moves to the baseline and its routines are rebuilt.

Everything happens in one transaction, under a lock that other etl processes wait on.
"""

from __future__ import annotations

import contextlib
import hashlib

from etl import db
from etl.errors import DatabaseError, LockTimeoutError
from etl.server import wrapped

BASELINE = "001_baseline.sql"
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock wait cut by lock_timeout
# What an etl before the baseline recorded: the last one left the tables the baseline creates.
LEGACY = (
    "001_schema.sql",
    "002_apply_v1.sql",
    "003_groups.sql",
    "004_run_files.sql",
    "005_role_pair_checks.sql",
    "006_bulk_memberships.sql",
    "007_run_files_unchecked.sql",
    "008_faster_applies.sql",
    "009_active_member_counts.sql",
    "010_overlapped_runs.sql",
    "011_faster_membership_changes.sql",
    "012_staged_member_lists.sql",
)


def migrate(conn: db.Connection, lock_timeout: float | None = None) -> list[str]:
    """Apply what is pending, in one transaction; the files applied (``migrations/...`` and
    ``routines/...``), none when the database was up to date. A migration waits for the runs
    going on (up to ``lock_timeout`` seconds: then a LockTimeoutError)."""
    if up_to_date(conn):
        db.commit(conn)
        return []
    try:
        with wrapped("migrations"):
            take_migration_lock(conn, lock_timeout)
            db.run_script(conn, db.queries()["bootstrap_migrations"])
            applied = dict(db.execute(conn, "applied_migrations"))
            done = adopt_legacy(conn, applied)
            done += apply_migrations(conn, applied)
            done += rebuild_routines(conn)
    except BaseException:
        with contextlib.suppress(DatabaseError):
            db.rollback(conn)
        raise
    db.commit(conn, "migrations")  # not in a dry run: its migrations are rolled back with it
    return done


def up_to_date(conn: db.Connection) -> bool:
    """Whether the database records exactly these migration and routine files: a read that
    takes no lock, so that runs need not wait for each other to check."""
    if not db.execute(conn, "schema_bookkept")[0][0]:
        return False
    wanted = {
        f"{folder}/{name}": sha256(text)
        for folder in ("migrations", "routines")
        for name, text in files(folder).items()
    }
    return dict(db.execute(conn, "recorded_files")) == wanted


def take_migration_lock(conn: db.Connection, timeout: float | None) -> None:
    """The schema lock, exclusively, until commit: other migrations wait, and this one waits for
    the runs going on (they hold it shared) up to ``timeout`` seconds."""
    if timeout is None:
        db.execute(conn, "migration_lock")
        return
    previous = db.execute(conn, "lock_timeout")[0][0]
    db.execute(conn, "set_lock_timeout", (f"{max(1, round(timeout * 1000))}ms",))
    try:
        db.execute(conn, "migration_lock")
    except DatabaseError as error:
        if getattr(error.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise LockTimeoutError(
            f"etl runs are going on in this database, and its schema must change for this etl; "
            f"gave up waiting for them after {timeout:g} s (see --lock-timeout)"
        ) from error
    db.execute(conn, "set_lock_timeout", (previous,))


def files(folder: str) -> dict[str, str]:
    """The ``.sql`` files of ``sql/<folder>``, name -> text, in name order."""
    paths = sorted(
        (p for p in db.sql_folder().joinpath(folder).iterdir() if p.name.endswith(".sql")),
        key=lambda p: p.name,
    )
    return {p.name: p.read_text() for p in paths}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def adopt_legacy(conn: db.Connection, applied: dict[str, str]) -> list[str]:
    """Move the record of a database migrated before the baseline to the baseline; refuse one
    that such an etl left half migrated. ``applied`` is updated."""
    legacy = [name for name in LEGACY if name in applied]
    if not legacy:
        return []
    if len(legacy) < len(LEGACY):
        raise DatabaseError(
            f"this database was migrated by an earlier etl only up to {legacy[-1]}; run that "
            f"etl once more to apply its remaining migrations, then this one"
        )
    text = files("migrations")[BASELINE]
    db.execute(conn, "adopt_legacy_migrations", (list(LEGACY), BASELINE, sha256(text)))
    for name in LEGACY:
        del applied[name]
    applied[BASELINE] = sha256(text)
    return [f"migrations/{BASELINE} (adopted from {LEGACY[-1]})"]


def apply_migrations(conn: db.Connection, applied: dict[str, str]) -> list[str]:
    """Apply the migration files not recorded yet, in order."""
    pending = files("migrations")
    unknown = sorted(set(applied) - set(pending))
    if unknown:
        raise DatabaseError(
            f"this database has migrations this etl does not know ({', '.join(unknown)}): a "
            "newer etl migrated it; use that etl or a newer one"
        )
    done = []
    for name, text in pending.items():
        if name in applied:
            if applied[name] != sha256(text):
                raise DatabaseError(
                    f"sql/migrations/{name} changed after it was applied to this database; "
                    "applied migrations are never edited: restore it and add a new file"
                )
            continue
        db.run_script(conn, text)
        db.execute(conn, "record_migration", (name, sha256(text)))
        done.append(f"migrations/{name}")
    return done


def rebuild_routines(conn: db.Connection) -> list[str]:
    """Drop every view, trigger and routine of schema etl and apply every routine file, when any
    file's hash differs from the recorded one; the files that changed."""
    wanted = files("routines")
    hashes = {name: sha256(text) for name, text in wanted.items()}
    recorded = dict(db.execute(conn, "applied_routines"))
    if recorded == hashes:
        return []
    db.run_script(conn, db.queries()["drop_routines"])
    for text in wanted.values():
        db.run_script(conn, text)
    db.execute(conn, "forget_routines")
    for name, digest in hashes.items():
        db.execute(conn, "record_routine", (name, digest))
    return [f"routines/{name}" for name, digest in hashes.items() if recorded.get(name) != digest]
