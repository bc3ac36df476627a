"""The benchmark runs end to end at scale S, alone and beside another revision, and reports
what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bare_database, rows

from bench.common import FINAL_TABLES, account_state, etl_env, fetch, load_floor
from bench.compare import checkout, compare_scale, git
from bench.fleet import age, children_cpu_seconds, fleet_floor, medians, run_fleet_command
from bench.scale import STAGES, bench
from etl import db, synth
from etl.migrate import migrate


def test_bench_at_scale_s_reports_every_day_and_a_harmless_rerun(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two S days on the test server: every stage timed, the rows each day stages, a floor with
    its three parts, and a re-run of the last day that changes nothing."""
    monkeypatch.setenv("ETL_DATABASE_URL", database_url)
    report = bench("S", 2, workdir=tmp_path)
    assert report["scale"] == "S"
    assert report["rerun_changed"] == 0
    assert [(day, f["rows"]) for day, f in report["days"].items()] == [
        ("day1", 7491),
        ("day2", 7349),
    ]
    for figures in report["days"].values():
        assert set(figures["stages_s"]) == set(STAGES)
        assert figures["peak_rss_mb"] > 0
        assert set(figures["floor"]) == {"read_s", "decode_s", "load_s", "total_s"}
        assert figures["floor"]["total_s"] > 0


def test_against_a_revision_times_both_trees_in_turn(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--against REV``: every round syncs the days with this tree and with REV's, checked out
    in a worktree that is gone afterwards; each day gets both trees' seconds and a ratio."""
    monkeypatch.setenv("ETL_DATABASE_URL", database_url)
    worktrees = git("worktree", "list")
    report = compare_scale("S", 1, "HEAD", 2, tmp_path)
    assert report["commit"] == git("rev-parse", "--short", "HEAD")
    day = report["days"]["day1"]
    assert len(day["this"]) == len(day["against"]) == 2
    assert all(seconds > 0 for seconds in day["this"] + day["against"])
    assert day["ratio"] > 0
    assert git("worktree", "list") == worktrees


def test_against_an_unknown_revision_says_so_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        compare_scale("S", 1, "no-such-revision", 1, tmp_path)
    assert str(stopped.value).startswith("git rev-parse --short no-such-revision: fatal:")
    assert list(tmp_path.iterdir()) == []  # no data generated


def test_the_other_revision_runs_from_its_own_worktree() -> None:
    """What ``--against`` times for REV is REV: its worktree is at REV's commit, and an etl
    process started for it imports the etl of that worktree, not this tree's."""
    with checkout(git("rev-parse", "HEAD~1")) as tree:
        at = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True)
        assert at.stdout.strip() == git("rev-parse", "HEAD~1")
        imported = subprocess.run(
            [sys.executable, "-c", "import etl; print(etl.__file__)"],
            cwd=tree,
            env=etl_env(tree),
            capture_output=True,
            text=True,
            check=True,
        )
        assert imported.stdout.strip() == str(tree / "etl" / "__init__.py")
    assert not tree.exists()


def test_the_fleet_command_is_timed_with_its_workers_cpu(tmp_path: Path, database_url: str) -> None:
    """The fleet command on three synthetic accounts: every account's outcome, its wall time,
    and CPU seconds that count its workers' too. The command and each of its two workers import
    etl's worker, and the workers sync: more than twice what that import costs one process,
    which the command alone would not reach."""
    keys = synth.generate_fleet(3, 1, 1, tmp_path)
    before = children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "import etl.fleet_worker, etl.chunk"], check=True)
    one_import = children_cpu_seconds() - before
    ran = run_fleet_command(database_url, tmp_path, "day1", workers=2)
    outcomes = ran["document"]["accounts"]
    assert sorted((o["key"], o["status"]) for o in outcomes) == [(k, "succeeded") for k in keys]
    assert ran["cpu_s"] > 2 * one_import, (ran["cpu_s"], one_import)
    assert ran["wall_s"] > 0


def test_the_fleet_floor_loads_every_accounts_rows_at_once_and_one_by_one(
    tmp_path: Path, database_url: str
) -> None:
    """The floor's COPY of a fleet's final rows: all accounts in one load, and each account's
    rows in loads of its own (the issue's floor); both load every row, and the floor reports
    both totals over the same reading and decoding."""
    keys = synth.generate_fleet(3, 1, 1, tmp_path)
    assert run_fleet_command(database_url, tmp_path, "day1", workers=1)["document"]["failed"] == 0
    conn = db.connect(database_url)
    try:
        tables = {t: fetch(conn, f"SELECT * FROM etl.{t}") for t in FINAL_TABLES}  # noqa: S608
        counts = {t: rows.num_rows for t, rows in tables.items()}
        assert len(set(tables["agents"]["account_id"].to_pylist())) == 3
        assert load_floor(conn, tables)[1] == counts
        assert load_floor(conn, tables, by_account=True)[1] == counts
    finally:
        conn.close()
    floor = fleet_floor(database_url, tmp_path, "day1", keys)
    assert floor["total_s"] == floor["read_s"] + floor["decode_s"] + floor["load_s"]
    assert floor["total_each_s"] == floor["read_s"] + floor["decode_s"] + floor["load_each_s"]


def test_a_fleets_rounds_merge_into_medians_with_the_highest_peak() -> None:
    """Each figure is the median of the rounds' (ratios too, as each round took them), the
    peak RSS the highest, and an account that failed in any round is named."""
    rounds = [
        {"fleet_wall_s": 9.06, "speedup": 12.8, "fleet_per_minute": 1325, "worker_peak_rss_mb": 191,
         "not_succeeded": []},
        {"fleet_wall_s": 12.43, "speedup": 7.7, "fleet_per_minute": 966, "worker_peak_rss_mb": 188,
         "not_succeeded": ["b"]},
        {"fleet_wall_s": 10.97, "speedup": 9.4, "fleet_per_minute": 1094, "worker_peak_rss_mb": 192,
         "not_succeeded": ["a"]},
    ]  # fmt: skip
    assert medians(rounds) == {
        "fleet_wall_s": 10.97,
        "speedup": 9.4,
        "fleet_per_minute": 1094,
        "worker_peak_rss_mb": 192,
        "not_succeeded": ["a", "b"],
    }
    assert medians(rounds[:2])["fleet_wall_s"] == 10.745
    assert medians(rounds[:2])["fleet_per_minute"] == 1146  # ints stay whole


def test_children_cpu_seconds_count_the_children_of_children() -> None:
    """A child's own child (as the fleet command's workers are) is counted once both ended."""
    busy = "import time\nwhile time.process_time() < 0.3: pass"
    nested = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}], check=True)"
    before = children_cpu_seconds()
    subprocess.run([sys.executable, "-c", nested], check=True)
    assert children_cpu_seconds() - before >= 0.3


def test_a_fleet_database_aged_with_history_still_syncs_its_next_day(
    tmp_path: Path, database_url: str
) -> None:
    """``--history DAYS``: every account gets three succeeded runs a day of history, each staging
    what its last run of the entity did, their files, errors and history rows, on days that
    sort before day1; the same in a database whose accounts and runs got other ids; day2 then
    syncs as usual."""
    keys = synth.generate_fleet(2, 2, 1, tmp_path)
    with bare_database("aged") as (other_url, other):
        migrate(other)
        # other ids for the same accounts and their runs
        rows(
            other,
            "INSERT INTO etl.sync_runs (account_id, sync_day, entity, status, synced_at)"
            " VALUES (etl.ensure_account_v1('first'), 'day0', 'agents', 'failed', now())",
        )
        for url in (database_url, other_url):
            assert run_fleet_command(url, tmp_path, "day1", workers=1)["document"]["failed"] == 0
            age(url, 3)
        conn = db.connect(database_url)
        try:
            aged = rows(
                conn,
                "SELECT a.account_key, count(DISTINCT r.run_id), count(f.*),"
                " (SELECT count(*) FROM etl.agent_role_history h"
                "   WHERE h.account_id = a.account_id AND h.sync_day LIKE 'a%')"
                " FROM etl.accounts a JOIN etl.sync_runs r USING (account_id)"
                " LEFT JOIN etl.sync_run_files f USING (account_id, run_id)"
                " WHERE r.sync_day LIKE 'a%' GROUP BY a.account_id, a.account_key ORDER BY 1",
            )
            errors = rows(
                conn,
                "SELECT (SELECT count(*) FROM etl.agent_pipeline_errors WHERE sync_day LIKE 'a%'),"
                " (SELECT count(*) FROM etl.role_pipeline_errors WHERE sync_day LIKE 'a%'),"
                " (SELECT count(*) FROM etl.group_pipeline_errors WHERE sync_day LIKE 'a%')",
            )
            staged = rows(
                conn,
                "SELECT DISTINCT r.account_id, r.entity, r.rows_staged = d.rows_staged"
                " FROM etl.sync_runs r JOIN etl.sync_runs d USING (account_id, entity)"
                " WHERE r.sync_day LIKE 'a%' AND d.sync_day = 'day1'",
            )
            states = [account_state(conn, key) for key in keys]
        finally:
            conn.close()
        assert [account_state(other, key) for key in keys] == states
    assert aged == [(key, 9, 180, 6) for key in keys]
    assert errors == [(6, 6, 6)]
    assert {same for _, _, same in staged} == {True} and len(staged) == 6
    assert run_fleet_command(database_url, tmp_path, "day2", workers=1)["document"]["failed"] == 0
