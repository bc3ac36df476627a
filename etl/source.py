"""Input discovery: the sync days under a data folder and the JSON files of each entity."""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, overload

import pyarrow as pa
import pyarrow.compute as pc

from etl.errors import InputError

DAY_PREFIX = "sync-"
_FIRST_READ = 1 << 16


def natural_key(text: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key under which ``day2`` < ``day10`` and ``2.json`` < ``10.json``. Names equal but for
    case or leading zeros (``a.json``/``A.json``, ``1.json``/``01.json``) fall back to plain
    string order, so the order never depends on the file system."""
    parts = tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))
    return parts, text


@functools.lru_cache(maxsize=4096)
def day_key(day: str) -> tuple[tuple[str | int, ...], str]:
    """:func:`natural_key` of a day label, remembered: a worker checks each run's day against
    every day its account's entity was applied for, and the accounts of a fleet share their
    labels."""
    return natural_key(day)


# A number without leading zeros plus .json, of at most 18 digits (an int64 holds it).
_PLAIN_NUMBER = r"^[1-9][0-9]{0,17}\.json$"
# Arrow compiles the pattern at every call, which costs more than matching a small folder's
# names with Python's compiled copy (the whole name, ASCII digits), which matches alike.
_PLAIN_NUMBER_RE = re.compile(_PLAIN_NUMBER, re.ASCII)
FEW_NAMES = 200  # up to this many names, the plain-number check and sort run in Python


def sort_naturally(names: list[str]) -> pa.Array:
    """File names sorted by :func:`natural_key`, as an Arrow array. When every name is a plain
    number plus ``.json`` (one file per agent), that order is the numbers' order: sorted in
    Arrow, far faster than a Python sort by number, or in Python for a few names."""
    if len(names) <= FEW_NAMES:
        if all(_PLAIN_NUMBER_RE.fullmatch(name) for name in names):
            return pa.array(sorted(names, key=lambda name: int(name[:-5])), pa.string())
    else:
        array = pa.array(names, pa.string())
        if pc.all(pc.match_substring_regex(array, _PLAIN_NUMBER)).as_py() is not False:
            numbers = pc.cast(pc.utf8_slice_codeunits(array, 0, -5), pa.int64())
            return array.take(pc.sort_indices(numbers))
    return pa.array(sorted(names, key=natural_key), pa.string())


def list_days(data_dir: Path) -> list[str]:
    """The day labels under ``data_dir`` (folders named ``sync-<day>``), in natural order."""
    days = [p.name[len(DAY_PREFIX) :] for p in data_dir.glob(f"{DAY_PREFIX}*") if p.is_dir()]
    return sorted(days, key=natural_key)


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input page, read only when it is decoded: ``data`` when given, else the file
    ``name`` under ``root``."""

    base: str  # the file's own name, or its whole name when ``folder`` is empty
    data: bytes | None = None
    root: Path | None = None
    folder: str = ""  # "sync-<day>/<folder>/", one string shared by the folder's files

    @property
    def name(self) -> str:
        """The path relative to the data folder, as recorded in errors and the ledger."""
        return self.folder + self.base

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        try:
            return open(self.path(), "rb")
        except OSError as error:
            raise InputError(f"{self.name}: cannot read: {error.strerror}") from error

    def read_whole(self, limit: int) -> bytes | None:
        """The file's bytes if it holds at most ``limit`` of them, else None (read it with
        :meth:`open`)."""
        if self.data is not None:
            return self.data if len(self.data) <= limit else None
        try:
            fd = os.open(self.path(), os.O_RDONLY)
            try:
                return read_open(fd, limit)
            finally:
                os.close(fd)
        except OSError as error:
            raise InputError(f"{self.name}: cannot read: {error.strerror}") from error

    def path(self) -> str:
        return f"{self.root}/{self.folder}{self.base}" if self.root else self.name


class FolderFiles(Sequence[InputFile]):
    """The input files of one folder, in order: only their names are held, in one Arrow array
    (a million names took 88 MB as Python strings, 25 MB there), and an :class:`InputFile` is
    made when one is asked for."""

    def __init__(self, root: Path, folder: str, names: list[str] | pa.Array) -> None:
        self.root, self.folder = root, folder
        self.names = names if isinstance(names, pa.Array) else pa.array(names, pa.string())

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> InputFile: ...
    @overload
    def __getitem__(self, index: slice) -> list[InputFile]: ...
    def __getitem__(self, index: int | slice) -> InputFile | list[InputFile]:
        if isinstance(index, slice):
            return [self._file(name) for name in self.names[index].to_pylist()]
        return self._file(self.names[index].as_py())

    def __iter__(self) -> Iterator[InputFile]:
        for start in range(0, len(self.names), 4096):
            yield from map(self._file, self.names.slice(start, 4096).to_pylist())

    def read_pages(self, limit: int) -> Iterator[tuple[str, bytes | InputFile]]:
        """Like :func:`read_pages`, with names opened relative to the open folder."""
        try:
            folder = os.open(self.root / self.folder, os.O_RDONLY)
        except OSError as error:
            raise InputError(f"{self.folder}: cannot read: {error.strerror}") from error
        try:
            for start in range(0, len(self.names), 4096):
                for base in self.names.slice(start, 4096).to_pylist():
                    try:
                        fd = os.open(base, os.O_RDONLY, dir_fd=folder)
                        try:
                            data = read_open(fd, limit)
                        finally:
                            os.close(fd)
                    except OSError:
                        data = None  # the file's own reading says why, for the ledger too
                    yield self.folder + base, (self._file(base) if data is None else data)
        finally:
            os.close(folder)

    def named(self, name: str) -> InputFile:
        """The file whose :attr:`InputFile.name` is ``name``, without a search."""
        if not name.startswith(self.folder):
            raise KeyError(name)
        return self._file(name[len(self.folder) :])

    def _file(self, name: str) -> InputFile:
        return InputFile(name, root=self.root, folder=self.folder)


def read_pages(files: Iterable[InputFile], limit: int) -> Iterator[tuple[str, bytes | InputFile]]:
    """Each file's name with its bytes when it holds at most ``limit`` of them (most pages, read
    whole), else with the file itself, to be read a chunk at a time: also when it cannot be
    read, so that its reading raises the InputError where the file is recorded as read."""
    if isinstance(files, FolderFiles):
        yield from files.read_pages(limit)
        return
    for file in files:
        try:
            data = file.read_whole(limit)
        except InputError:
            data = None
        yield file.name, (file if data is None else data)


def read_open(fd: int, limit: int) -> bytes | None:
    """The open file's bytes if it holds at most ``limit`` of them, else None. A small file takes
    a read of 64 KiB and the one that finds its end, without ``fstat``: for the many small files
    of a day, 4.9 against 7.2 us per file."""
    want = _FIRST_READ if limit >= _FIRST_READ else limit + 1
    data = os.read(fd, want)
    if len(data) < want:  # the common case: the next read finds the end
        more = os.read(fd, want)
        if not more:
            return data
    elif len(data) > limit or os.fstat(fd).st_size > limit:
        return None  # too big, said without reading it all
    else:
        more = b""
    parts = [data, more]
    size = len(data) + len(more)
    while size <= limit:
        part = os.read(fd, min(size, limit + 1 - size))  # the reads double in size
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
    return None


def positions(files: Sequence[InputFile], names: Sequence[str]) -> list[int | None]:
    """Where each of ``names`` is among ``files`` (None where it is not): one hash lookup for a
    folder listing, whatever its size."""
    if isinstance(files, FolderFiles):
        bases = [n[len(files.folder) :] if n.startswith(files.folder) else None for n in names]
        found: list[int | None] = pc.index_in(pa.array(bases, pa.string()), files.names).to_pylist()
        return found
    where = {file.name: n for n, file in enumerate(files)}
    return [where.get(name) for name in names]


def file_named(files: Sequence[InputFile], name: str) -> InputFile:
    """The file called ``name`` among ``files``: made directly from a folder listing (a scan of a
    million listed files took 3 s), searched for in any other sequence."""
    if isinstance(files, FolderFiles):
        return files.named(name)
    return next(f for f in files if f.name == name)


def list_files(data_dir: Path, day: str, folder: str) -> FolderFiles:
    """The ``*.json`` entries of one entity folder, in natural order of their names; nothing is
    read yet. Every such entry is a page of the snapshot: one that is no readable file (a
    broken link, a folder) fails its entity when it is read, never left out unsaid. A missing
    or unreadable folder, one without .json entries, or a name that is not UTF-8 means the
    day's snapshot cannot be read whole."""
    path = data_dir / f"{DAY_PREFIX}{day}" / folder
    try:
        with os.scandir(path) as entries:
            names = [e.name for e in entries if e.name.endswith(".json")]
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(
            f"{path}: folder not found; the {folder} snapshot of {day} is missing"
        ) from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    if not names:
        raise InputError(f"{path}: no .json files; the {folder} snapshot of {day} is empty")
    for name in names:
        try:
            name.encode()
        except UnicodeEncodeError:
            shown = os.fsencode(name).decode("ascii", "backslashreplace")
            raise InputError(f"{path}/{shown}: the file name is not UTF-8; rename it") from None
    return FolderFiles(data_dir, f"{DAY_PREFIX}{day}/{folder}/", sort_naturally(names))
