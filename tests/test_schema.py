"""Migrations: the schema they build, their ledger, and the refusal of edited files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import rows

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
    assert recorded == [("001_schema.sql", 64), ("002_apply_v1.sql", 64), ("003_groups.sql", 64)]


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
