"""The errors etl raises on purpose. Each message is written for the person running etl."""

from __future__ import annotations

from typing import Any


class EtlError(Exception):
    """Base class: the run could not do what was asked. ``str(error)`` is the one-line reason;
    ``applied`` the entities of the day that a sync applied before it, ``results`` their
    results (None: it failed before the day's first run began)."""

    exit_code = 1
    applied: tuple[str, ...] = ()  # set on the instance that a sync raises
    results: tuple[Any, ...] | None = None  # the same, as each run's RunResult


class UsageError(EtlError):
    """Raised when options or their values are wrong (an unknown day format, a bad timestamp)."""

    exit_code = 2


class InputError(EtlError):
    """Raised when a day's input for an entity is incomplete: a missing folder, a folder with no
    .json files, a file that is not JSON or whose top level has the wrong shape. Nothing of that
    entity is applied, and later entities of the run are not either."""


class RefusedError(EtlError):
    """Raised when a safety guard refuses a run: a day older than the last applied one without
    --force, or a mass removal without --allow-mass-removal. Nothing of the step is applied."""


class DatabaseError(EtlError):
    """Raised when the database fails: it cannot be reached, a statement fails, or the apply
    procedure finds a broken invariant. Driver errors are wrapped in it at the boundary."""


class LockTimeoutError(DatabaseError):
    """Raised when another etl run holds the advisory lock for longer than --lock-timeout."""


class NoSuchAccountError(EtlError):
    """Raised when a view or a deletion names an account the database does not have."""


class Interrupted(EtlError):
    """Raised when the user stops a sync (Ctrl-C): the entity under way was rolled back and its
    run ends 'interrupted'; the entities before it stay applied."""

    exit_code = 130

    def __init__(self, day: str, entity: str, applied: list[str]) -> None:
        self.day, self.entity, self.applied = day, entity, tuple(applied)
        if applied:
            message = f"interrupted: {' and '.join(applied)} of {day} applied, nothing of {entity}"
        else:
            message = f"interrupted: nothing of {entity} {day} was applied"
        super().__init__(message)


class NoDatabaseError(EtlError):
    """Raised when a view finds no database to read: the embedded one was never created."""
