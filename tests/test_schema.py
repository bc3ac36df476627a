"""Migrations: the schema they build, their ledger, and the refusal of edited files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from adbc_driver_manager import dbapi
from conftest import bare_database, rows

from etl import db
from etl.errors import DatabaseError

GOLDEN = Path(__file__).parent / "golden" / "schema.txt"


def describe_schema(conn: db.Connection) -> str:
    columns = rows(
        conn,
        """
        SELECT c.table_name, c.column_name, c.data_type, c.is_nullable
          FROM information_schema.columns c
          JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = 'etl' AND t.table_type = 'BASE TABLE'
         ORDER BY c.table_name, c.ordinal_position""",
    )
    routines = rows(
        conn,
        """
        SELECT routine_type, routine_name FROM information_schema.routines
         WHERE routine_schema = 'etl' ORDER BY routine_name""",
    )
    lines = [" ".join(map(str, c)) for c in columns] + [" ".join(r) for r in routines]
    return "\n".join(lines) + "\n"


def test_migrations_build_the_expected_schema(conn: db.Connection) -> None:
    """A database built from sql/ has exactly the tables, columns and routines of the golden file.
    After a deliberate schema change, ETL_UPDATE_GOLDEN=1 rewrites the file and fails the run, so
    the new file is reviewed and the suite re-run before anything passes."""
    schema = describe_schema(conn)
    if os.environ.get("ETL_UPDATE_GOLDEN"):
        GOLDEN.write_text(schema)
        pytest.fail(f"rewrote {GOLDEN}; review its diff and re-run without ETL_UPDATE_GOLDEN")
    assert schema == GOLDEN.read_text()


def test_migrations_are_recorded_and_applied_once(conn: db.Connection) -> None:
    """Every numbered file is recorded with its hash; migrating again applies nothing."""
    assert db.migrate(conn) == []
    recorded = rows(conn, "SELECT filename, length(sha256) FROM etl.schema_migrations ORDER BY 1")
    assert recorded == [
        ("001_schema.sql", 64),
        ("002_apply_v1.sql", 64),
        ("003_groups.sql", 64),
        ("004_run_files.sql", 64),
        ("005_role_pair_checks.sql", 64),
        ("006_bulk_memberships.sql", 64),
        ("007_run_files_unchecked.sql", 64),
        ("008_faster_applies.sql", 64),
        ("009_active_member_counts.sql", 64),
        ("010_overlapped_runs.sql", 64),
        ("011_faster_membership_changes.sql", 64),
        ("012_staged_member_lists.sql", 64),
    ]


def test_an_edited_migration_is_refused(conn: db.Connection) -> None:
    """A recorded file whose text changed stops etl before anything runs."""
    rows(conn, "UPDATE etl.schema_migrations SET sha256 = 'x' WHERE filename = '001_schema.sql'")
    with pytest.raises(
        DatabaseError,
        match=r"^sql/001_schema.sql changed after it was applied "
        r"to this database; applied migrations are never "
        r"edited: restore it and add a new file$",
    ):
        db.migrate(conn)


def test_run_files_move_from_the_ledger_row_to_their_own_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template_url: str
) -> None:
    """004 moves each run's input_files array into etl.sync_run_files, in order, and drops the
    column; a run without files keeps none."""
    for path in [*sorted(db.SQL_DIR.glob("00[123]_*.sql")), db.SQL_DIR / "queries.sql"]:
        (tmp_path / path.name).write_text(path.read_text())
    with bare_database("migrate") as (_, conn):
        with monkeypatch.context() as patch:
            patch.setattr(db, "SQL_DIR", tmp_path)
            db.migrate(conn)
        files = (
            '[{"file": "sync-d/agents/1.json", "bytes": 10, "sha256": "aa"},'
            ' {"file": "sync-d/agents/2.json", "bytes": 0, "sha256": "bb"}]'
        )
        rows(
            conn,
            "INSERT INTO etl.sync_runs (sync_day, entity, synced_at, input_files)"
            " VALUES ('d', 'agents', now(), $1::jsonb), ('d', 'roles', now(), '[]')",
            (files,),
        )
        assert db.migrate(conn)[0] == "004_run_files.sql"
        assert rows(conn, "SELECT * FROM etl.sync_run_files ORDER BY run_id, file_index") == [
            (1, 0, "sync-d/agents/1.json", 10, "aa"),
            (1, 1, "sync-d/agents/2.json", 0, "bb"),
        ]
        assert rows(
            conn,
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = 'etl' AND column_name = 'input_files'",
        ) == [(0,)]


def test_deleting_a_run_deletes_its_files(conn: db.Connection) -> None:
    """sync_run_files has no foreign key (checking it per file was 11 us a file); a statement
    trigger still deletes a run's files with the run, and only that run's."""
    rows(conn, "SELECT etl.start_run_v1('d1', 'agents', now(), false)")
    rows(conn, "SELECT etl.start_run_v1('d1', 'roles', now(), false)")
    rows(
        conn,
        "INSERT INTO etl.sync_run_files VALUES (1, 0, 'a.json', 2, 'aa'),"
        " (1, 1, 'b.json', 2, 'bb'), (2, 0, 'r.json', 2, 'rr')",
    )
    rows(conn, "DELETE FROM etl.sync_runs WHERE run_id = 1")
    assert rows(conn, "SELECT run_id, file FROM etl.sync_run_files") == [(2, "r.json")]


def test_a_run_that_history_names_cannot_be_deleted(conn: db.Connection) -> None:
    """agent_role_history.run_id has no foreign key (it tripled the time of a first day's
    history); a statement trigger still refuses to delete a run that history names, and
    deletes one it does not name."""
    rows(conn, "SELECT etl.start_run_v1('d1', 'roles', now(), false)")
    rows(conn, "SELECT etl.start_run_v1('d1', 'agents', now(), false)")
    rows(
        conn,
        "INSERT INTO etl.agent_role_history (agent_id, role_id, from_status, to_status,"
        " changed_at, sync_day, run_id) VALUES (7, 3, NULL, 'assigned', now(), 'd1', 1)",
    )
    conn.commit()
    with pytest.raises(dbapi.IntegrityError) as raised:
        rows(conn, "DELETE FROM etl.sync_runs")
    assert "run 1 cannot be deleted: agent_role_history names it" in str(raised.value)
    assert raised.value.sqlstate == "23503"  # foreign_key_violation, as the key raised
    conn.rollback()
    rows(conn, "DELETE FROM etl.sync_runs WHERE run_id = 2")
    assert rows(conn, "SELECT run_id FROM etl.sync_runs") == [(1,)]


def test_migrations_apply_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template_url: str
) -> None:
    """A pending file that fails takes the ones before it back too: the database is left as it
    was, without a schema etl (the DBAPI's executescript used to commit each file on its own)."""
    for path in [*sorted(db.SQL_DIR.glob("0*.sql")), db.SQL_DIR / "queries.sql"]:
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "999_broken.sql").write_text("CREATE TABLE etl.broken (x no_such_type);")
    with bare_database("migrate_tx") as (_, conn):
        with monkeypatch.context() as patch:
            patch.setattr(db, "SQL_DIR", tmp_path)
            with pytest.raises(DatabaseError, match="no_such_type"):
                db.migrate(conn)
        conn.rollback()
        assert rows(conn, "SELECT to_regnamespace('etl') IS NULL") == [(True,)]


def test_staged_memberships_survive_the_move_to_member_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """012 moves memberships staged as pairs (by a run that may not have applied them yet)
    into one list per group, and the view shows the same pairs."""
    before = tmp_path / "sql"
    before.mkdir()
    older = [p for p in db.SQL_DIR.glob("0*.sql") if p.name < "012"]
    for path in [*older, db.SQL_DIR / "queries.sql"]:
        (before / path.name).write_text(path.read_text())
    pairs = [(1, 5), (1, 7), (2, 5)]
    with bare_database("move") as (_, conn):
        with monkeypatch.context() as patch:
            patch.setattr(db, "SQL_DIR", before)
            assert db.migrate(conn)[-1] == "011_faster_membership_changes.sql"
        rows(conn, "INSERT INTO etl.stg_group_membership VALUES (1, 7), (2, 5), (1, 5)")
        db.commit(conn)
        assert db.migrate(conn)[0] == "012_staged_member_lists.sql"
        assert rows(conn, "SELECT * FROM etl.stg_group_membership ORDER BY 1, 2") == pairs
        assert rows(conn, "SELECT * FROM etl.stg_group_members ORDER BY 1") == [
            (1, [5, 7]),
            (2, [5]),
        ]


def test_staged_member_lists_hold_no_null(conn: db.Connection) -> None:
    """A null member would name no agent: the staging table refuses it."""
    with pytest.raises(dbapi.IntegrityError, match="stg_group_members_agent_ids_check"):
        rows(conn, "INSERT INTO etl.stg_group_members VALUES (1, ARRAY[5, NULL]::bigint[])")
