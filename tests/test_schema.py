"""The schema: what sql/ builds (compared whole with a golden dump), how migrations and routines
are applied and recorded, and the adoption of a database an earlier etl migrated."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from adbc_driver_manager import dbapi
from conftest import FIXTURES, bare_database, open_run, rows, sync
from replay import STATE_TABLES, dump_state

from etl import db
from etl.errors import DatabaseError
from etl.migrate import migrate

GOLDEN = Path(__file__).parent / "golden" / "schema.txt"
REPLAY = Path(__file__).parent / "golden" / "replay.txt"
# A real database of the etl before the baseline (f163b20): fixture days 1-5 synced at T(n),
# then `pg_dump --inserts --no-owner --no-privileges -n etl`.
ETL_012 = Path(__file__).parent / "data" / "etl-012.sql.gz"
ROUTINES = sorted(p.name for p in (db.sql_folder() / "routines").iterdir())  # type: ignore[operator]

RELATIONS = """
SELECT c.oid, CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence'
                             ELSE c.relkind::text END
       || CASE c.relpersistence WHEN 'u' THEN ' (unlogged)' ELSE '' END,
       c.relname, coalesce(array_to_string(c.reloptions, ', '), '')
  FROM pg_class c
 WHERE c.relnamespace = 'etl'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
 ORDER BY c.relname"""
COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
       CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' ELSE '' END,
       CASE a.attgenerated WHEN 's' THEN 'stored' ELSE '' END
  FROM pg_attribute a
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum"""
DETAILS = """
SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = $1 AND contype <> 'n'  -- PostgreSQL 18 lists NOT NULL here too
UNION ALL
SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal
UNION ALL
SELECT 'view ' || pg_get_viewdef($1) FROM pg_class WHERE oid = $1 AND relkind IN ('v', 'm')
ORDER BY 1"""
ROUTINE_TEXTS = """
SELECT pg_get_functiondef(p.oid) FROM pg_proc p
 WHERE p.pronamespace = 'etl'::regnamespace ORDER BY p.oid::regprocedure::text"""


def describe_schema(conn: db.Connection) -> str:
    """Schema etl as text: every relation with its columns, constraints, indexes, triggers and
    view text, then every routine's whole definition (body, language, settings)."""
    lines = []
    for oid, kind, name, options in rows(conn, RELATIONS):
        lines.append(f"{kind} etl.{name}" + (f" with ({options})" if options else ""))
        for column, type_, not_null, default, identity, generated in rows(conn, COLUMNS, (oid,)):
            attributes = [type_, "not null" if not_null else ""]
            attributes += [f"default {default}" if default else ""]
            attributes += [f"identity {identity}" if identity else ""]
            attributes += [f"generated {generated}" if generated else ""]
            lines.append(f"  {column} " + " ".join(a for a in attributes if a))
        lines += [f"  {detail}" for (detail,) in rows(conn, DETAILS, (oid,))]
    lines += [text.rstrip() for (text,) in rows(conn, ROUTINE_TEXTS)]
    return "\n".join(lines) + "\n"


def test_the_sql_files_build_the_golden_schema(conn: db.Connection) -> None:
    """A database built from sql/ has exactly the schema of the golden file: tables, columns,
    constraints, indexes, views, triggers, and every routine's body and settings. After a
    deliberate change, ETL_UPDATE_GOLDEN=1 rewrites the file and fails the run, so the new file is
    reviewed and the suite re-run before anything passes."""
    schema = describe_schema(conn)
    if os.environ.get("ETL_UPDATE_GOLDEN"):
        GOLDEN.write_text(schema)
        pytest.fail(f"rewrote {GOLDEN}; review its diff and re-run without ETL_UPDATE_GOLDEN")
    assert schema == GOLDEN.read_text()


def test_migrations_and_routines_are_recorded_and_applied_once(conn: db.Connection) -> None:
    """Every migration and routine file is recorded with its hash; migrating again applies
    nothing."""
    assert migrate(conn) == []
    assert rows(conn, "SELECT filename, length(sha256) FROM etl.schema_migrations ORDER BY 1") == [
        ("001_baseline.sql", 64),
        ("002_accounts.sql", 64),
        ("003_interrupted.sql", 64),
        ("004_ledger_lookups.sql", 64),
        ("005_membership_key_by_agent.sql", 64),
        ("006_role_pairs_one_index.sql", 64),
    ]
    assert rows(conn, "SELECT filename FROM etl.schema_routines ORDER BY 1") == [
        (name,) for name in ROUTINES
    ]


def test_an_edited_migration_is_refused(conn: db.Connection) -> None:
    """A recorded migration whose text changed stops etl before anything runs."""
    rows(conn, "UPDATE etl.schema_migrations SET sha256 = 'x' WHERE filename = '001_baseline.sql'")
    with pytest.raises(
        DatabaseError,
        match=r"^sql/migrations/001_baseline.sql changed after it was applied to this database; "
        r"applied migrations are never edited: restore it and add a new file$",
    ):
        migrate(conn)


def test_a_migration_of_a_newer_etl_is_refused(conn: db.Connection) -> None:
    """A database that records a migration this etl does not have was migrated by a newer etl:
    this one changes nothing in it."""
    rows(conn, "INSERT INTO etl.schema_migrations (filename, sha256) VALUES ('002_next.sql', 'x')")
    with pytest.raises(
        DatabaseError,
        match=r"^this database has migrations this etl does not know \(002_next.sql\): a newer "
        r"etl migrated it; use that etl or a newer one$",
    ):
        migrate(conn)
    assert rows(conn, "SELECT count(*) FROM etl.schema_migrations") == [(7,)]


def copy_of_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of sql/ in tmp_path, which etl then reads instead."""
    source = Path(str(db.sql_folder()))
    for path in source.rglob("*.sql"):
        target = tmp_path / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    monkeypatch.setattr(db, "sql_folder", lambda: tmp_path)
    return tmp_path


def test_a_changed_routine_file_replaces_every_routine(
    conn: db.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a routine file changes, the routines are rebuilt from the files: the changed body is
    in force, a routine no file defines any more is gone (no stale overload of an old signature),
    and the triggers are back."""
    sql = copy_of_sql(tmp_path, monkeypatch)
    runs = sql / "routines" / "runs.sql"
    text = runs.read_text()
    text = text.replace("message = p_message", "message = 'changed: ' || p_message")
    text = text.replace(
        "p_forced boolean, p_applying bigint)", "p_forced boolean, p_applying bigint, p_x int)"
    )
    runs.write_text(text)
    assert migrate(conn) == ["routines/runs.sql"]
    assert describe_schema(conn) != GOLDEN.read_text()
    assert rows(
        conn,
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'etl'::regnamespace AND p.proname = 'start_run_v3'",
    ) == [("etl.start_run_v3(bigint,text,text,timestamp with time zone,boolean,bigint,integer)",)]
    assert rows(
        conn,
        "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE p.pronamespace = 'etl'::regnamespace",
    ) == [(11,)]
    assert (
        "message = 'changed: ' || p_message"
        in rows(conn, "SELECT pg_get_functiondef('etl.end_run_v2'::regproc)")[0][0]
    )
    assert migrate(conn) == []


def test_a_routine_used_by_an_object_of_the_user_stops_the_rebuild(
    conn: db.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routines are dropped without CASCADE: a view of the user's that calls one stops the
    migration with the server's reason, and the view and every routine stay."""
    rows(conn, "CREATE VIEW public.users_view AS SELECT etl.try_jsonb_v1('[1]') AS j")
    sql = copy_of_sql(tmp_path, monkeypatch)
    (sql / "routines" / "staging.sql").write_text(
        (sql / "routines" / "staging.sql").read_text() + "\n-- changed\n"
    )
    with pytest.raises(DatabaseError, match=r"cannot drop function etl\.try_jsonb_v1"):
        migrate(conn)
    assert rows(conn, "SELECT j::text FROM public.users_view") == [("[1]",)]
    assert describe_schema(conn) == GOLDEN.read_text()


def test_migrations_apply_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template_url: str
) -> None:
    """A pending file that fails takes the ones before it back too: the database is left as it
    was, without a schema etl."""
    sql = copy_of_sql(tmp_path, monkeypatch)
    (sql / "migrations" / "999_broken.sql").write_text("CREATE TABLE etl.broken (x no_such_type);")
    with bare_database("migrate_tx") as (_, conn):
        with pytest.raises(DatabaseError, match="no_such_type"):
            migrate(conn)
        assert rows(conn, "SELECT to_regnamespace('etl') IS NULL") == [(True,)]


def load_etl_012(url: str) -> None:
    """Restore the database of the etl before the baseline into the empty database at url."""
    conn = db.connect(url)
    try:
        db.run_script(conn, gzip.decompress(ETL_012.read_bytes()).decode())
        conn.commit()
    finally:
        conn.close()


def every_row(conn: db.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of schema etl but the migration records, in a fixed order."""
    tables = rows(
        conn,
        "SELECT relname FROM pg_class WHERE relnamespace = 'etl'::regnamespace"
        " AND relkind = 'r' AND relname NOT LIKE 'schema%' ORDER BY 1",
    )
    return {
        name: sorted(rows(conn, f'SELECT * FROM etl."{name}"'), key=repr)  # noqa: S608
        for (name,) in tables
    }


def test_a_database_of_the_etl_before_the_baseline_is_adopted(template_url: str) -> None:
    """A real database that the etl before the baseline migrated (001-012) and synced: its
    record moves to the baseline, it gets accounts, its routines are rebuilt, every row stays
    (as account 'default'), its schema is exactly the golden one, its state is the golden
    replay's, and syncing goes on where it stopped (a re-run of day5 changes nothing)."""
    with bare_database("etl_012") as (url, conn):
        load_etl_012(url)
        before = every_row(conn)
        assert len(before["agents"]) == 8 and len(before["sync_runs"]) == 15
        assert migrate(conn) == [
            "migrations/001_baseline.sql (adopted from 012_staged_member_lists.sql)",
            "migrations/002_accounts.sql",
            "migrations/003_interrupted.sql",
            "migrations/004_ledger_lookups.sql",
            "migrations/005_membership_key_by_agent.sql",
            "migrations/006_role_pairs_one_index.sql",
            *[f"routines/{name}" for name in ROUTINES],
        ]
        after = every_row(conn)
        assert [row[:2] for row in after.pop("accounts")] == [(1, "default")]
        assert after == {
            **{
                name: sorted([(*row, 1) for row in rows_], key=repr)
                for name, rows_ in before.items()
            },
            "stg_groups_before": [],
            "stg_membership_changes": [],
        }
        assert rows(conn, "SELECT filename FROM etl.schema_migrations ORDER BY 1") == [
            ("001_baseline.sql",),
            ("002_accounts.sql",),
            ("003_interrupted.sql",),
            ("004_ledger_lookups.sql",),
            ("005_membership_key_by_agent.sql",),
            ("006_role_pairs_one_index.sql",),
        ]
        assert describe_schema(conn) == GOLDEN.read_text()
        assert dump_state(conn) == REPLAY.read_text()
        state = dump_state(conn, STATE_TABLES)
        assert sync(url, "day5", data_dir=FIXTURES) == 0
        assert dump_state(conn, STATE_TABLES) == state


def test_a_half_migrated_database_of_an_earlier_etl_is_refused(template_url: str) -> None:
    """A database that an earlier etl left short of 012 is not adopted: etl says which file it
    reached and changes nothing."""
    with bare_database("etl_011") as (url, conn):
        load_etl_012(url)
        rows(
            conn, "DELETE FROM etl.schema_migrations WHERE filename = '012_staged_member_lists.sql'"
        )
        with pytest.raises(
            DatabaseError,
            match=r"^this database was migrated by an earlier etl only up to "
            r"011_faster_membership_changes.sql; run that etl once more to apply its remaining "
            r"migrations, then this one$",
        ):
            migrate(conn)
        assert rows(conn, "SELECT count(*) FROM etl.schema_migrations") == [(11,)]


def test_deleting_a_run_deletes_its_files(conn: db.Connection) -> None:
    """sync_run_files has no foreign key (checking it per file was 11 us a file); a statement
    trigger still deletes a run's files with the run, and only that run's."""
    open_run(conn, "d1", "agents")
    open_run(conn, "d1", "roles")
    rows(
        conn,
        "INSERT INTO etl.sync_run_files VALUES (1, 0, 'a.json', 2, 'aa', 1),"
        " (1, 1, 'b.json', 2, 'bb', 1), (2, 0, 'r.json', 2, 'rr', 1)",
    )
    rows(conn, "DELETE FROM etl.sync_runs WHERE run_id = 1")
    assert rows(conn, "SELECT run_id, file FROM etl.sync_run_files") == [(2, "r.json")]


def test_a_run_that_history_names_cannot_be_deleted(conn: db.Connection) -> None:
    """agent_role_history.run_id has no foreign key (it tripled the time of a first day's
    history); a statement trigger still refuses to delete a run that history names, and
    deletes one it does not name."""
    open_run(conn, "d1", "roles")
    open_run(conn, "d1", "agents")
    rows(
        conn,
        "INSERT INTO etl.agent_role_history (account_id, agent_id, role_id, from_status,"
        " to_status, changed_at, sync_day, run_id)"
        " VALUES (1, 7, 3, NULL, 'assigned', now(), 'd1', 1)",
    )
    conn.commit()
    with pytest.raises(dbapi.IntegrityError) as raised:
        rows(conn, "DELETE FROM etl.sync_runs")
    assert "run 1 cannot be deleted: agent_role_history names it" in str(raised.value)
    assert raised.value.sqlstate == "23503"  # foreign_key_violation, as the key raised
    conn.rollback()
    rows(conn, "DELETE FROM etl.sync_runs WHERE run_id = 2")
    assert rows(conn, "SELECT run_id FROM etl.sync_runs") == [(1,)]


def test_staged_member_lists_hold_no_null(conn: db.Connection) -> None:
    """A null member would name no agent: the staging table refuses it."""
    with pytest.raises(dbapi.IntegrityError, match="stg_group_members_agent_ids_check"):
        rows(conn, "INSERT INTO etl.stg_group_members VALUES (1, ARRAY[5, NULL]::bigint[], 1)")


def test_a_run_is_small_below_twenty_thousand_staged_rows_of_its_entity(
    conn: db.Connection,
) -> None:
    """What picks the apply's plans: the agents, assignment pairs, or memberships (the lengths
    of the member lists) the account staged, fewer than 20,000; the other entities' rows and
    other accounts' rows apart."""
    staged = {
        "agents": "INSERT INTO etl.stg_agents (account_id, agent_id, source_file, record_index) "
        "SELECT $1, n, 'a.json', n FROM generate_series(1, $2) n",
        "roles": "INSERT INTO etl.stg_agent_roles (account_id, agent_id, role_id, from_details, "
        "from_role) SELECT $1, n, 1, true, false FROM generate_series(1, $2) n",
        "groups": "INSERT INTO etl.stg_group_members (account_id, group_id, agent_ids) "
        "SELECT $1, g, ARRAY(SELECT generate_series(1, least(1000, $2 - (g - 1) * 1000))) "
        "FROM generate_series(1, ($2 + 999) / 1000) g",
    }
    small = "SELECT etl.is_small_run_v1($1, $2)"
    for n, entity in enumerate(staged, start=1):
        below, at, none = 10 * n, 10 * n + 1, 10 * n + 2
        for other, insert in staged.items():
            rows(conn, insert, (below, 19_999 if other == entity else 20_000))
        rows(conn, staged[entity], (at, 20_000))
        assert rows(conn, small, (below, entity)) == [(True,)], entity
        assert rows(conn, small, (at, entity)) == [(False,)], entity
        assert rows(conn, small, (none, entity)) == [(True,)], entity
