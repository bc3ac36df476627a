"""Points of a run that may be watched from outside: at each, :func:`reached` calls the hooks
added with :func:`add` -- none in a normal run. The test suite adds one that says when a run
reaches each point and pauses it at one, to kill the process or break its connection right
there, or to act once the run is known to be there (tests/paused_etl.py)."""

from __future__ import annotations

from collections.abc import Callable

POINTS = (
    "decode",  # input read and recorded in the ledger; nothing staged
    "stage",  # staging rows sent, their transaction not committed
    "apply",  # the procedure has run, its transaction not committed
    "settle",  # about to wait for the entity's apply, on its own thread, to end (again after
    # each Ctrl-C heard meanwhile)
)

Hook = Callable[[str, str], None]  # (point, entity)
_hooks: list[Hook] = []


def add(hook: Hook) -> None:
    _hooks.append(hook)


def reached(point: str, entity: str) -> None:
    for hook in _hooks:
        hook(point, entity)
