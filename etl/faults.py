"""A test hook: pause a run at a named point, so a test can kill the process or break its
database connection right there.

The CLI configures it from ``ETL_TEST_PAUSE_AT`` (``POINT`` or ``POINT:ENTITY``) and
``ETL_TEST_PAUSE_GATE`` (a file). At the point the run logs ``paused`` and waits while the gate
file exists (without a gate: ``MAX_PAUSE`` seconds), then goes on. Unconfigured, a point costs
one comparison.
"""

from __future__ import annotations

import time
from pathlib import Path

from etl.errors import UsageError
from etl.log import get_logger

POINTS = (
    "decode",  # input read and recorded in the ledger; nothing staged
    "stage",  # staging rows sent, their transaction not committed
    "apply",  # the procedure has run, its transaction not committed
)
MAX_PAUSE = 600.0

_pause_at: tuple[str, str | None] | None = None
_gate: Path | None = None


def configure(spec: str | None, gate: Path | None) -> None:
    """Pause at ``spec`` (``POINT`` or ``POINT:ENTITY``) while ``gate`` exists; None: never."""
    global _pause_at, _gate
    if not spec:
        _pause_at, _gate = None, None
        return
    point, _, entity = spec.partition(":")
    if point not in POINTS:
        raise UsageError(f"ETL_TEST_PAUSE_AT={spec!r}: the points are {', '.join(POINTS)}")
    _pause_at, _gate = (point, entity or None), gate


def pause_point(point: str, entity: str) -> None:
    """Wait here while the gate exists, if the hook names this point (and entity)."""
    if _pause_at is None or _pause_at[0] != point or _pause_at[1] not in (None, entity):
        return
    get_logger().info("paused", at=point, entity=entity)
    deadline = time.monotonic() + MAX_PAUSE
    while (_gate is None or _gate.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
