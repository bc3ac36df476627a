"""Input discovery: the sync days under a data folder and the JSON files of each entity."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from etl.errors import InputError

DAY_PREFIX = "sync-"


def natural_key(text: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key under which ``day2`` < ``day10`` and ``2.json`` < ``10.json``. Names equal but for
    case or leading zeros (``a.json``/``A.json``, ``1.json``/``01.json``) fall back to plain
    string order, so the order never depends on the file system."""
    parts = tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))
    return parts, text


def list_days(data_dir: Path) -> list[str]:
    """The day labels under ``data_dir`` (folders named ``sync-<day>``), in natural order."""
    days = [p.name[len(DAY_PREFIX) :] for p in data_dir.glob(f"{DAY_PREFIX}*") if p.is_dir()]
    return sorted(days, key=natural_key)


@dataclass(frozen=True)
class InputFile:
    """One input page: its bytes and what the ledger records of it."""

    name: str  # path relative to the data folder, as recorded in errors and the ledger
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def ledger_entry(self) -> dict[str, object]:
        return {
            "file": self.name,
            "bytes": self.size,
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }


def list_files(data_dir: Path, day: str, folder: str) -> list[Path]:
    """The ``*.json`` files of one entity folder, in natural order of their names.

    A missing folder or one without .json files means the day's snapshot is incomplete.
    """
    path = data_dir / f"{DAY_PREFIX}{day}" / folder
    if not path.is_dir():
        raise InputError(f"{path}: folder not found; the {folder} snapshot of {day} is missing")
    files = sorted(
        (p for p in path.glob("*.json") if p.is_file()), key=lambda p: natural_key(p.name)
    )
    if not files:
        raise InputError(f"{path}: no .json files; the {folder} snapshot of {day} is empty")
    return files


def read_file(path: Path, data_dir: Path) -> InputFile:
    try:
        name = path.relative_to(data_dir).as_posix()
    except ValueError:
        name = path.as_posix()
    try:
        return InputFile(name=name, data=path.read_bytes())
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror}") from error
