"""structlog configuration (done once, by the CLI), the masking of secrets in URLs, and the
process's peak memory for reports."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from etl.imports import without

# structlog imports rich, when installed (the prefect extra brings it), for the tracebacks of
# its console renderer: a slow import at every etl process's start, for tracebacks that look
# as they do where rich is not installed.
with without("rich"):
    import structlog


def configure(*, verbose: bool = False, fmt: str | None = None, quiet: bool = False) -> None:
    """Send log events to stderr: console rendering on a terminal, JSON lines otherwise.
    ``quiet``: none at all (a fleet's workers, whose parent reports on a terminal)."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=colors_wanted())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.CRITICAL if quiet else logging.DEBUG if verbose else logging.INFO
        ),
        # A line and its newline in one write: a fleet's workers share stderr.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def colors_wanted() -> bool:
    """Colors on a terminal, unless NO_COLOR is set to anything but empty (no-color.org)."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("etl")  # type: ignore[no-any-return]


def bound(**values: Any) -> contextlib.AbstractContextManager[Any]:
    """Every event logged inside carries ``values`` (an account's key, say)."""
    return structlog.contextvars.bound_contextvars(**values)


# user:password@ in a URL, anywhere in a text (a driver's message may quote the URL); the
# password runs to the last @ before the host, as an unencoded @ in it is a common mistake
_USER_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/?#@\s\"']*):([^\s\"'/?#]+)@", re.I)
# password=... as a URL parameter or in a key=value connection string ('quoted' or bare)
_PASSWORD_PARAM = re.compile(r"((?:^|[?&\s])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&#]*)", re.I)


def mask_url(url: str) -> str:
    """Return ``url`` with any password -- in the user part, as a ``password=`` parameter, or in
    a key=value connection string -- replaced by ``***`` (user names, hosts and the rest stay)."""
    return _PASSWORD_PARAM.sub(r"\1***", _USER_PASSWORD.sub(r"\1:***@", url))


def mask_secrets(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with ``url``'s password masked wherever it
    appears, also alone."""
    masked = mask_url(text)
    for pattern in (_USER_PASSWORD, _PASSWORD_PARAM):
        for found in pattern.finditer(url):
            secret = found.group(2).strip("'")
            # an unencoded @ splits it: the driver may quote a piece as a host name
            for piece in sorted({secret, *secret.split("@")}, key=len, reverse=True):
                if len(piece) >= 3:
                    masked = masked.replace(piece, "***")
    return masked


def peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM) in kB, 0 where /proc does not tell it.
    ``getrusage`` would not do: its maximum carries over from the parent across exec."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) if found else 0
