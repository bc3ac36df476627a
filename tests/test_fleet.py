"""A fleet: `etl sync --accounts-dir DIR` syncs one day of many accounts on worker processes,
each account exactly as its own single-account run would."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dying_worker
import pytest
from conftest import (
    APPLIES_WAITING_FOR_A_LOCK,
    FIXTURES,
    ROOT,
    etl_environment,
    fresh_database,
    last_line,
    rows,
    state_alone,
    sync,
    wait_until,
)
from replay import DUMPED_TABLES, dump_state

from etl import db, fleet_worker, synth
from etl import fleet as fleet_module
from etl.cli import main
from etl.errors import EtlError, UsageError
from etl.log import mask_url

SIZES = {"alpha": 60, "bravo": 25, "charlie": 140, "delta": 40}  # agents per account
KEYS = ",".join(SIZES)


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small synthetic accounts of two days, with bad records, each with its own ids."""
    folder = tmp_path_factory.mktemp("fleet")
    for number, (key, agents) in enumerate(SIZES.items(), 1):
        base = number * synth.FLEET_ID_STRIDE
        world = synth.first_day(synth.account_scale(agents), number, id_base=base)
        synth.generate_world(world, 2, number, folder / key, bad_rate=0.02)
    return folder


def fleet(url: str, folder: Path, day: str, *extra: str) -> int:
    argv = ["sync", "--day", day, "--accounts-dir", str(folder), "--database-url", url]
    return main([*argv, "--synced-at", "2026-01-01T06:00:00Z", "--log-format", "json", *extra])


def test_a_fleet_syncs_every_account_as_its_own_run_would(
    database_url: str,
    fleet_dir: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two days of four accounts on two workers: exit 0, a summary, a results file, and each
    account's tables, errors and ledger exactly those of its single-account runs; no temporary
    file left behind by the workers, which end without the interpreter's teardown."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the workers' temporary folder
    assert fleet(database_url, fleet_dir, "day1", "--workers", "2") == 0
    capsys.readouterr()
    results = tmp_path / "results.json"
    assert fleet(database_url, fleet_dir, "day2", "--workers", "2", "--results", str(results)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("day day2: 4 accounts in ")
    assert out[1:] == ["  succeeded: 4"]
    document = json.loads(results.read_text())
    assert (document["day"], document["succeeded"], document["failed"]) == ("day2", 4, 0)
    assert [a["key"] for a in document["accounts"]] == ["charlie", "alpha", "delta", "bravo"]
    assert all(a["rows"] > 0 and a["status"] == "succeeded" for a in document["accounts"])
    conn = db.connect(database_url)
    try:
        shared = {key: dump_state(conn, DUMPED_TABLES, key) for key in SIZES}
    finally:
        conn.close()
    for key in SIZES:
        assert shared[key] == state_alone(fleet_dir / key, "day1", "day2"), key
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_fleet_range_syncs_each_day_in_turn(
    database_url: str, fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--day day1..day2 with --accounts-dir: the fleet's day1, then its day2, each summarised;
    every account as its own runs of both days."""
    assert fleet(database_url, fleet_dir, "day1..day2", "--workers", "1") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" in ")[0] for line in out if line.startswith("day ")] == [
        "day day1: 4 accounts",
        "day day2: 4 accounts",
    ]
    conn = db.connect(database_url)
    try:
        state = dump_state(conn, DUMPED_TABLES, "bravo")
    finally:
        conn.close()
    assert state == state_alone(fleet_dir / "bravo", "day1", "day2")


def test_a_fleet_range_goes_on_without_an_account_that_failed(
    database_url: str, fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An account failing on day1 of day1..day2 is left out of day2 (it would skip a day); the
    others sync both days: one account's trouble stops nothing of the others'. Exit 1, and
    the last line names how many stopped where, with the command that goes on for them."""
    folder = tmp_path / "accounts"
    shutil.copytree(fleet_dir, folder)
    page = sorted((folder / "bravo" / "sync-day1" / "agents").iterdir())[0]
    page.write_bytes(page.read_bytes()[:40])
    assert fleet(database_url, folder, "day1..day2", "--workers", "1", "--accounts", KEYS) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        "etl: 1 account(s) stopped at day1; once fixed, go on with `etl sync --day day1..day2 "
        f"--accounts-dir {folder} --accounts bravo --workers 1 --synced-at "
        f"2026-01-01T06:00:00+00:00 --database-url {mask_url(database_url)}`"
    )
    out = captured.out.splitlines()
    assert [line.split(" in ")[0] for line in out if line.startswith("day ")] == [
        "day day1: 4 accounts",
        "day day2: 3 accounts",
    ]
    conn = db.connect(database_url)
    try:
        days = rows(
            conn,
            "SELECT a.account_key, array_agg(DISTINCT r.sync_day ORDER BY r.sync_day)"
            " FROM etl.sync_runs r JOIN etl.accounts a USING (account_id) GROUP BY 1 ORDER BY 1",
        )
    finally:
        conn.close()
    assert days == [
        ("alpha", ["day1", "day2"]),
        ("bravo", ["day1"]),
        ("charlie", ["day1", "day2"]),
        ("delta", ["day1", "day2"]),
    ]


def test_a_fleet_range_of_named_accounts_skips_a_day_an_account_lacks(
    database_url: str, fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a range, each named account syncs the days it has, as its own range would: bravo
    without day1 syncs day2, and nothing fails."""
    folder = tmp_path / "accounts"
    shutil.copytree(fleet_dir, folder)
    shutil.rmtree(folder / "bravo" / "sync-day1")
    assert fleet(database_url, folder, "day1..day2", "--accounts", KEYS) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" in ")[0] for line in out if line.startswith("day ")] == [
        "day day1: 3 accounts",
        "day day2: 4 accounts",
    ]


def test_accounts_that_share_ids_are_planned_alone(
    database_url: str, fleet_dir: Path, tmp_path: Path
) -> None:
    """Two accounts with the very same export (every id shared) beside the four of their own
    ids, in one chunk: each of the six ends exactly as its single-account runs, through the
    fixtures' quarantines, held ids and cycles."""
    folder = tmp_path / "accounts"
    shutil.copytree(fleet_dir, folder)
    for key in ("acme", "globex"):
        for day in ("day1", "day2"):
            shutil.copytree(FIXTURES / f"sync-{day}", folder / key / f"sync-{day}")
    for day in ("day1", "day2"):
        assert fleet(database_url, folder, day, "--workers", "1") == 0
    conn = db.connect(database_url)
    try:
        shared = {key: dump_state(conn, DUMPED_TABLES, key) for key in [*SIZES, "acme", "globex"]}
    finally:
        conn.close()
    for key, state in shared.items():
        assert state == state_alone(folder / key, "day1", "day2"), key


def broken_day2(url: str, fleet_dir: Path, tmp_path: Path, account: str, folder: str) -> Path:
    """A copy of the fleet with day1 synced, whose day2 has the account's first page of the
    folder cut to 50 bytes, and delta's agents gone (a mass removal)."""
    accounts = tmp_path / "accounts"
    shutil.copytree(fleet_dir, accounts)
    assert fleet(url, accounts, "day1") == 0
    page = accounts / account / "sync-day2" / folder / "1.json"
    page.write_bytes(page.read_bytes()[:50])
    (accounts / "delta" / "sync-day2" / "agents" / "1.json").write_text("[]")
    return accounts


def test_a_failing_and_a_refused_account_stop_nothing_else(
    database_url: str,
    conn: db.Connection,
    fleet_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """bravo's agents page is cut short (failed) and delta's export lost its agents (refused as
    a mass removal): the summary names both with their reason and the next command, the exit
    status is 1, and alpha and charlie land."""
    folder = broken_day2(database_url, fleet_dir, tmp_path, "bravo", "agents")
    capsys.readouterr()
    assert fleet(database_url, folder, "day2") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "  succeeded: 2",
        "  failed: 1",
        "    bravo: sync-day2/agents/1.json: not valid JSON: input ends early, truncated at byte "
        "50 (end of file)",
        "  refused: 1",
        "    delta: mass removal refused: 40 of 40 present agents would leave the list or turn "
        "inactive (if the export really lost them, re-run with --allow-mass-removal)",
        "next: etl status --account bravo; etl errors --account bravo --day day2",
    ]
    assert rows(
        conn,
        "SELECT a.account_key, r.entity, r.status FROM etl.sync_runs r"
        " JOIN etl.accounts a USING (account_id) WHERE r.sync_day = 'day2'"
        " ORDER BY a.account_key, r.run_id",
    ) == [
        ("alpha", "agents", "succeeded"),
        ("alpha", "roles", "succeeded"),
        ("alpha", "groups", "succeeded"),
        ("bravo", "agents", "failed"),
        ("charlie", "agents", "succeeded"),
        ("charlie", "roles", "succeeded"),
        ("charlie", "groups", "succeeded"),
        ("delta", "agents", "refused"),
    ]


def test_a_fleet_range_fails_a_named_account_with_none_of_its_days(
    database_url: str, fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped key in a range's --accounts fails on the range's first day, saying why, and
    nothing of it is recorded; the named accounts that exist sync both days."""
    assert fleet(database_url, fleet_dir, "day1..day2", "--accounts", f"{KEYS},zulu") == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert [line.split(" in ")[0] for line in out if line.startswith("day ")] == [
        "day day1: 5 accounts",
        "day day2: 4 accounts",
    ]
    assert f"    zulu: {fleet_dir}/zulu: no such folder" in out
    assert captured.err.splitlines()[-1].startswith(
        "etl: 1 account(s) stopped at day1; once fixed, go on with `etl sync --day day1..day2 "
        f"--accounts-dir {fleet_dir} --accounts zulu "
    )
    conn = db.connect(database_url)
    try:
        assert rows(conn, "SELECT count(*) FROM etl.accounts WHERE account_key = 'zulu'") == [(0,)]
    finally:
        conn.close()


@pytest.mark.parametrize("chunk", [16, 1])
def test_a_failed_account_reports_how_far_it_got(
    database_url: str,
    conn: db.Connection,
    fleet_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
) -> None:
    """alpha's groups page of day2 is cut short after its agents and roles applied: the results
    file says so (agents and roles succeeded, groups failed) with the rows they staged, in a
    chunk and synced alone; a refused account shows the entity that was refused."""
    monkeypatch.setattr(fleet_module, "CHUNK_ACCOUNTS", chunk)
    folder = broken_day2(database_url, fleet_dir, tmp_path, "alpha", "admin_groups")
    results = tmp_path / "results.json"
    assert fleet(database_url, folder, "day2", "--results", str(results)) == 1
    ended = {a["key"]: a for a in json.loads(results.read_text())["accounts"]}
    staged = rows(
        conn,
        "SELECT sum(r.rows_staged + coalesce((r.details ->> 'pairs_staged')::bigint, 0))::bigint"
        " FROM etl.sync_runs r JOIN etl.accounts a USING (account_id)"
        " WHERE a.account_key = 'alpha' AND r.sync_day = 'day2' AND r.status = 'succeeded'",
    )
    assert (ended["alpha"]["status"], ended["alpha"]["rows"]) == ("failed", staged[0][0])
    assert ended["alpha"]["entities"] == {
        "agents": "succeeded", "roles": "succeeded", "groups": "failed"
    }  # fmt: skip
    assert (ended["delta"]["status"], ended["delta"]["entities"]) == (
        "refused", {"agents": "refused"}
    )  # fmt: skip
    assert ended["bravo"]["entities"] == dict.fromkeys(("agents", "roles", "groups"), "succeeded")


def test_accounts_can_be_named(
    database_url: str, fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--accounts takes keys or @FILE; a named account without the day's folder fails on its
    own, saying so, and nothing of it is recorded (a mistyped key creates no account, as a
    single-account sync of a missing day records nothing); the others land."""
    keys = tmp_path / "keys.txt"
    keys.write_text("# the small ones\nbravo\ndelta\n")
    assert fleet(database_url, fleet_dir, "day1", "--accounts", f"@{keys}") == 0
    assert "2 accounts" in capsys.readouterr().out
    (fleet_dir / "zulu").mkdir()
    assert fleet(database_url, fleet_dir, "day1", "--accounts", "alpha,zulu,yankee") == 1
    out = capsys.readouterr().out
    assert out.splitlines()[1:] == [
        "  succeeded: 1",
        "  failed: 2",
        f"    yankee: {fleet_dir}/yankee: no such folder",
        f"    zulu: no day day1 in {fleet_dir}/zulu (no folder sync-day1)",
        "next: etl status --account yankee; etl errors --account yankee --day day1",
    ]
    conn = db.connect(database_url)
    try:
        assert rows(conn, "SELECT account_key FROM etl.accounts ORDER BY 1") == [
            ("alpha",), ("bravo",), ("delta",)
        ]  # fmt: skip
    finally:
        conn.close()
    (fleet_dir / "zulu").rmdir()
    assert fleet(database_url, fleet_dir, "day1") == 0
    assert "4 accounts" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--account", "acme"), "--account is for one account: not with --accounts-dir"),
        (("--dry-run",), "--dry-run is for one account: not with --accounts-dir"),
        (("--accounts", "a,b b"), "--accounts: 'b b' is not an account key: 1-64 of A-Za-z0-9._-"),
        (("--accounts", "a,.."), "--accounts: '..' is not an account key: 1-64 of A-Za-z0-9._-"),
        (("--accounts", ""), "--accounts: no account keys"),
        (("--results", "/nonexistent/r.json"), "--results /nonexistent/r.json: no such folder"),
        (("--results", "/tmp"), "--results /tmp: is a folder; name the file to write"),
    ],
)
def test_usage_errors_of_a_fleet(
    database_url: str,
    fleet_dir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    message: str,
) -> None:
    """Options that make no sense for a fleet are usage errors (exit 2) before anything runs."""
    try:
        code = fleet(database_url, fleet_dir, "day1", *extra)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == 2
    assert message in last_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "extra", [("--accounts", "a"), ("--results", "r.json"), ("--workers", "3")]
)
def test_fleet_options_without_an_accounts_dir_are_usage_errors(
    database_url: str, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...]
) -> None:
    """A single-account sync refuses the fleet's options rather than ignoring them."""
    with pytest.raises(SystemExit) as exit_:
        main(["sync", "--day", "day1", "--database-url", database_url, *extra])
    assert exit_.value.code == 2
    assert last_line(capsys.readouterr().err).endswith(
        "--accounts, --results and --workers go with --accounts-dir"
    )


def test_results_that_cannot_be_written_are_said_after_the_summary(
    database_url: str,
    fleet_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk filling up as the results file is written: the summary is still printed, one
    line says the file was not written, and the exit status is 1 though every account
    succeeded."""

    def full(self: Path, text: str) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    results = tmp_path / "results.json"
    assert fleet(database_url, fleet_dir, "day1", "--results", str(results)) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1:] == ["  succeeded: 4"]
    assert last_line(captured.err) == (
        f"etl: error: --results {results}: cannot write: No space left on device"
    )


def test_named_accounts_are_checked_and_taken_once(fleet_dir: Path) -> None:
    """As the Prefect day flow passes them: a key named twice is one account (two workers
    must never hold it at once), and a key that is none is a usage error."""
    assert fleet_module.find_accounts(fleet_dir, "day1", ["alpha", "bravo", "alpha"]) == [
        "alpha", "bravo"
    ]  # fmt: skip
    with pytest.raises(UsageError, match="--accounts: 'a b' is not an account key"):
        fleet_module.find_accounts(fleet_dir, "day1", ["alpha", "a b"])


def test_a_fleet_for_a_person_logs_nothing_but_the_summary(
    database_url: str, fleet_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """With console logs (a person), the workers keep quiet: stdout has the summary, and stderr
    only the parent's lines, one per account (a live line instead, on a terminal)."""
    argv = ["sync", "--day", "day1", "--accounts-dir", str(fleet_dir), "--database-url"]
    assert main([*argv, database_url, "--log-format", "console", "--workers", "2"]) == 0
    out, err = capfd.readouterr()  # the workers' stderr too
    assert out.splitlines()[1:] == ["  succeeded: 4"]
    assert "day_synced" not in err
    assert err.count("account_synced") == 4


def test_accounts_weigh_what_their_last_succeeded_runs_staged(
    database_url: str, tmp_path: Path
) -> None:
    """A fleet takes its accounts largest first: an account weighs the rows its last succeeded
    run of each entity staged, summed (earlier runs and runs that did not apply do not count),
    and an account never synced the bytes of the day's input."""
    conn = db.connect(database_url)
    try:
        big, small = db.ensure_account(conn, "big"), db.ensure_account(conn, "small")
        runs = [
            (big, "day1", "agents", "succeeded", 100),
            (big, "day2", "agents", "succeeded", 300),
            (big, "day3", "agents", "failed", 5000),
            (big, "day1", "roles", "succeeded", 40),
            (big, "day1", "groups", "succeeded", 7),
            (small, "day1", "agents", "succeeded", 50),
            (small, "day2", "groups", "refused", 9000),
        ]
        for account_id, day, entity, status, staged in runs:
            rows(
                conn,
                "INSERT INTO etl.sync_runs (account_id, sync_day, entity, status, synced_at,"
                " rows_staged) VALUES ($1, $2, $3, $4, now(), $5)",
                (account_id, day, entity, status, staged),
            )
        page = tmp_path / "new" / "sync-day4" / "agents" / "1.json"
        page.parent.mkdir(parents=True)
        page.write_bytes(b" " * (20 * fleet_module.BYTES_PER_ROW))
        jobs = fleet_module.weigh(conn, tmp_path, "day4", ["small", "new", "big"])
        # A long history: each entity's last succeeded run is still one probe of an index.
        rows(
            conn,
            "INSERT INTO etl.sync_runs (account_id, sync_day, entity, status, synced_at,"
            " rows_staged) SELECT $1, 'a' || d, e, 'succeeded', now(), 1"
            " FROM generate_series(1, 3000) d, unnest(ARRAY['agents', 'roles', 'groups']) e",
            (small,),
        )
        rows(conn, "ANALYZE etl.sync_runs")
        plan = "\n".join(
            line
            for (line,) in rows(conn, "EXPLAIN " + db.queries()["account_weights"], (["small"],))
        )
    finally:
        conn.close()
    assert [(job.key, job.weight) for job in jobs] == [("big", 347), ("small", 50), ("new", 20)]
    assert "Index Scan Backward using sync_runs_succeeded" in plan, plan


def test_an_account_never_synced_weighs_about_its_input_bytes(tmp_path: Path) -> None:
    """An account never synced weighs about the bytes of its day's input: a folder's count of
    files times the mean size of 32 of them spread over the folder in name order. Of 48 files
    of 1 to 48 bytes, two of every three are sized (1, 2, 4, 5, ..., 46, 47: mean 24, where all
    48 have a mean of 24.5); a folder of fewer files, and what is no file, as they are."""
    day = tmp_path / "new" / "sync-day1"
    details, agents = day / "agent_details", day / "agents"
    details.mkdir(parents=True)
    agents.mkdir()
    for size in range(1, 49):
        (details / f"{size:02}.json").write_bytes(b" " * size)
    (agents / "1.json").write_bytes(b" " * 100)
    (agents / "2.json").write_bytes(b" " * 50)
    (agents / "folder.json").mkdir()
    assert fleet_module.input_bytes(day) == 24 * 48 + 150
    assert fleet_module.input_bytes(tmp_path / "new" / "sync-day2") == 0


# The summary's lines after its first when alpha killed its worker and the others landed.
ALPHA_DIED = [
    "  succeeded: 3",
    "  failed: 1",
    "    alpha: the worker process syncing it died (exit code 3)",
    "next: etl status --account alpha; etl errors --account alpha --day day1",
]


def test_a_worker_that_dies_fails_only_the_account_it_held(
    database_url: str,
    conn: db.Connection,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker killed in the apply of alpha's agents (each account a task of its own, one
    worker): alpha is synced again alone, once (a worker may die of something else), kills
    that worker too and fails, named in the summary with the exit code, its last run left
    'running'; new workers take the accounts left, which land. alpha's next run marks the
    dead one abandoned and lands."""
    monkeypatch.setattr(fleet_module, "worker_main", dying_worker.worker_main)
    monkeypatch.setattr(fleet_module, "CHUNK_ACCOUNTS", 1)
    assert fleet(database_url, fleet_dir, "day1", "--workers", "1") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ALPHA_DIED
    runs = (
        "SELECT a.account_key, r.entity, r.status FROM etl.sync_runs r"
        " JOIN etl.accounts a USING (account_id) ORDER BY a.account_key, r.run_id"
    )
    landed = [(key, entity, "succeeded") for key in ("bravo", "charlie", "delta")
              for entity in ("agents", "roles", "groups")]  # fmt: skip
    assert rows(conn, runs) == [
        ("alpha", "agents", "abandoned"),
        ("alpha", "agents", "running"),
        *landed,
    ]
    monkeypatch.undo()
    assert fleet(database_url, fleet_dir, "day1", "--accounts", "alpha") == 0
    assert rows(conn, runs) == [
        ("alpha", "agents", "abandoned"),
        ("alpha", "agents", "abandoned"),
        ("alpha", "agents", "succeeded"),
        ("alpha", "roles", "succeeded"),
        ("alpha", "groups", "succeeded"),
        *landed,
    ]


def test_a_worker_that_dies_in_a_chunk_fails_only_the_account_that_killed_it(
    database_url: str,
    conn: db.Connection,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The four accounts in one chunk, and the worker killed in the apply of alpha's agents:
    which member killed it is not known, so each account of the chunk is synced again alone;
    alpha kills that worker too and fails alone, and the other three land, their agents,
    roles, groups and memberships exactly as their single-account runs' (their ledgers also
    hold the runs of the chunk the crash cut short, as after any re-run)."""
    monkeypatch.setattr(fleet_module, "worker_main", dying_worker.worker_main)
    assert fleet(database_url, fleet_dir, "day1", "--workers", "1") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ALPHA_DIED
    entity_tables = ("agents", "roles", "agent_role_mapping", "groups", "group_membership")
    for key in ("bravo", "charlie", "delta"):
        with fresh_database() as url:
            assert (
                sync(url, "day1", "--synced-at", "2026-01-01T06:00:00Z", data_dir=fleet_dir / key)
                == 0
            )
            alone = db.connect(url)
            try:
                expected = dump_state(alone, entity_tables)
            finally:
                alone.close()
        assert dump_state(conn, entity_tables, key) == expected, key
    last = rows(
        conn,
        "SELECT r.entity, r.status FROM etl.sync_runs r JOIN etl.accounts a USING (account_id)"
        " WHERE a.account_key = 'alpha' ORDER BY r.run_id DESC LIMIT 1",
    )
    assert last == [("agents", "running")]


def test_accounts_that_kill_every_worker_leave_none_of_the_others_unsynced(
    database_url: str,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One worker, each account a task of its own, and three accounts that each kill the
    worker syncing them: every dead worker is replaced while accounts are left, so the fourth
    account lands (a fixed number of replacements left it unsynced)."""
    monkeypatch.setattr(fleet_module, "worker_main", dying_worker.worker_main)
    monkeypatch.setattr(fleet_module, "CHUNK_ACCOUNTS", 1)
    monkeypatch.setenv("DYING_WORKER_ACCOUNTS", "alpha,bravo,charlie")
    assert fleet(database_url, fleet_dir, "day1", "--workers", "1") == 1
    died = "the worker process syncing it died (exit code 3)"
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  succeeded: 1",
        "  failed: 3",
        f"    alpha: {died}",
        f"    bravo: {died}",
        f"    charlie: {died}",
        "next: etl status --account alpha; etl errors --account alpha --day day1",
    ]


def test_a_worker_that_dies_as_it_takes_a_task_is_known_to_have_held_it(
    database_url: str,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker killed the moment it takes alpha's task, before it says anything: the parent
    handed that task to that worker, so alpha fails (nothing waits for it forever) and the
    others land."""
    monkeypatch.setattr(fleet_module, "worker_main", dying_worker.worker_main)
    monkeypatch.setattr(fleet_module, "CHUNK_ACCOUNTS", 1)
    monkeypatch.setenv("DYING_WORKER_AT", "take")
    assert fleet(database_url, fleet_dir, "day1", "--workers", "2") == 1
    assert capsys.readouterr().out.splitlines()[1:] == ALPHA_DIED


def test_the_task_of_a_worker_that_cannot_connect_goes_to_one_that_can(
    database_url: str,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every worker but the first cannot connect (too many connections, say): what each was
    handed goes back untried, and the first worker syncs every account."""
    monkeypatch.setattr(fleet_module, "worker_main", dying_worker.worker_main)
    monkeypatch.setattr(fleet_module, "CHUNK_ACCOUNTS", 1)
    monkeypatch.setenv("DYING_WORKER_ACCOUNTS", "none")
    monkeypatch.setenv("DYING_WORKER_AT", "connect")
    assert fleet(database_url, fleet_dir, "day1", "--workers", "2") == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["  succeeded: 4"]


def test_a_worker_out_of_tasks_waits_for_what_another_gives_back(
    database_url: str,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The second worker says it cannot connect only once the first has synced every other
    account: the first, out of tasks, still waits and syncs the one given back (when it was
    told to stop as soon as no task was left, that account failed: no worker was left)."""
    monkeypatch.setattr(fleet_module, "worker_main", dying_worker.worker_main)
    monkeypatch.setattr(fleet_module, "CHUNK_ACCOUNTS", 1)
    monkeypatch.setenv("DYING_WORKER_ACCOUNTS", "none")
    monkeypatch.setenv("DYING_WORKER_AT", "connect-late")
    assert fleet(database_url, fleet_dir, "day1", "--workers", "2") == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["  succeeded: 4"]


def test_accounts_no_worker_could_sync_say_why(
    database_url: str,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No worker can connect: after as many replacements as workers asked for, every account
    fails naming the reason, and nothing of them is synced."""
    monkeypatch.setattr(fleet_module, "worker_main", dying_worker.worker_main)
    monkeypatch.setenv("DYING_WORKER_AT", "connect-all")
    assert fleet(database_url, fleet_dir, "day1", "--workers", "2") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["  succeeded: 0", "  failed: 4"]
    reason = "    alpha: no worker process was left to sync it (a worker could not connect: "
    assert out[3].startswith(reason), out[3]


def test_a_worker_that_cannot_connect_says_so_and_exits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No traceback: one error event naming the worker, the same reason sent to the parent
    (which a person at a terminal sees in the summary, the workers' logs being quiet there),
    the password masked, exit status 2."""
    url = "postgresql://etl:secretpw@127.0.0.1:1/etl"
    settings = fleet_worker.FleetSettings(url, "day1", ("agents",), None, 1.0, "json", False)
    results: multiprocessing.Queue[tuple[str, int, str]] = multiprocessing.Queue()
    with pytest.raises(SystemExit) as exit_:
        fleet_worker.worker_main(0, settings, None, results)  # type: ignore[arg-type]
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "secretpw" not in err and "Traceback" not in err
    event = json.loads(last_line(err))
    assert (event["event"], event["level"], event["worker"]) == ("worker_not_connected", "error", 0)
    kind, number, reason = results.get(timeout=5)
    assert (kind, number) == ("gone", 0)
    assert reason.startswith("a worker could not connect: ") and "127.0.0.1" in reason
    assert "secretpw" not in reason


def test_the_workers_start_while_the_accounts_are_weighed(
    database_url: str,
    fleet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The workers start before the command weighs the accounts, so that their imports and
    connections overlap its own; should weighing fail, they end with it and the command says
    why, without a traceback."""
    real_weigh = fleet_module.weigh
    started: list[int] = []

    def weigh(*args: Any) -> list[fleet_worker.Job]:
        started.append(len(multiprocessing.active_children()))
        return real_weigh(*args)

    monkeypatch.setattr(fleet_module, "weigh", weigh)
    assert fleet(database_url, fleet_dir, "day1", "--workers", "2") == 0
    assert started == [2]
    assert capsys.readouterr().out.splitlines()[1:] == ["  succeeded: 4"]

    def weigh_fails(*args: Any) -> list[fleet_worker.Job]:
        raise EtlError("the accounts could not be weighed")

    monkeypatch.setattr(fleet_module, "weigh", weigh_fails)
    assert fleet(database_url, fleet_dir, "day2", "--workers", "2") == 1
    assert multiprocessing.active_children() == []
    err = capsys.readouterr().err
    assert last_line(err) == "etl: error: the accounts could not be weighed"
    assert "Traceback" not in err


def test_a_worker_that_cannot_import_etl_says_so_and_exits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken install: the worker gives up as one that cannot connect does (its task goes
    back, untried, and deaths holding nothing are replaced a bounded number of times), not
    with a traceback and a death that would cost its accounts their retry."""

    def broken() -> None:
        raise ImportError("No module named 'polars'")

    monkeypatch.setattr(fleet_worker, "import_sync", broken)
    settings = fleet_worker.FleetSettings(
        "postgresql://x", "day1", ("agents",), None, 1.0, "json", False
    )
    results: multiprocessing.Queue[tuple[str, int, str]] = multiprocessing.Queue()
    with pytest.raises(SystemExit) as exit_:
        fleet_worker.worker_main(3, settings, None, results)  # type: ignore[arg-type]
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
    reason = "a worker could not start: ImportError: No module named 'polars'"
    assert results.get(timeout=5) == ("gone", 3, reason)


# Client sessions of the test's database besides the asking one.
SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


@contextlib.contextmanager
def fleet_waiting_in_an_apply(
    url: str, folder: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], db.Connection, db.Connection]]:
    """The fleet command of day1 on two workers, as its own process (its output piped,
    temporary files under ``tmp_path``/tmp), once a worker's apply waits for the groups table,
    which another session holds until it rolls back; (the process, that session, a session
    to look with). The process is killed on the way out if still running."""
    conn, blocker = db.connect(url), db.connect(url)
    (tmp_path / "tmp").mkdir()
    argv = ["sync", "--day", "day1", "--accounts-dir", str(folder), "--workers", "2"]
    argv += ["--database-url", url, "--log-format", "json"]
    waiting = APPLIES_WAITING_FOR_A_LOCK
    try:
        with blocker.cursor() as cur:  # held until the blocker rolls back
            cur.execute("LOCK TABLE etl.groups IN ACCESS EXCLUSIVE MODE")
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", *argv],
            cwd=ROOT,
            env=etl_environment(TMPDIR=str(tmp_path / "tmp")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: rows(conn, waiting) != [(0,)], "an apply waiting for its lock")
            yield process, blocker, conn
        finally:
            if process.poll() is None:
                process.kill()
            blocker.rollback()  # a worker still waiting goes on: the pipes close as it ends
            process.communicate(timeout=60)
    finally:
        blocker.close()
        conn.close()


def test_sigterm_to_the_fleet_command_ends_every_run_under_way_as_interrupted(
    database_url: str, fleet_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM to the command alone (a scheduler cancelling it, ``kill``) while a worker's apply
    waits in the server: the command passes it on to its workers, which end their runs as
    Ctrl-C would (the statement cancelled, the runs 'interrupted', their temporary files
    gone); the command says how far it got and exits 130, its workers gone with it."""
    with fleet_waiting_in_an_apply(database_url, fleet_dir, tmp_path) as (process, blocker, conn):
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        blocker.rollback()
        assert process.returncode == 130, err
        assert "Traceback" not in err
        assert err.splitlines()[-1] == "interrupted: 4 of 4 accounts ended"
        assert out.splitlines()[1:] == [
            "  succeeded: 0",
            "  failed: 4",
            *(f"    {key}: interrupted" for key in sorted(SIZES)),
            "next: etl status --account alpha; etl errors --account alpha --day day1",
        ]
        ledger = "SELECT entity, status, message, count(*) FROM etl.sync_runs GROUP BY 1, 2, 3"
        stopped = "stopped by SIGTERM; nothing of it was applied"
        assert rows(conn, ledger) == [("agents", "interrupted", stopped, 4)]
        assert rows(conn, SESSIONS) == [(1,)]  # the blocker's: no worker's session is left
        assert list((tmp_path / "tmp").iterdir()) == []


def test_the_workers_of_a_killed_fleet_command_end(
    database_url: str, fleet_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL to the command (the OOM killer, say) while one worker's apply waits in the server
    and the other waits for a task: neither is left behind for good. The idle one ends as it
    finds its parent gone; the busy one finishes its task, then ends too."""
    with fleet_waiting_in_an_apply(database_url, fleet_dir, tmp_path) as (process, blocker, conn):
        wait_until(lambda: rows(conn, SESSIONS) == [(3,)], "both workers connected")
        process.kill()
        process.wait(timeout=10)
        wait_until(lambda: rows(conn, SESSIONS) == [(2,)], "the idle worker gone")
        blocker.rollback()
        wait_until(lambda: rows(conn, SESSIONS) == [(1,)], "the busy worker gone")
        by_status = "SELECT status, count(*) FROM etl.sync_runs GROUP BY 1"
        assert rows(conn, by_status) == [("succeeded", 12)]
