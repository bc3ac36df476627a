"""Split decoding: a folder decoded half here, half in a worker process, is the folder decoded in
one pass -- records, ordinals, errors, ledger files and failures alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, rows, write_day
from conftest import sync as run_cli
from replay import dump_state, replay_days

from etl import db, overlap, split
from etl.decode import Decoded, decode_files
from etl.errors import InputError
from etl.pages import FileDigest
from etl.records import AGENT, AGENT_DETAILS, RecordKind
from etl.source import FolderFiles, list_files

GOLDEN = Path(__file__).parent / "golden" / "replay.txt"


@pytest.fixture
def split_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every folder is split, the first half at an even cut (a one-file folder: all of it in
    the worker)."""
    monkeypatch.setattr(split, "MIN_FILES", 1)
    monkeypatch.setattr(split, "HEAD_START", 0)
    monkeypatch.setattr(split, "_cores", lambda: 2)


def test_split_decoding_replays_to_the_golden_state(
    split_everything: None, monkeypatch: pytest.MonkeyPatch, database_url: str, conn: db.Connection
) -> None:
    """Every fixture day, each folder decoded in two processes, agent_details half of it read
    ahead while agents runs: exactly the golden state, error rows and ledger files included."""
    taken: list[str] = []
    take = overlap.ReadAhead.take

    def counted(self: overlap.ReadAhead, kind: RecordKind) -> object:
        part = take(self, kind)
        if part is not None:
            taken.append(kind.name)
        return part

    monkeypatch.setattr(overlap.ReadAhead, "take", counted)
    replay_days(database_url, FIXTURES)
    assert dump_state(conn) == GOLDEN.read_text()
    assert len(taken) == len(list(FIXTURES.glob("sync-*"))) and set(taken) == {"agent_details"}


def test_a_read_ahead_stops_with_a_failed_agents_step(
    split_everything: None,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    conn: db.Connection,
    tmp_path: Path,
) -> None:
    """agents fails on a page that is no JSON while the worker reads agent_details ahead: the
    worker is stopped and its files are gone with the run."""
    write_day(
        tmp_path / "in",
        "day1",
        agents={"1.json": b"[nope"},
        roles={"1.json": []},
        agent_details={f"{n}.json": {"id": n, "role_ids": []} for n in range(1, 5)},
        admin_groups={"1.json": []},
    )
    spill = tmp_path / "spill"
    spill.mkdir()
    workers: list[split.SecondPart] = []
    start = split.SecondPart.__init__

    def started(self: split.SecondPart, *args: Any) -> None:
        start(self, *args)
        workers.append(self)

    monkeypatch.setattr(split.SecondPart, "__init__", started)
    code = run_cli(database_url, "day1", "--spill-dir", str(spill), data_dir=tmp_path / "in")
    assert code == 1
    assert rows(conn, "SELECT entity, status, message FROM etl.sync_runs") == [
        (
            "agents",
            "failed",
            "sync-day1/agents/1.json: not valid JSON: JSON is malformed: invalid character "
            "(byte 2)",
        )
    ]
    assert list(spill.iterdir()) == []
    assert len(workers) == 1 and workers[0].process.returncode is not None  # stopped, reaped


def details_day(tmp_path: Path, bad: str | None = None) -> Path:
    """Six agent_details files with bad records in 1.json and 6.json (a timestamp, which is
    found when its batch is built) and 3.json (a role id), and, when ``bad`` names one, a file
    that is not JSON at all."""
    files: dict[str, object] = {f"{n}.json": {"id": n, "role_ids": [n, n + 1]} for n in range(1, 7)}
    files["1.json"] = {"id": 1, "role_ids": [1], "created_at": "soon"}
    files["3.json"] = {"id": 3, "role_ids": ["x"]}
    files["6.json"] = {"id": 6, "updated_at": "later"}
    if bad is not None:
        files[bad] = b"{nope"
    write_day(tmp_path, "d", agent_details=files)
    return tmp_path


def decode_both(
    tmp_path: Path, spill: Path
) -> tuple[Decoded, Decoded, list[FileDigest], list[FileDigest]]:
    files = list_files(tmp_path, "d", "agent_details")
    one: list[FileDigest] = []
    two: list[FileDigest] = []
    serial = decode_files(AGENT_DETAILS, files, on_file=one.append)
    parts = split.split_parts(files)
    assert parts is not None
    halves = split.decode_split(AGENT_DETAILS, *parts, spill / "d.arrow", on_file=two.append)
    return serial, halves, one, two


def test_split_decoding_equals_one_pass(split_everything: None, tmp_path: Path) -> None:
    serial, halves, one, two = decode_both(details_day(tmp_path / "in"), tmp_path)
    assert halves.records.frame().equals(serial.records.frame())
    assert halves.records.frame()["agent_id"].to_list() == [2, 3, 4, 5]
    assert halves.records.frame()["ordinal"].to_list() == list(range(4))
    assert halves.errors == serial.errors
    assert [(e.source_file[-6:], e.message) for e in halves.errors] == [
        ("1.json", '$.created_at: Expected an ISO-8601 timestamp, got "soon"'),
        ("3.json", '$.role_ids[0]: Expected an integer id in 1..2^63-1, got "x"'),
        ("6.json", '$.updated_at: Expected an ISO-8601 timestamp, got "later"'),
    ]
    assert two == one and len(one) == 6
    assert not list(tmp_path.glob("d-second-part.*"))  # the worker's files are gone


@pytest.mark.parametrize("bad", ["2.json", "5.json"], ids=["this half", "the worker's half"])
def test_a_file_that_is_no_json_fails_as_in_one_pass(
    split_everything: None, tmp_path: Path, bad: str
) -> None:
    """The InputError is the one a single pass raises, and the ledger got the same files: those
    before the bad one, and the bad one."""
    data = details_day(tmp_path / "in", bad)
    files = list_files(data, "d", "agent_details")
    one: list[FileDigest] = []
    two: list[FileDigest] = []
    with pytest.raises(InputError) as serial:
        decode_files(AGENT_DETAILS, files, on_file=one.append)
    parts = split.split_parts(files)
    assert parts is not None
    with pytest.raises(InputError) as halves:
        split.decode_split(AGENT_DETAILS, *parts, tmp_path / "d.arrow", on_file=two.append)
    assert str(halves.value) == str(serial.value)
    assert str(serial.value).startswith(f"sync-d/agent_details/{bad}: not valid JSON: ")
    assert two == one
    assert one[-1].name == f"sync-d/agent_details/{bad}"
    assert not list(tmp_path.glob("d-second-part.*"))  # the worker's files are gone


def test_a_worker_that_crashes_is_lost_with_its_last_line(tmp_path: Path) -> None:
    worker = split.start_worker({"kind": "no such kind"}, tmp_path / "request.pickle")
    sent, _ = worker.communicate()
    with pytest.raises(split.WorkerLost) as raised:
        split.worker_part(sent, worker.returncode)
    assert str(raised.value) == "the decode worker failed: KeyError: 'root'"


@pytest.mark.database
def test_a_lost_worker_costs_only_the_speed_up(
    split_everything: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker that ends without its result (here: exit code 3 at once, as if killed) leaves
    its part to this process; the result is still that of one pass."""

    def dying_worker(request: dict[str, object], path: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "raise SystemExit(3)"], stdout=subprocess.PIPE
        )

    monkeypatch.setattr(split, "start_worker", dying_worker)
    serial, halves, one, two = decode_both(details_day(tmp_path / "in"), tmp_path)
    assert halves.records.frame().equals(serial.records.frame())
    assert halves.errors == serial.errors
    assert two == one and len(one) == 6
    dead = dying_worker({}, tmp_path)
    sent, _ = dead.communicate()
    with pytest.raises(split.WorkerLost) as raised:
        split.worker_part(sent, dead.returncode)
    assert str(raised.value) == "the decode worker ended without a result (exit code 3)"


def test_only_big_folder_listings_are_split(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Many files are cut by count, this process taking HEAD_START more; files named one by
    one, or a single core, are never split."""
    write_day(tmp_path, "d", agent_details={f"{n}.json": {"id": n} for n in range(1, 5)})
    files = list_files(tmp_path, "d", "agent_details")
    monkeypatch.setattr(split, "MIN_FILES", 4)
    monkeypatch.setattr(split, "HEAD_START", 2)
    monkeypatch.setattr(split, "_cores", lambda: 2)
    assert part_lengths(split.split_parts(files)) == (3, 1)
    assert split.split_parts(list(files)) is None  # files named one by one, not a listing
    monkeypatch.setattr(split, "_cores", lambda: 1)
    assert split.split_parts(files) is None
    monkeypatch.setattr(split, "_cores", lambda: 2)
    monkeypatch.setattr(split, "MIN_FILES", 5)  # one file short, and too few bytes
    assert split.split_parts(files) is None


def test_a_few_big_pages_are_cut_by_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A folder of at most MAX_SIZED pages holding MIN_BYTES or more is cut where this
    process's part, HEAD_START_BYTES bigger than the worker's, ends; the result is still that
    of one pass."""
    pages = {"1.json": 300, "2.json": 300, "3.json": 300, "4.json": 100}
    write_day(
        tmp_path / "in",
        "d",
        agents={
            name: f'[{{"id": {n}}}, {{"id": {n + 10}}}]'.ljust(size).encode()
            for n, (name, size) in enumerate(pages.items(), 1)
        },
    )
    files = list_files(tmp_path / "in", "d", "agents")
    monkeypatch.setattr(split, "_cores", lambda: 2)
    monkeypatch.setattr(split, "MIN_BYTES", 1000)
    monkeypatch.setattr(split, "HEAD_START_BYTES", 0)
    parts = split.split_parts(files)
    assert part_lengths(parts) == (2, 2)  # 600 of 1,000 bytes here
    monkeypatch.setattr(split, "HEAD_START_BYTES", 400)
    assert part_lengths(split.split_parts(files)) == (3, 1)  # 900 >= (1,000 + 400) / 2
    monkeypatch.setattr(split, "HEAD_START_BYTES", 900)
    assert split.split_parts(files) is None  # the worker would get nothing
    monkeypatch.setattr(split, "HEAD_START_BYTES", 0)
    monkeypatch.setattr(split, "MIN_BYTES", 1001)
    assert split.split_parts(files) is None
    monkeypatch.setattr(split, "MIN_BYTES", 1000)
    monkeypatch.setattr(split, "MAX_SIZED", 3)
    assert split.split_parts(files) is None

    assert parts is not None
    serial = decode_files(AGENT, files)
    halves = split.decode_split(AGENT, *parts, tmp_path / "d.arrow")
    assert halves.records.frame().equals(serial.records.frame())
    assert halves.records.frame()["agent_id"].to_list() == [1, 11, 2, 12, 3, 13, 4, 14]


def part_lengths(parts: tuple[FolderFiles, FolderFiles] | None) -> tuple[int, int] | None:
    return None if parts is None else (len(parts[0]), len(parts[1]))
