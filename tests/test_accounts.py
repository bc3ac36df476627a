"""Accounts (SEMANTICS section 10): many accounts in one database, each as if it were alone."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import A1, FIXTURES, fresh_database, last_line, rows, sync, write_day
from replay import DUMPED_TABLES, dump_state
from test_faults import paused_run

from etl import db
from etl.cli import main

# Every table that holds an account's rows: final, errors, ledger, staging and helpers.
ACCOUNT_TABLES = """
SELECT c.relname FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'account_id'
 WHERE c.relnamespace = 'etl'::regnamespace AND c.relkind = 'r' AND c.relname <> 'accounts'
 ORDER BY 1"""


def account_rows(conn: db.Connection, account: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the account owns, in every table, in a fixed order (wall clocks included)."""
    (account_id,) = rows(
        conn, "SELECT account_id FROM etl.accounts WHERE account_key = $1", (account,)
    )[0]
    return {
        name: sorted(
            rows(conn, f'SELECT * FROM etl."{name}" WHERE account_id = $1', (account_id,)),  # noqa: S608
            key=repr,
        )
        for (name,) in rows(conn, ACCOUNT_TABLES)
    }


def alone(days: list[tuple[str, tuple[str, ...]]], data_dir: Path) -> str:
    """The state a database holding only this account reaches after ``days`` (day, options)."""
    with fresh_database() as url:
        for day, extra in days:
            sync(url, day, *extra, data_dir=data_dir)
        conn = db.connect(url)
        try:
            return dump_state(conn)
        finally:
            conn.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The fixture days, and day6: an export that lost all agents but one (a mass removal)."""
    for day in FIXTURES.iterdir():
        shutil.copytree(day, tmp_path / day.name)
    day5 = tmp_path / "sync-day5"
    write_day(tmp_path, "day6", agents={"1.json": [{"id": A1}]})
    for folder in ("agent_details", "roles", "admin_groups"):
        shutil.copytree(day5 / folder, tmp_path / "sync-day6" / folder)
    return tmp_path


ACME = [("day1", ()), ("day2", ()), ("day3", ()), ("day6", ()), ("day4", ()), ("day5", ())]
GLOBEX = [
    ("day1", ()),
    ("day3", ()),
    ("day2", ()),  # refused: day3 is applied
    ("day2", ("--force",)),
    ("day5", ()),
    ("day5", ()),  # a re-run
]


def test_accounts_with_the_same_ids_stay_apart(database_url: str, data_dir: Path) -> None:
    """Two accounts whose exports share every id, synced in turn into one database through
    churn, quarantine, cycles, a mass removal refused (acme day6), a day refused for its order
    and then forced (globex day2): each account ends exactly as if it were alone, ledger, error
    rows and sync times included."""
    codes = []
    for (a_day, a_extra), (g_day, g_extra) in zip(ACME, GLOBEX, strict=True):
        codes.append(sync(database_url, a_day, "--account", "acme", *a_extra, data_dir=data_dir))
        codes.append(sync(database_url, g_day, "--account", "globex", *g_extra, data_dir=data_dir))
    assert codes == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    conn = db.connect(database_url)
    try:
        shared = {key: dump_state(conn, DUMPED_TABLES, key) for key in ("acme", "globex")}
    finally:
        conn.close()
    assert shared["acme"] == alone(ACME, data_dir)
    assert shared["globex"] == alone(GLOBEX, data_dir)
    assert shared["acme"] != shared["globex"]


def test_a_failure_or_refusal_changes_nothing_of_another_account(
    database_url: str, conn: db.Connection, data_dir: Path
) -> None:
    """acme's refused mass removal, its failing truncated page and its refused old day touch
    nothing of globex: every row globex owns, staging included, stays as it was."""
    for account in ("acme", "globex"):
        assert sync(database_url, "day1", "--account", account, data_dir=data_dir) == 0
    before = account_rows(conn, "globex")
    assert sync(database_url, "day6", "--account", "acme", data_dir=data_dir) == 1
    truncated = data_dir / "sync-day7" / "admin_groups"
    shutil.copytree(data_dir / "sync-day5", data_dir / "sync-day7")
    (truncated / "1.json").write_bytes((truncated / "1.json").read_bytes()[:40])
    assert sync(database_url, "day7", "--account", "acme", data_dir=data_dir) == 1
    old_day = ("--account", "acme", "--synced-at", "2026-01-01T00:00:00Z")
    shutil.copytree(data_dir / "sync-day1", data_dir / "sync-day0")  # an export of an older day
    assert sync(database_url, "day0", *old_day, data_dir=data_dir) == 1
    assert account_rows(conn, "globex") == before
    assert rows(
        conn,
        "SELECT a.account_key, r.sync_day, r.entity, r.status FROM etl.sync_runs r"
        " JOIN etl.accounts a USING (account_id) WHERE r.status <> 'succeeded' ORDER BY r.run_id",
    ) == [
        ("acme", "day6", "agents", "refused"),
        ("acme", "day6", "roles", "failed"),
        ("acme", "day7", "groups", "failed"),
        ("acme", "day0", "agents", "refused"),
    ]


def test_two_accounts_sync_at_the_same_time(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """While acme's run holds its lock with its groups apply open, globex syncs a whole day:
    runs of two accounts overlap, and globex's start marks nothing of acme's abandoned. Then
    acme finishes too."""
    gate = tmp_path / "gate"
    with paused_run(database_url, "day1", "apply:groups", gate, "--account", "acme") as acme:
        assert sync(database_url, "day1", "--account", "globex", "--lock-timeout", "0") == 0
        assert rows(
            conn,
            "SELECT a.account_key, r.entity, r.status FROM etl.sync_runs r"
            " JOIN etl.accounts a USING (account_id) ORDER BY r.run_id",
        ) == [
            ("acme", "agents", "succeeded"),
            ("acme", "roles", "succeeded"),
            ("acme", "groups", "running"),
            ("globex", "agents", "succeeded"),
            ("globex", "roles", "succeeded"),
            ("globex", "groups", "succeeded"),
        ]
        gate.unlink()
        assert acme.wait(timeout=60) == 0
    assert rows(conn, "SELECT count(*) FROM etl.sync_runs WHERE status = 'succeeded'") == [(6,)]


def test_staging_keeps_each_accounts_last_run(database_url: str, conn: db.Connection) -> None:
    """Each account's staging shows its own last run: acme's day2 beside globex's day1."""
    assert sync(database_url, "day1", "--account", "globex") == 0
    assert sync(database_url, "day1", "--account", "acme") == 0
    assert sync(database_url, "day2", "--account", "acme") == 0
    assert rows(
        conn,
        "SELECT a.account_key, count(*), min(s.source_file) FROM etl.stg_groups s"
        " JOIN etl.accounts a USING (account_id) GROUP BY 1 ORDER BY 1",
    ) == [
        ("acme", 5, "sync-day2/admin_groups/1.json"),
        ("globex", 5, "sync-day1/admin_groups/1.json"),
    ]


def test_every_key_leads_with_the_account(conn: db.Connection) -> None:
    """The rule of a database distributed by account (Citus): every primary key, unique
    constraint, foreign key and index of schema etl leads with account_id, but those of the
    list of accounts itself and of the migration records."""
    keys = rows(
        conn,
        """
        SELECT c.relname, i.relname, a.attname
          FROM pg_index x
          JOIN pg_class c ON c.oid = x.indrelid
          JOIN pg_class i ON i.oid = x.indexrelid
          LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = x.indkey[0]
         WHERE c.relnamespace = 'etl'::regnamespace
        UNION ALL
        SELECT c.relname, k.conname, a.attname
          FROM pg_constraint k
          JOIN pg_class c ON c.oid = k.conrelid
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.conkey[1]
         WHERE c.relnamespace = 'etl'::regnamespace AND k.contype IN ('p', 'u', 'f')
         ORDER BY 1, 2""",
    )
    exempt = {"accounts", "schema_migrations", "schema_routines"}
    assert len([k for k in keys if k[0] not in exempt]) == 50  # the query sees them all
    assert [k for k in keys if k[0] not in exempt and k[2] != "account_id"] == []


def test_an_apply_runs_no_ddl_and_no_truncate(database_url: str, conn: db.Connection) -> None:
    """A distributed database allows no DDL and no TRUNCATE inside an apply: none runs while
    every fixture day syncs (an event trigger and TRUNCATE triggers of the test listen)."""
    day0 = ("day1", "--account", "other")
    assert sync(database_url, *day0) == 0  # the first run migrates; the listening starts after
    rows(conn, "CREATE TABLE public.heard (what text)")
    rows(
        conn,
        """CREATE FUNCTION public.hear_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.heard VALUES (tg_tag); END $$""",
    )
    rows(
        conn,
        "CREATE EVENT TRIGGER hear_ddl ON ddl_command_start EXECUTE FUNCTION public.hear_ddl()",
    )
    rows(
        conn,
        """CREATE FUNCTION public.hear_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.heard VALUES ('TRUNCATE ' || tg_table_name);
            RETURN NULL;
        END $$""",
    )
    for (table,) in rows(conn, ACCOUNT_TABLES):
        rows(
            conn,
            f"CREATE TRIGGER hear_truncate BEFORE TRUNCATE ON etl.{table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION public.hear_truncate()",
        )
    rows(conn, "DELETE FROM public.heard")  # the test's own CREATE TRIGGERs
    for day in ("day1", "day2", "day3", "day4", "day5"):
        assert sync(database_url, day) == 0
    assert rows(conn, "SELECT what FROM public.heard") == []


def view(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--database-url", url])
    out, err = capsys.readouterr()
    return code, out, err


def test_views_show_one_account(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`etl status --account acme` shows acme's runs only; an account the database does not
    have is an error (exit 1), as a typo would be."""
    assert sync(database_url, "day1", "--account", "acme") == 0
    assert sync(database_url, "day1", "--account", "globex") == 0
    assert sync(database_url, "day2", "--account", "globex") == 0
    code, out, _ = view(capsys, database_url, "status", "--account", "acme")
    assert code == 0
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["day", "entity", "run"],
        ["day1", "agents", "1"],
        ["day1", "roles", "2"],
        ["day1", "groups", "3"],
    ]
    code, _, err = view(capsys, database_url, "tree", "--account", "initech")
    assert (code, last_line(err)) == (
        1,
        "etl: error: no account initech in this database yet: sync a day of it first",
    )
    with pytest.raises(SystemExit) as usage:
        main(["errors", "--day", "day1", "--account", "bad key", "--database-url", database_url])
    assert usage.value.code == 2
    assert last_line(capsys.readouterr().err) == (
        "etl errors: error: argument --account: 'bad key' is not an account key: 1-64 "
        "characters of A-Za-z0-9._-"
    )


def test_accounts_lists_each_account(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """`etl accounts`: every account with its days applied, its last day in day order, and
    its newest run with status."""
    assert sync(database_url, "day1", "--account", "globex") == 0
    assert sync(database_url, "day2", "--account", "globex") == 0
    assert sync(database_url, "day1", "--account", "acme", "--entity", "agents") == 0
    rows(conn, "UPDATE etl.sync_runs SET finished_at = '2026-01-09T10:00:00Z'")
    code, out, _ = view(capsys, database_url, "accounts")
    assert code == 0
    assert out.splitlines() == [
        "account  id  days  last day  newest run           status     finished at",
        "acme      2     1  day1      day1 agents (run 7)  succeeded  2026-01-09 10:00:00Z",
        "globex    1     2  day2      day2 groups (run 6)  succeeded  2026-01-09 10:00:00Z",
    ]


def test_deleting_an_account_leaves_the_others_as_they_were(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """`etl accounts delete acme --yes` removes every row acme owns, in every table, and the
    account; globex's rows stay byte for byte. Without --yes and no terminal to ask on, nothing
    is deleted (exit 2); an unknown account is an error (exit 1)."""
    for account in ("acme", "globex"):
        assert sync(database_url, "day1", "--account", account) == 0
        assert sync(database_url, "day3", "--account", account) == 0
    globex = account_rows(conn, "globex")
    owned = sum(len(table) for table in account_rows(conn, "acme").values())
    code, _, err = view(capsys, database_url, "accounts", "delete", "acme")
    assert (code, last_line(err)) == (
        2,
        "etl: error: not deleting account acme: confirm with --yes (no terminal to ask)",
    )
    code, out, _ = view(capsys, database_url, "accounts", "delete", "acme", "--yes")
    assert (code, out) == (0, f"deleted account acme: {owned} rows\n")
    assert owned > 150
    assert account_rows(conn, "globex") == globex
    assert rows(conn, "SELECT account_key FROM etl.accounts") == [("globex",)]
    leftovers = [
        (name, n)
        for (name,) in rows(conn, ACCOUNT_TABLES)
        for ((n,),) in [rows(conn, f'SELECT count(*) FROM etl."{name}" WHERE account_id = 1')]  # noqa: S608
        if n
    ]
    assert leftovers == []
    code, _, err = view(capsys, database_url, "accounts", "delete", "acme", "--yes")
    assert (code, last_line(err)) == (1, "etl: error: no account acme in this database")
