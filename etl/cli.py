"""Command line: ``etl sync --day DAY ...`` (or ``python -m etl --day DAY``) syncs, ``etl
status|tree|errors|accounts`` shows what is stored, ``etl db start|stop|url`` and ``etl psql``
reach the database; exit 0 success, 1 a failed or refused run, 2 a usage error, 130 Ctrl-C (or
SIGTERM, for a sync). The commands live in cli_sync, cli_fleet, cli_views and cli_db."""

from __future__ import annotations

import sys

from etl.cli_db import main_db, main_psql
from etl.cli_sync import main_sync
from etl.cli_views import VIEWS, main_view

COMMANDS = {"db": main_db, "psql": main_psql}


def commands() -> str:
    """What ``etl`` alone prints: the commands, one line each."""
    lines = [
        "etl: sync help-desk admin exports (agents, roles, groups) into PostgreSQL",
        "",
        "commands:",
        "  etl sync --day DAY                      sync one day of one account",
        "  etl sync --day FIRST..LAST              sync the days from FIRST to LAST, in order",
        "  etl sync --day DAY --accounts-dir DIR   sync one day of many accounts",
        *(f"  etl {name:<35} {text.split(';')[0].split(', ')[0]}" for name, text in VIEWS.items()),
        "  etl db start|stop|url                   keep the embedded server running, stop it, "
        "its URL",
        "  etl psql                                psql on etl's database",
        "",
        "`etl COMMAND --help` for its options; `etl --version`.",
        "Exit status: 0 success, 1 a failed or refused run, 2 a usage error.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(commands(), file=sys.stderr)
        return 2
    if argv[0] in VIEWS:
        return main_view(argv[0], argv[1:])
    if argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return main_sync(argv[1:] if argv[0] == "sync" else argv)
