"""Security: SQL in data stays data, passwords stay out of output, and etl needs no superuser."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import admin_execute, last_line, rows, server_url, sync, with_database, write_day

from etl import db
from etl.cli import main
from etl.log import mask_url

HOSTILE = "'; DROP TABLE etl.groups; --"


def test_sql_in_names_and_descriptions_is_stored_verbatim(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """Names and descriptions that look like SQL, placeholders or format strings are stored as
    given, and every table is still there."""
    texts = [HOSTILE, "$1", "%s %(x)s {0}", "Robert'); DROP TABLE etl.agents;--", '"; \\x00 \\\\']
    write_day(
        tmp_path,
        "day1",
        agents={"1.json": [{"id": n, "contact": {"name": t}} for n, t in enumerate(texts, 1)]},
        roles={"1.json": [{"id": n, "name": t, "description": t} for n, t in enumerate(texts, 1)]},
        agent_details={"1.json": {"id": 1, "role_ids": [1]}},
        admin_groups={
            "1.json": [{"id": n, "name": t, "description": t} for n, t in enumerate(texts, 1)]
        },
    )
    assert sync(database_url, "day1", data_dir=tmp_path) == 0
    assert rows(conn, "SELECT name FROM etl.agents ORDER BY agent_id") == [(t,) for t in texts]
    assert rows(conn, "SELECT name, description FROM etl.roles ORDER BY role_id") == [
        (t, t) for t in texts
    ]
    assert rows(conn, "SELECT name, description FROM etl.groups ORDER BY group_id") == [
        (t, t) for t in texts
    ]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql://u@h/d?sslmode=require&password=s3cret",
            "postgresql://u@h/d?sslmode=require&password=***",
        ),
        ("postgresql://u:p@[::1]:5432/d", "postgresql://u:***@[::1]:5432/d"),
        ("postgresql://:p%40ss@h/d", "postgresql://:***@h/d"),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
    ],
)
def test_mask_url_masks_every_form_of_password(url: str, masked: str) -> None:
    """Passwords in the user part, as a URL parameter or in a key=value string are masked."""
    assert mask_url(url) == masked


def test_password_is_not_in_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--help never shows ETL_DATABASE_URL's value."""
    monkeypatch.setenv("ETL_DATABASE_URL", "postgresql://etl:s3cret-pw@db.example/etl")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "s3cret-pw" not in capsys.readouterr().out


def test_password_parameter_never_reaches_the_logs(capsys: pytest.CaptureFixture[str]) -> None:
    """A password given as a URL parameter is masked in the log lines and the error too."""
    url = "postgresql://etl@127.0.0.1:1/etl?password=s3cret-pw&connect_timeout=2"
    assert main(["--day", "day1", "--database-url", url, "--log-format", "json"]) == 1
    err = capsys.readouterr().err
    assert "s3cret-pw" not in err
    assert last_line(err).startswith(
        "etl: error: cannot connect to postgresql://etl@127.0.0.1:1/etl?password=***&"
    )


@pytest.fixture
def owner_url(template_url: str) -> Iterator[str]:
    """A fresh database, without etl's schema applied, whose schema etl a DBA made for a role
    that is not a superuser and owns nothing else; the URL logs in as that role."""
    role, name = f"etl_owner_{os.getpid()}", f"etl_owner_db_{os.getpid()}"
    admin_execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin_execute(f'DROP ROLE IF EXISTS "{role}"')
    admin_execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    admin_conn = db.connect(with_database(server_url(), name))
    try:
        rows(admin_conn, f'CREATE SCHEMA etl AUTHORIZATION "{role}"')
        rows(admin_conn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    finally:
        admin_conn.close()
    parts = urlsplit(with_database(server_url(), name))
    host = parts.netloc.rpartition("@")[2]
    try:
        yield parts._replace(netloc=f"{role}@{host}").geturl()
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_execute(f'DROP ROLE IF EXISTS "{role}"')


def test_etl_runs_as_a_role_that_owns_only_its_schema(owner_url: str) -> None:
    """docs/design.md's grants suffice: a non-superuser owning schema etl migrates and syncs every
    fixture day; everything etl made is in that schema and owned by it, and nothing outside."""
    for day in ("day1", "day2", "day3"):
        assert sync(owner_url, day) == 0, day
    conn = db.connect(owner_url)
    try:
        assert rows(
            conn, "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ) == [(False, False)]
        assert rows(
            conn,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
            "   AND n.nspname <> 'etl' AND n.nspname NOT LIKE 'pg_toast%'"
            "   AND n.nspname NOT LIKE 'pg_temp%'",
        ) == [(0,)]
        assert rows(
            conn,
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'etl'::regnamespace"
            " AND relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        ) == [(0,)]
        assert rows(
            conn,
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'etl'::regnamespace"
            " AND proowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        ) == [(0,)]
        assert rows(conn, "SELECT count(*) FROM etl.groups") == [(23,)]
    finally:
        conn.close()
