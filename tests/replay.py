"""Replay every day of a data folder, in order, on a fresh database and compare the final state
with a golden dump: ``python tests/replay.py [--update]`` (``just replay``).

Day i (counting from 0) is synced at 2026-01-01T06:00:00Z plus i days, so the dump is the same
on every machine.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etl import cli, db, embedded, source

# What a re-run of a day never changes; the error tables get the re-run's run_id.
STATE_TABLES = (
    "agents",
    "roles",
    "agent_role_mapping",
    "agent_role_history",
    "groups",
    "group_membership",
)
FINAL_TABLES = (
    *STATE_TABLES,
    "agent_pipeline_errors",
    "role_pipeline_errors",
    "group_pipeline_errors",
)
DUMPED_TABLES = (*FINAL_TABLES, "sync_runs")
FIRST_SYNC = datetime(2026, 1, 1, 6, tzinfo=UTC)


def replay_days(url: str, data_dir: Path, *options: str) -> None:
    """Sync every day of ``data_dir`` in natural order, with ``options`` added to each run's
    command line; raises SystemExit if one fails."""
    for number, day in enumerate(source.list_days(data_dir)):
        synced_at = (FIRST_SYNC + timedelta(days=number)).isoformat()
        argv = [
            "--day",
            day,
            "--data-dir",
            str(data_dir),
            "--database-url",
            url,
            "--synced-at",
            synced_at,
            *options,
        ]
        code = cli.main(argv)
        if code != 0:
            raise SystemExit(f"replay stopped: day {day} exited with {code}")


def dump_state(
    conn: db.Connection, tables: tuple[str, ...] = DUMPED_TABLES, account: str = "default"
) -> str:
    """The account's final tables as text: per table a header and one JSON array per row, in
    the dump queries' order."""
    account_id = db.account_id(conn, account)
    lines = []
    for table in tables:
        lines.append(f"## etl.{table}")
        lines.extend(
            json.dumps(row, default=str, ensure_ascii=False)
            for row in db.execute(conn, f"dump_{table}", (account_id,))
        )
    conn.commit()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/replay.py", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("fixtures"))
    parser.add_argument("--golden", type=Path, default=Path("tests/golden/replay.txt"))
    parser.add_argument("--update", action="store_true", help="rewrite the golden file")
    args = parser.parse_args(argv)
    url, _server = embedded.start_embedded(
        Path(tempfile.mkdtemp(prefix="etl-replay-")), temporary=True
    )
    replay_days(url, args.data_dir)
    conn = db.connect(url)
    try:
        state = dump_state(conn)
    finally:
        conn.close()
    if args.update:
        args.golden.parent.mkdir(parents=True, exist_ok=True)
        args.golden.write_text(state)
        print(f"replay: wrote {args.golden}")
        return 0
    golden = args.golden.read_text() if args.golden.exists() else ""
    if state == golden:
        print(f"replay: final state matches {args.golden}")
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            golden.splitlines(keepends=True),
            state.splitlines(keepends=True),
            str(args.golden),
            "replayed state",
        )
    )
    print(f"replay: final state differs from {args.golden}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
