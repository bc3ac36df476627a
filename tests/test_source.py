"""Input discovery: natural, total order of days and files."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.decode import decode_files
from etl.errors import InputError
from etl.pages import FileDigest
from etl.records import AGENT
from etl.source import (
    FEW_NAMES,
    InputFile,
    day_key,
    list_days,
    list_files,
    natural_key,
    positions,
    read_open,
    read_pages,
    sort_naturally,
)


def test_days_and_files_sort_naturally_and_totally(tmp_path: Path) -> None:
    """day2 < day10; names equal but for case or leading zeros still have one fixed order."""
    for day in ("day10", "day2", "day1", "day01", "2026-11-21"):
        (tmp_path / f"sync-{day}" / "agents").mkdir(parents=True)
    assert list_days(tmp_path) == ["2026-11-21", "day01", "day1", "day2", "day10"]
    folder = tmp_path / "sync-day1" / "agents"
    for name in ("10.json", "2.json", "01.json", "1.json", "B.json", "a.json", "A.json", "x.txt"):
        (folder / name).write_text("[]")
    assert [f.name for f in list_files(tmp_path, "day1", "agents")] == [
        "sync-day1/agents/" + name
        for name in (
            "01.json",
            "1.json",
            "2.json",
            "10.json",
            "A.json",
            "a.json",
            "B.json",
        )
    ]


@pytest.mark.parametrize(("a", "b"), [("day2", "day10"), ("day01", "day1"), ("Day1", "day1")])
def test_natural_key_orders_pairs(a: str, b: str) -> None:
    """natural_key is a strict order: no two different names compare equal; day_key, which
    remembers the keys of day labels, orders them alike."""
    assert natural_key(a) < natural_key(b)
    assert day_key(a) == natural_key(a) and day_key(b) == natural_key(b)
    assert day_key(a) < day_key(b)


def test_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    """A missing entity folder names the path and what is missing."""
    with pytest.raises(InputError, match="folder not found; the roles snapshot of day3 is missing"):
        list_files(tmp_path, "day3", "roles")


def test_every_json_entry_is_a_page_even_one_that_cannot_be_read(tmp_path: Path) -> None:
    """A broken link or a folder named like a page is listed with the pages, and reading it
    fails naming it: a snapshot is never read with a page left out unsaid."""
    folder = tmp_path / "sync-d" / "agents"
    folder.mkdir(parents=True)
    (folder / "1.json").write_bytes(b"[]")
    (folder / "2.json").symlink_to(tmp_path / "gone.json")
    (folder / "3.json").mkdir()
    (folder / "notes.txt").write_bytes(b"")
    listed = list_files(tmp_path, "d", "agents")
    assert [f.name for f in listed] == [f"sync-d/agents/{n}.json" for n in (1, 2, 3)]
    with pytest.raises(InputError) as raised:
        decode_files(AGENT, listed)
    assert str(raised.value) == "sync-d/agents/2.json: cannot read: No such file or directory"
    (folder / "2.json").unlink()
    with pytest.raises(InputError) as raised:
        decode_files(AGENT, list_files(tmp_path, "d", "agents"))
    assert str(raised.value) == "sync-d/agents/3.json: cannot read: Is a directory"


def test_an_unreadable_folder_or_a_name_not_utf8_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Either names the folder (and the file, its bytes escaped) and says what is wrong."""
    folder = tmp_path / "sync-d" / "agents"
    folder.mkdir(parents=True)
    (folder / "1.json").write_bytes(b"[]")
    open(os.path.join(os.fsencode(folder), b"p\xff1.json"), "wb").close()
    with pytest.raises(InputError) as raised:
        list_files(tmp_path, "d", "agents")
    assert str(raised.value) == f"{folder}/p\\xff1.json: the file name is not UTF-8; rename it"

    def refused(path: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "scandir", refused)
    with pytest.raises(InputError) as raised:
        list_files(tmp_path, "d", "agents")
    assert str(raised.value) == f"{folder}: cannot read: Permission denied"


@given(
    st.lists(
        st.one_of(
            st.integers(1, 10**20).map(lambda n: f"{n}.json"),
            st.sampled_from(["01.json", "0.json", "a1.json", "A.json", "10.JSON.json"]),
        ),
        unique=True,
    )
)
def test_sort_naturally_matches_natural_key(names: list[str]) -> None:
    """The fast paths for plain numbered names sort exactly as natural_key does: in Python for a
    small folder's names, in Arrow for a bigger folder's (the names and 200 more)."""
    assert sort_naturally(names).to_pylist() == sorted(names, key=natural_key)
    many = sorted({*names, *(f"{n}.json" for n in range(7, 1500, 7))}, reverse=True)
    assert len(many) > FEW_NAMES
    assert sort_naturally(many).to_pylist() == sorted(many, key=natural_key)


def test_read_whole_reads_small_files_only(tmp_path: Path) -> None:
    """A file of at most ``limit`` bytes is read whole in one call; a bigger one is left to the
    chunked reader (None); an unreadable one is an InputError naming it."""
    folder = tmp_path / "sync-d" / "agent_details"
    folder.mkdir(parents=True)
    (folder / "1.json").write_bytes(b"[" + b" " * 98 + b"]")
    (folder / "2.json").write_bytes(b"")
    small, empty = list_files(tmp_path, "d", "agent_details")
    assert small.read_whole(100) == b"[" + b" " * 98 + b"]"
    assert small.read_whole(99) is None
    assert empty.read_whole(100) == b""
    (folder / "1.json").unlink()
    with pytest.raises(InputError) as raised:
        small.read_whole(100)
    assert str(raised.value) == (
        "sync-d/agent_details/1.json: cannot read: No such file or directory"
    )


@pytest.mark.parametrize(
    ("size", "limit"),
    [
        (0, 10),
        (10, 10),
        (11, 10),
        (65_535, 1 << 20),
        (65_536, 1 << 20),
        (65_537, 1 << 20),
        (300_000, 1 << 20),
        (1 << 20, 1 << 20),
        (65_536, 65_535),
        (65_536, 65_536),
        (65_537, 65_536),
        ((1 << 20) + 1, 1 << 20),
    ],
)
def test_read_open_reads_a_file_of_at_most_limit_bytes(
    tmp_path: Path, size: int, limit: int
) -> None:
    """Around the first read's 64 KiB and around the limit, the file comes back whole and
    unchanged, or as None when it holds more than ``limit`` bytes."""
    path = tmp_path / "page.json"
    data = bytes(i % 251 for i in range(size))
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_open(fd, limit) == (data if size <= limit else None)
    finally:
        os.close(fd)


def test_read_pages_gives_bytes_or_the_file_to_read_in_chunks(tmp_path: Path) -> None:
    """A listed folder and any sequence of files give the same pairs: a small page's bytes, a
    big page's file, and the file itself for one that cannot be read (gone since listing), so
    that reading it raises the InputError where the file is recorded as read."""
    folder = tmp_path / "sync-d" / "agents"
    folder.mkdir(parents=True)
    (folder / "1.json").write_bytes(b"[]")
    (folder / "2.json").write_bytes(b"[" + b" " * 20 + b"]")
    (folder / "3.json").write_bytes(b"[]")
    listed = list_files(tmp_path, "d", "agents")
    expected = [
        ("sync-d/agents/1.json", b"[]"),
        ("sync-d/agents/2.json", listed[1]),
        ("sync-d/agents/3.json", b"[]"),
    ]
    assert list(read_pages(listed, 10)) == expected
    assert list(read_pages(list(listed), 10)) == expected
    (folder / "1.json").unlink()
    expected[0] = ("sync-d/agents/1.json", listed[0])
    assert list(read_pages(listed, 10)) == expected
    assert list(read_pages(list(listed), 10)) == expected


def test_a_file_gone_since_listing_is_recorded_and_named(tmp_path: Path) -> None:
    """Decoding a file that cannot be read records it (size 0, no hash) with the files before
    it, then stops with an InputError naming it; so does a folder gone since listing."""
    folder = tmp_path / "sync-d" / "agents"
    folder.mkdir(parents=True)
    for n in (1, 2, 3):
        (folder / f"{n}.json").write_bytes(b"[]")
    listed = list_files(tmp_path, "d", "agents")
    (folder / "2.json").unlink()
    for files in (listed, list(listed)):
        read: list[FileDigest] = []
        with pytest.raises(InputError) as raised:
            decode_files(AGENT, files, on_file=read.append)
        assert str(raised.value) == "sync-d/agents/2.json: cannot read: No such file or directory"
        assert [(d.name, d.bytes, d.sha256) for d in read] == [
            ("sync-d/agents/1.json", 2, hashlib.sha256(b"[]").hexdigest()),
            ("sync-d/agents/2.json", 0, ""),
        ]
    shutil.rmtree(folder)
    with pytest.raises(InputError) as raised:
        decode_files(AGENT, listed)
    assert str(raised.value) == "sync-d/agents/: cannot read: No such file or directory"


def test_listed_files_hold_names_and_make_input_files_on_demand(tmp_path: Path) -> None:
    """list_files keeps only the names; indexing, slicing and iterating give the same files."""
    folder = tmp_path / "sync-d" / "agent_details"
    folder.mkdir(parents=True)
    for n in (3, 1, 2):
        (folder / f"{n}.json").write_text("{}")
    files = list_files(tmp_path, "d", "agent_details")
    assert files.names.to_pylist() == ["1.json", "2.json", "3.json"]
    assert len(files) == 3
    assert [f.name for f in files] == [f"sync-d/agent_details/{n}.json" for n in (1, 2, 3)]
    assert (
        files[-1] == files[2] == InputFile("3.json", root=tmp_path, folder="sync-d/agent_details/")
    )
    assert files[1:] == [files[1], files[2]]
    assert files[::-2] == [files[2], files[0]]
    assert files[0].read_whole(10) == b"{}"
    assert files.named("sync-d/agent_details/2.json") == files[1]
    with pytest.raises(KeyError):
        files.named("sync-d/agents/2.json")


def test_positions_of_named_files_in_a_listing_or_a_list(tmp_path: Path) -> None:
    """Where each name is among the files, in their natural order; None for a name that is not
    there (another folder's, say), whether the files are a folder's listing or a plain list."""
    folder = tmp_path / "sync-d" / "agent_details"
    folder.mkdir(parents=True)
    for n in (10, 2, 1):
        (folder / f"{n}.json").write_text("{}")
    listed = list_files(tmp_path, "d", "agent_details")
    names = [f"sync-d/agent_details/{n}.json" for n in (10, 1, 3)] + ["sync-d/agents/1.json"]
    assert positions(listed, names) == [2, 0, None, None]
    assert positions(list(listed), names) == [2, 0, None, None]
    assert positions(listed, []) == []
