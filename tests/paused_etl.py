"""etl with a pause, for the tests that cut a run at a point:
``python tests/paused_etl.py POINT[:ENTITY] GATE ETL-ARGUMENTS...`` runs ``etl ETL-ARGUMENTS``,
logging ``reached`` at every point; at the point (of that entity) it logs ``paused`` and waits
while the file GATE exists (at most ten minutes), then goes on."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from etl import cli, hooks
from etl.log import get_logger

MAX_PAUSE = 600.0


def pause_at(spec: str, gate: Path) -> Callable[[str, str], None]:
    """The hook that pauses at ``spec`` (``POINT`` or ``POINT:ENTITY``) while ``gate`` exists."""
    point, _, entity = spec.partition(":")
    if point not in hooks.POINTS:
        raise SystemExit(f"{spec!r}: the points are {', '.join(hooks.POINTS)}")

    def hook(reached: str, of: str) -> None:
        get_logger().info("reached", at=reached, entity=of)
        if reached != point or entity not in ("", of):
            return
        get_logger().info("paused", at=reached, entity=of)
        deadline = time.monotonic() + MAX_PAUSE
        while gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    return hook


if __name__ == "__main__":
    hooks.add(pause_at(sys.argv[1], Path(sys.argv[2])))
    raise SystemExit(cli.main(sys.argv[3:]))
