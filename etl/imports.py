"""Imports that third-party modules make only because a package happens to be installed."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def without(*names: str) -> Iterator[None]:
    """Inside, ``import NAME`` fails (ImportError) for each of ``names`` not imported yet, as
    if it were not installed; after, it imports as usual. For modules that import an optional
    package at once to offer something etl never uses, imported inside at a module's top (the
    hiding is the process's, for every thread)."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
