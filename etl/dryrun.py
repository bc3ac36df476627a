"""Dry run: every stage of a sync, applied inside one transaction that is rolled back, and the
exact difference it made to the final tables, printed before the rollback."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from etl import db

EXAMPLES = 5  # keys shown per kind of change
KINDS = {  # table -> kinds of change, in the order they are reported
    "agents": ("new", "changed", "removed", "back", "turned inactive", "turned active"),
    "roles": (
        "new", "changed", "removed", "back", "pairs assigned", "pairs removed", "pairs re-assigned",
    ),
    "groups": (
        "new", "changed", "removed", "back", "turned inactive", "turned active", "members added",
        "members removed",
    ),
}  # fmt: skip


@contextmanager
def rolled_back(conn: db.Connection) -> Iterator[None]:
    """Inside, commits are skipped and a picture of the final tables is taken first; at the end
    everything since is rolled back, ledger rows and staging included."""
    with db.uncommitted(conn):
        db.execute_script(conn, "dry_run_snapshot")
        yield


def diff_report(conn: db.Connection, day: str, examples: int = EXAMPLES) -> str:
    """What the run changed since :func:`rolled_back` began, per table and kind of change, with
    the first ``examples`` keys of each (agent/role and group/agent for pairs)."""
    found: dict[str, dict[str, tuple[int, list[str]]]] = defaultdict(dict)
    for entity, what, count, k1, k2, fields in db.execute(conn, "dry_run_diff", (examples,)):
        key = str(k1) if k2 is None else f"{k1}/{k2}"
        if fields:
            key += f" ({fields.replace(',', ', ')})"
        found[entity].setdefault(what, (count, []))[1].append(key)
    lines = [f"dry run of {day}: rolled back, nothing was stored"]
    for entity, kinds in KINDS.items():
        changes = [(what, *found[entity][what]) for what in kinds if what in found[entity]]
        summary = ", ".join(f"{count} {what}" for what, count, _ in changes) or "no change"
        lines.append(f"{entity}: {summary}")
        for what, count, keys in changes:
            more = f" and {count - len(keys)} more" if count > len(keys) else ""
            lines.append(f"  {what}: {', '.join(keys)}{more}")
    return "\n".join(lines)
