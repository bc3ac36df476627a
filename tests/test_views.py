"""Views: status, tree and errors print exactly this text when not on a terminal."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from conftest import bare_database, default_account, open_run, rows, sync, sync_days

from etl import db
from etl.cli import main
from etl.views_tree import tree_rows, tree_text


def view(capsys: pytest.CaptureFixture[str], url: str, *argv: str, code: int = 0) -> str:
    capsys.readouterr()
    assert main([*argv, "--database-url", url]) == code
    return capsys.readouterr().out


def pin_run_times(conn: db.Connection) -> None:
    """Each run started at its sync time plus its run id in minutes and took 1.25 s (a run
    without an end keeps none): the views' clock columns, made exact."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE etl.sync_runs SET started_at = synced_at + run_id * interval '1 minute',"
            " finished_at = CASE WHEN finished_at IS NOT NULL THEN synced_at"
            " + run_id * interval '1 minute' + interval '1.25 seconds' END"
        )
    conn.commit()


STATUS_DAY3 = """\
day   entity  run  status     synced at             started at            seconds  staged  inserted  updated  unchanged  removed  quarantined  runs
day3  agents    7  succeeded  2026-01-03 06:00:00Z  2026-01-03 06:07:00Z      1.2       5         2        1          2        0            3     1
day3  roles    10  failed     2026-01-03 06:00:00Z  2026-01-03 06:10:00Z      1.2                                                                 2
day3  groups    9  succeeded  2026-01-03 06:00:00Z  2026-01-03 06:09:00Z      1.2      21        18        1          2        1           11     1

not succeeded:
  run 10 (day3 roles) failed: {data}/sync-day3/roles: folder not found; the roles snapshot of day3 is missing
"""  # noqa: E501


def test_status_shows_each_days_last_run_and_why_one_failed(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Per day and entity the last run with its start, duration and counts; a failure's
    message below the table, and exit status 1 while an entity's latest run failed (for
    monitoring). ``--all`` shows the earlier, succeeded roles run too."""
    sync_days(database_url, "day1", "day2", "day3")
    (tmp_path / "sync-day3").mkdir()  # a day without its roles folder
    assert sync(database_url, "day3", "--entity", "roles", data_dir=tmp_path) == 1
    pin_run_times(conn)
    expected = STATUS_DAY3.format(data=tmp_path)
    assert view(capsys, database_url, "status", "--day", "day3", code=1) == expected
    every = view(capsys, database_url, "status", "--day", "day3", "--all", code=1).splitlines()
    assert every[2] == (
        "day3  roles     8  succeeded  2026-01-03 06:00:00Z  2026-01-03 06:08:00Z      1.2"
        "       5         1        1          3        3            8     2"
    )
    assert len(every) == 8
    lines = view(capsys, database_url, "status", code=1).splitlines()
    assert lines[1].startswith("day1  agents    1  ")
    assert sync(database_url, "day3", "--entity", "roles") == 0  # the roles run again, fine
    view(capsys, database_url, "status", "--day", "day3")


def test_a_refused_retry_does_not_hide_the_days_run(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """day1 is re-run after day2 without --force: refused, it changes nothing, so the table
    still shows day1's succeeded runs and lists the refusals below; the exit status is 1
    while the latest run of an entity was refused. ``--json`` gives the same for programs."""
    sync_days(database_url, "day1", "day2")
    assert sync(database_url, "day1", "--entity", "agents") == 1
    pin_run_times(conn)
    text = view(capsys, database_url, "status", "--day", "day1", code=1)
    lines = text.splitlines()
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["day1", "agents", "1", "succeeded"],
        ["day1", "roles", "2", "succeeded"],
        ["day1", "groups", "3", "succeeded"],
    ]
    assert lines[5:] == [
        "not succeeded:",
        "  run 7 (day1 agents) refused: agents: day day1 sorts before day2, which is already "
        "applied; re-apply an older day only with --force",
    ]
    document = json.loads(view(capsys, database_url, "status", "--day", "day1", "--json", code=1))
    assert document["account"] == "default"
    assert document["needs_attention"] is True
    assert document["not_succeeded"] == [7]
    assert document["runs"][0] == {
        "run_id": 1,
        "day": "day1",
        "entity": "agents",
        "status": "succeeded",
        "synced_at": "2026-01-01T06:00:00+00:00",
        "started_at": "2026-01-01T06:01:00+00:00",
        "finished_at": "2026-01-01T06:01:01.250000+00:00",
        "seconds": 1.25,
        "staged": 6,
        "inserted": 6,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "quarantined": 0,
        "message": None,
        "runs": 2,
    }
    assert [r["run_id"] for r in document["runs"]] == [1, 2, 3]
    assert sync(database_url, "day2", "--entity", "agents") == 0  # a re-run: all is well again
    assert json.loads(view(capsys, database_url, "status", "--json"))["needs_attention"] is False


def test_views_on_a_database_etl_never_touched(
    template_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No schema etl yet: each view says so (exit 0) and creates nothing."""
    with bare_database("views") as (url, conn):
        for argv in (["status"], ["tree"], ["errors", "--day", "day1"]):
            assert view(capsys, url, *argv) == (
                "nothing synced yet: this database has no etl schema\n"
            )
        assert rows(conn, "SELECT to_regnamespace('etl') IS NULL") == [(True,)]


def test_status_of_an_empty_ledger(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """An account without runs yet (its first run never started) has an empty ledger."""
    default_account(conn)
    assert view(capsys, database_url, "status") == "no runs yet\n"
    assert view(capsys, database_url, "status", "--day", "day9") == "no runs of day day9\n"


TREE_DAY3 = """\
Chain level 1 (69000700001)  members 0, active 0
└── Chain level 2 (69000700002)  members 0, active 0
    └── Chain level 3 (69000700003)  members 0, active 0
        └── Chain level 4 (69000700004)  members 0, active 0
            └── Chain level 5 (69000700005)  members 0, active 0
                └── Chain level 6 (69000700006)  members 0, active 0
                    └── Chain level 7 (69000700007)  members 0, active 0
                        └── Chain level 8 (69000700008)  members 0, active 0
                            └── Chain level 9 (69000700009)  members 0, active 0
                                └── Chain level 10 (69000700010)  members 0, active 0
                                    └── Chain level 11 (69000700011)  members 0, active 0
                                        └── Chain level 12 (69000700012)  members 1, active 1
H1 IT Support (69000521031)  members 3, active 2
├── DevOps (69000630118)  members 2, active 0
│   └── Information Security Group (69000639671)  members 2, active 2
└── Hardware Procurement (69000632384)  members 0, active 0 [inactive]
Orphan (69000800006)  members 1, active 1 [orphan: parent 69000899999 is not a known group]
Cycle X (69000800001)  members 0, active 0 [cycle of 3: 69000800001 -> 69000800002 -> 69000800003]
├── Below the cycle (69000800004)  members 1, active 0 [inactive]
└── Cycle Z (69000800003)  members 0, active 0 [cycle of 3: 69000800001 -> 69000800002 -> 69000800003]
    └── Cycle Y (69000800002)  members 1, active 1 [cycle of 3: 69000800001 -> 69000800002 -> 69000800003]
Own parent (69000800005)  members 1, active 0 [inactive] [cycle of 1: 69000800005]
"""  # noqa: E501


def test_tree_marks_inactive_groups_orphans_and_cycles(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Day3's hierarchy: roots by name, then each cycle from its smallest id with the rest of
    the cycle and what hangs below it. Onboarding/Offboarding is absent on day3, so it is not
    shown. A subtree from a cycle member follows the cycle round once."""
    sync_days(database_url, "day1", "day2", "day3")
    assert view(capsys, database_url, "tree") == TREE_DAY3
    assert view(capsys, database_url, "tree", "--group", "69000630118") == (
        "DevOps (69000630118)  members 2, active 0\n"
        "└── Information Security Group (69000639671)  members 2, active 2\n"
    )
    assert view(capsys, database_url, "tree", "--group", "69000800002") == (
        "Cycle Y (69000800002)  members 1, active 1 [cycle of 3: 69000800001 -> 69000800002 ->"
        " 69000800003]\n"
        "└── Cycle X (69000800001)  members 0, active 0 [cycle of 3: 69000800001 -> 69000800002 ->"
        " 69000800003]\n"
        "    ├── Below the cycle (69000800004)  members 1, active 0 [inactive]\n"
        "    └── Cycle Z (69000800003)  members 0, active 0 [cycle of 3: 69000800001 ->"
        " 69000800002 -> 69000800003]\n"
    )
    assert view(capsys, database_url, "tree", "--group", "69000630324") == (
        "no present group 69000630324\n"
    )
    on_terminal = tree_text(tree_rows(conn, 1, 69000521031), dim=True).splitlines()
    dim, plain = "\x1b[2m", "\x1b[0m"  # faint text on a terminal, for inactive groups only
    assert on_terminal[-1] == (
        f"└── {dim}Hardware Procurement (69000632384)  members 0, active 0 [inactive]{plain}"
    )
    assert on_terminal[0] == "H1 IT Support (69000521031)  members 3, active 2"


def test_tree_after_the_cycle_is_broken(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Day4 gives Cycle Z no parent: the former cycle hangs below it; the self-parent stays."""
    sync_days(database_url, "day1", "day2", "day3", "day4")
    tree = view(capsys, database_url, "tree").splitlines()
    assert tree[tree.index("Cycle Z (69000800003)  members 0, active 0") :][:4] == [
        "Cycle Z (69000800003)  members 0, active 0",
        "└── Cycle Y (69000800002)  members 1, active 1",
        "    └── Cycle X (69000800001)  members 0, active 0 [inactive]",
        "        └── Below the cycle (69000800004)  members 1, active 0 [inactive]",
    ]
    assert (
        tree[-1]
        == "Own parent (69000800005)  members 1, active 0 [inactive] [cycle of 1: 69000800005]"
    )


def test_tree_of_a_deep_chain_and_a_long_cycle(database_url: str, conn: db.Connection) -> None:
    """A 3,000-level chain prints without recursion; a cycle of 20 lists 10 of its ids, from
    its smallest along the parents."""
    account = default_account(conn)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO etl.groups (account_id, group_id, name, parent_group_id, present,"
            " inactive, synced_at, ingested_at)"
            " SELECT $1, g, 'G' || g, nullif(g - 1, 0), true, false, now(), now()"
            " FROM generate_series(1, 3000) g UNION ALL"
            " SELECT $1, g, 'C' || g, CASE WHEN g = 5001 THEN 5020 ELSE g - 1 END, true, false,"
            " now(), now() FROM generate_series(5001, 5020) g",
            (account,),
        )
    conn.commit()
    lines = tree_text(tree_rows(conn, account)).splitlines()
    assert len(lines) == 3_020
    assert lines[2_999] == " " * 4 * 2_998 + "└── G3000 (3000)  members 0, active 0"
    ids = " -> ".join(str(n) for n in [5001, *range(5020, 5011, -1)])  # along the parents
    assert lines[3_000] == f"C5001 (5001)  members 0, active 0 [cycle of 20: {ids} -> ...]"


ERRORS_DAY3 = """\
agents (run 4): 3 quarantined
  DUPLICATE_RECORD id: 1
    sync-day3/agents/1.json $[1].id: duplicate agent id 69010960305; the occurrence at sync-day3/agents/2.json $[1] wins (latest updated_at, then last in file order) (id 69010960305)
  VALIDATION_ERROR contact.name: 1
    sync-day3/agents/2.json $[2].contact.name: NUL character (\\u0000) in a string; PostgreSQL text cannot hold it (id 69040000002)
  VALIDATION_ERROR deactivated: 1
    sync-day3/agents/2.json $[0].deactivated: Expected `bool | null`, got `str` (id 69015615959)
roles (run 5): 8 quarantined
  DUPLICATE_RECORD id: 2
    sync-day3/agent_details/69010960305.json $.id: duplicate agent_details id 69010960305; the occurrence at sync-day3/agent_details/zz-late-export.json $[0] wins (latest updated_at, then last in file order) (id 69010960305)
  INVALID_AGENT_ID agent_ids[]: 1
    sync-day3/roles/2.json $[1].agent_ids[1]: agent 79999999999 is not a known agent (id 69000500001)
  INVALID_MAPPING role_ids[]: 1
    sync-day3/agent_details/69040000001.json $.role_ids[1]: Expected an integer id in 1..2^63-1, got null (id 69040000001)
  INVALID_ROLE_ID role_ids[]: 1
    sync-day3/agent_details/69015615959.json $.role_ids[2]: role 69000999999 is not a known role (id 69015615959)
  VALIDATION_ERROR agent_type: 1
    sync-day3/roles/1.json $[5].agent_type: Expected `int | null`, got `str` (id 69000449269)
  VALIDATION_ERROR description: 1
    sync-day3/roles/1.json $[2].description: NUL character (\\u0000) in a string; PostgreSQL text cannot hold it (id 69000378067)
  VALIDATION_ERROR role_ids: 1
    sync-day3/agent_details/69013042475.json $.role_ids: Expected `array | null`, got `str` (id 69013042475)
groups (run 6): 11 quarantined
  DUPLICATE_RECORD id: 1
    sync-day3/admin_groups/1.json $[1].id: duplicate group id 69000521031; the occurrence at sync-day3/admin_groups/2.json $[0] wins (latest updated_at, then last in file order) (id 69000521031)
  HIERARCHY_CYCLE parent_group_id: 4
    sync-day3/admin_groups/1.json $[16].parent_group_id: group 69000800001 is on a parent cycle of 3 groups: 69000800001, 69000800002, 69000800003 (id 69000800001)
  INVALID_AGENT_ID agent_ids[]: 1
    sync-day3/admin_groups/2.json $[0].agent_ids[4]: agent 79030996455 is not a known agent (id 69000521031)
  INVALID_MAPPING agent_ids[]: 1
    sync-day3/admin_groups/2.json $[0].agent_ids[3]: Expected an integer id in 1..2^63-1, got null (id 69000521031)
  ORPHAN_PARENT parent_group_id: 1
    sync-day3/admin_groups/1.json $[21].parent_group_id: parent group 69000899999 is not a known group (id 69000800006)
  VALIDATION_ERROR agent_ids: 1
    sync-day3/admin_groups/1.json $[3].agent_ids: Expected `array | null`, got `str` (id 69000639671)
  VALIDATION_ERROR name: 1
    sync-day3/admin_groups/1.json $[22].name: NUL character (\\u0000) in a string; PostgreSQL text cannot hold it (id 69000800007)
  VALIDATION_ERROR parent_group_id: 1
    sync-day3/admin_groups/1.json $[23].parent_group_id: Expected `int | null`, got `str` (id 69000800008)
"""  # noqa: E501


def test_errors_of_a_day_by_type_and_field_with_examples(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Day3 alone (runs 4-6): counts per type and field with array positions folded, one example
    each with --examples 1 (the default shows three)."""
    sync_days(database_url, "day1")
    assert sync(database_url, "day3") == 0
    assert view(capsys, database_url, "errors", "--day", "day3", "--examples", "1") == ERRORS_DAY3
    full = view(capsys, database_url, "errors", "--day", "day3")
    assert full.count("is on a parent cycle of 3 groups") == 3  # three of the four examples
    assert view(capsys, database_url, "errors", "--day", "day1") == (
        "agents (run 1): nothing quarantined\n"
        "roles (run 2): nothing quarantined\n"
        "groups (run 3): nothing quarantined\n"
    )
    assert view(capsys, database_url, "errors", "--day", "day9") == "no succeeded run of day day9\n"


def test_errors_of_a_day_whose_runs_failed_say_where_to_look(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A day whose agents page is cut short: no run of it succeeded, so no bad record of it is
    recorded; the view says which runs ended how, and which command says why."""
    sync_days(database_url, "day1")
    truncated = Path(__file__).parent / "data" / "truncated"
    assert sync(database_url, "day2", data_dir=truncated) == 1
    capsys.readouterr()
    assert view(capsys, database_url, "errors", "--day", "day2") == (
        "no succeeded run of day day2 (agents failed): its bad records are recorded when a run "
        "of it succeeds; etl status --account default --day day2 says why\n"
    )


def test_the_ledger_row_holds_the_summary_lines_seconds(
    database_url: str, conn: db.Connection
) -> None:
    """Each run's ledger row keeps its seconds per stage beside its counts (details.seconds),
    as the `synced` log line shows them."""
    assert sync(database_url, "day1") == 0
    assert rows(
        conn,
        "SELECT entity, (SELECT string_agg(k, ',' ORDER BY k)"
        " FROM jsonb_object_keys(details -> 'seconds') k),"
        " (SELECT bool_and(v::numeric >= 0) FROM jsonb_each_text(details -> 'seconds') s(k, v))"
        " FROM etl.sync_runs ORDER BY run_id",
    ) == [(e, "apply,decode,list,plan,stage", True) for e in ("agents", "roles", "groups")]


def test_status_flags_a_run_whose_process_died(
    database_url: str, conn: db.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A latest run still 'running' while no run of the account holds its lock was left by a
    process that died: status exits 1. While a run holds the lock, it is under way: exit 0."""
    sync_days(database_url, "day1")
    open_run(conn, "day2", "agents")  # as a killed process leaves it
    view(capsys, database_url, "status", code=1)
    holder = db.connect(database_url)
    try:
        assert db.execute(holder, "try_lock", ("default",)) == [(True,)]
        view(capsys, database_url, "status")
        document = json.loads(view(capsys, database_url, "status", "--json"))
        assert (document["needs_attention"], document["not_succeeded"]) == (False, [4])
    finally:
        holder.close()
    view(capsys, database_url, "status", code=1)


def test_views_as_json_for_programs(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """tree, errors and accounts take --json: the same content as the text, every field named."""
    sync_days(database_url, "day1", "day2", "day3")
    cycle = 69000800001  # the cycle's smallest id names it

    def group(gid: int, name: str, parent: int, depth: int, **rest: object) -> dict[str, object]:
        fields = {"inactive": False, "members": 0, "active_members": 0, "orphan": None}
        return {
            "group_id": gid,
            "name": name,
            "parent_group_id": parent,
            "depth": depth,
            **fields,
            **rest,
        }

    tree = json.loads(view(capsys, database_url, "tree", "--group", "69000800002", "--json"))
    assert tree == {
        "account": "default",
        "groups": [
            group(69000800002, "Cycle Y", 69000800003, 0, members=1, active_members=1, cycle=cycle),
            group(69000800001, "Cycle X", 69000800002, 1, cycle=cycle),
            group(
                69000800004, "Below the cycle", 69000800001, 2, inactive=True, members=1, cycle=None
            ),
            group(69000800003, "Cycle Z", 69000800001, 2, cycle=cycle),
        ],
        "cycles": [[69000800001, 69000800002, 69000800003]],
    }
    orphan = json.loads(view(capsys, database_url, "tree", "--json"))["groups"]
    assert [g["orphan"] for g in orphan if g["group_id"] == 69000800006] == ["not a known group"]

    errors = json.loads(
        view(capsys, database_url, "errors", "--day", "day3", "--examples", "1", "--json")
    )
    assert (errors["account"], errors["day"]) == ("default", "day3")
    assert [(e["entity"], e["run_id"], e["quarantined"]) for e in errors["entities"]] == [
        ("agents", 7, 3),
        ("roles", 8, 8),
        ("groups", 9, 11),
    ]
    assert errors["entities"][0]["errors"][1:] == [
        {
            "error_type": "VALIDATION_ERROR",
            "field": "contact.name",
            "count": 1,
            "examples": [
                {
                    "file": "sync-day3/agents/2.json",
                    "message": "$[2].contact.name: NUL character (\\u0000) in a string; "
                    "PostgreSQL text cannot hold it",
                    "record_id": 69040000002,
                }
            ],
        },
        {
            "error_type": "VALIDATION_ERROR",
            "field": "deactivated",
            "count": 1,
            "examples": [
                {
                    "file": "sync-day3/agents/2.json",
                    "message": "$[0].deactivated: Expected `bool | null`, got `str`",
                    "record_id": 69015615959,
                }
            ],
        },
    ]
    hierarchy = errors["entities"][2]["errors"][1]
    assert (hierarchy["error_type"], hierarchy["count"], len(hierarchy["examples"])) == (
        "HIERARCHY_CYCLE",
        4,
        1,
    )

    accounts = json.loads(view(capsys, database_url, "accounts", "--json"))["accounts"]
    finished = accounts[0].pop("finished_at")
    assert accounts == [
        {
            "account": "default",
            "account_id": 1,
            "days": 3,
            "last_day": "day3",
            "newest_run": {"run_id": 9, "day": "day3", "entity": "groups", "status": "succeeded"},
        }
    ]
    assert datetime.fromisoformat(finished).tzinfo is not None


@pytest.mark.database
def test_json_views_on_a_database_etl_never_touched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With no etl schema: accounts --json is an empty list; an account's view says there is no
    such account (exit 1), as JSON consumers need a document or a failure, never prose."""
    with bare_database("json") as (url, _):
        assert json.loads(view(capsys, url, "accounts", "--json")) == {"accounts": []}
        assert main(["tree", "--json", "--database-url", url]) == 1
        assert capsys.readouterr().err.splitlines()[-1] == (
            "etl: error: no account default in this database yet: sync a day of it first"
        )
