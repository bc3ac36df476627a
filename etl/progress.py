"""Progress: a live line per entity on a terminal -- the current stage, files decoded or rows
staged, their rate -- and nothing at all otherwise (piped output, JSON logs, tests)."""

from __future__ import annotations

import os
import time
from typing import IO, Protocol


class Progress(Protocol):
    def stage(self, name: str, total: int | None = None) -> None:
        """A new stage begins; ``total`` is how many steps it has, when known."""

    def advance(self, steps: int = 1) -> None: ...

    def close(self) -> None:
        """Take the line off the screen (the summary log line follows)."""


class NoProgress:
    """What runs when nobody watches a terminal."""

    def stage(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class TerminalProgress:
    """One live line for one entity's run on ``stream`` (stderr, beside the logs), redrawn in
    place at most ten times a second and taken away at the end.

    Plain text with a carriage return: with a terminal library installed, every run paid for it
    at start-up (structlog imports rich's tracebacks whenever rich is there: 0.1 s of 0.75)."""

    BAR = 20  # characters of the bar, when the stage's total is known

    def __init__(self, title: str, stream: IO[str], width: int | None = None) -> None:
        self.title, self.stream = title, stream
        self.width = width or _columns(stream)
        self.name = ""
        self.total: int | None = None
        self.done = 0
        self.started_at = self.shown_at = time.monotonic()
        self.drawn = False

    def stage(self, name: str, total: int | None = None) -> None:
        self.name, self.total, self.done = name, total, 0
        self.started_at = time.monotonic()
        self.draw(self.started_at)

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        now = time.monotonic()
        if now - self.shown_at >= 0.1:
            self.draw(now)

    def line(self, now: float) -> str:
        """The line as drawn at ``now``: stage, bar and count, rate, elapsed seconds."""
        elapsed = now - self.started_at
        parts = [f"{self.title}: {self.name}"]
        if self.total:
            filled = self.BAR * min(self.done, self.total) // self.total
            parts.append(f"[{'#' * filled}{'-' * (self.BAR - filled)}]")
            parts.append(f"{self.done:,}/{self.total:,}")
        elif self.done:
            parts.append(f"{self.done:,}")
        if self.done and elapsed > 0:
            parts.append(f"{self.done / elapsed:,.0f}/s")
        parts.append(f"{elapsed:.1f} s")
        return "  ".join(parts)

    def draw(self, now: float) -> None:
        text = self.line(now)[: self.width - 1]  # never wrapped: \r redraws one line only
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()
        self.shown_at, self.drawn = now, True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self.drawn = False


def _columns(stream: IO[str]) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 80
    return columns or 80  # a terminal whose size was never set says 0


class FleetProgress:
    """One live line for a fleet on ``stream``: accounts done of all, failures so far, rows a
    second and the time left, redrawn as each account ends."""

    def __init__(self, title: str, accounts: int, stream: IO[str]) -> None:
        self.title, self.accounts, self.stream = title, accounts, stream
        self.width = _columns(stream)
        self.done = self.failed = self.rows = 0
        self.started_at = time.monotonic()

    def account_done(self, ok: bool, rows: int) -> None:
        self.done += 1
        self.failed += not ok
        self.rows += rows
        self.draw(time.monotonic())

    def line(self, now: float) -> str:
        elapsed = max(now - self.started_at, 1e-9)
        left = (self.accounts - self.done) * elapsed / self.done if self.done else None
        parts = [
            f"{self.title}: {self.done:,}/{self.accounts:,} accounts",
            f"{self.failed:,} failed or refused",
            f"{self.rows / elapsed:,.0f} rows/s",
            f"{elapsed:.0f} s",
        ]
        if left is not None:
            parts.append(f"about {left:.0f} s left")
        return "  ".join(parts)

    def draw(self, now: float) -> None:
        self.stream.write(f"\r{self.line(now)[: self.width - 1]}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()
