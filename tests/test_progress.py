"""Progress: each stage of a run, with its steps, on a live terminal line; nothing when piped."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from conftest import FIXTURES, default_account

from etl import db
from etl.cli_sync import terminal_progress
from etl.progress import TerminalProgress
from etl.run import SyncOptions
from etl.sync import sync_day


class Recorder:
    """A Progress that writes down what it is told."""

    def __init__(self, title: str, seen: list[tuple[str, str, int | None, int]]) -> None:
        self.title, self.seen = title, seen

    def stage(self, name: str, total: int | None = None) -> None:
        self.seen.append((self.title, name, total, 0))

    def advance(self, steps: int = 1) -> None:
        title, name, total, done = self.seen[-1]
        self.seen[-1] = (title, name, total, done + steps)

    def close(self) -> None:
        self.seen.append((self.title, "closed", None, 0))


def test_a_sync_shows_each_stage_with_files_decoded_and_rows_staged(
    conn: db.Connection,
) -> None:
    """Per entity: its stages in order, decode counting files against the folder's total and
    staging counting rows (agents: 6 agents; roles: 6 roles plus 9 pairs)."""
    seen: list[tuple[str, str, int | None, int]] = []
    options = SyncOptions(
        data_dir=FIXTURES,
        synced_at=datetime(2026, 1, 1, 6, tzinfo=UTC),
        progress=lambda title: Recorder(title, seen),
        serial=True,  # each entity closed before the next begins
    )
    sync_day(conn, default_account(conn), "day1", ("agents", "roles"), options)
    assert seen == [
        ("day1 agents", "list files", None, 0),
        ("day1 agents", "decode agents files", 1, 1),
        ("day1 agents", "plan", None, 0),
        ("day1 agents", "read bad records' text", None, 0),
        ("day1 agents", "stage rows", None, 6),
        ("day1 agents", "apply (one transaction)", None, 0),
        ("day1 agents", "closed", None, 0),
        ("day1 roles", "list files", None, 0),
        ("day1 roles", "decode roles files", 1, 1),
        ("day1 roles", "decode agent_details files", 6, 6),
        ("day1 roles", "plan", None, 0),
        ("day1 roles", "read bad records' text", None, 0),
        ("day1 roles", "stage rows", None, 15),
        ("day1 roles", "apply (one transaction)", None, 0),
        ("day1 roles", "closed", None, 0),
    ]


def test_the_terminal_line_shows_the_stage_count_and_rate() -> None:
    """The line is drawn when a stage starts, redrawn in place (carriage return, erase to the end
    of the line) when steps advance after a tenth of a second, and erased at the end."""
    screen = io.StringIO()
    progress = TerminalProgress("day1 roles", screen, width=100)
    progress.stage("decode agent_details files", 10)
    progress.started_at -= 2.0  # as if the stage had begun two seconds ago
    progress.shown_at = 0.0  # and the last redraw were long ago
    progress.advance(4)
    progress.advance(1)  # within a tenth of a second: not drawn
    progress.close()
    assert screen.getvalue() == (
        "\rday1 roles: decode agent_details files  [--------------------]  0/10  0.0 s\x1b[K"
        "\rday1 roles: decode agent_details files  [########------------]  4/10  2/s  2.0 s"
        "\x1b[K\r\x1b[K"
    )


def test_the_terminal_line_is_cut_to_the_width_and_counts_rows_without_a_total() -> None:
    screen = io.StringIO()
    progress = TerminalProgress("day1 groups", screen, width=30)
    progress.stage("stage rows")
    progress.done = 12_345
    assert progress.line(progress.started_at + 5.0) == (
        "day1 groups: stage rows  12,345  2,469/s  5.0 s"
    )
    progress.draw(progress.started_at + 5.0)
    assert screen.getvalue().endswith("\rday1 groups: stage rows  12,3\x1b[K")


def test_no_progress_when_logs_are_json_or_stderr_is_no_terminal() -> None:
    assert terminal_progress("json") is None
    assert terminal_progress("console") is None  # pytest's stderr is no terminal
    assert terminal_progress(None) is None
