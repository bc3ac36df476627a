"""structlog configuration (done once, by the CLI) and the masking of secrets in URLs."""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit, urlunsplit

import structlog


def configure(*, verbose: bool = False, fmt: str | None = None) -> None:
    """Send log events to stderr: console rendering on a terminal, JSON lines otherwise."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("etl")  # type: ignore[no-any-return]


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user names and hosts stay)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
