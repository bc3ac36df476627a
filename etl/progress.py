"""Progress: a live line per entity on a terminal -- the current stage, files decoded or rows
staged, their rate -- and nothing at all otherwise (piped output, JSON logs, tests)."""

from __future__ import annotations

import time
from typing import IO, Any, Protocol


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
    """One rich progress line for one entity's run, on ``stream`` (stderr, beside the logs)."""

    def __init__(self, title: str, stream: IO[str], force_terminal: bool | None = None) -> None:
        from rich.console import Console  # imported only when a terminal watches: 80 ms
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.title = title
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=Console(file=stream, force_terminal=force_terminal),
            transient=True,
        )
        self.bar.start()
        self.task: Any = None
        self.pending = 0  # steps not yet shown: rich is told ten times a second, not per file
        self.shown_at = 0.0
        self.started_at = 0.0
        self.done = 0

    def stage(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(f"{self.title}: {name}", total=total, rate="")
        self.pending = self.done = 0
        self.started_at = self.shown_at = time.monotonic()

    def advance(self, steps: int = 1) -> None:
        self.pending += steps
        now = time.monotonic()
        if self.task is None or now - self.shown_at < 0.1:
            return
        self.done += self.pending
        rate = self.done / (now - self.started_at)
        self.bar.update(self.task, advance=self.pending, rate=f"{rate:,.0f}/s")
        self.pending, self.shown_at = 0, now

    def close(self) -> None:
        if self.task is not None or self.bar.live.is_started:
            self.bar.stop()
        self.task = None
