"""Dry run: the exact difference a sync made to the final tables, measured inside the one
transaction that ``db.uncommitted`` rolls back afterwards."""

from __future__ import annotations

from collections import defaultdict

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


BEFORE = ("agents", "roles", "pairs", "groups", "members")  # the tables of the picture


def take_snapshot(conn: db.Connection, account_id: int) -> None:
    """A picture of the account's final tables, in temporary tables, for :func:`diff_report`.
    Taken inside ``db.uncommitted``, so that the rollback at its end takes everything away,
    ledger rows and staging included."""
    for table in BEFORE:
        db.execute(conn, f"dry_run_before_{table}", (account_id,))


def diff_report(conn: db.Connection, account_id: int, day: str, examples: int = EXAMPLES) -> str:
    """What the run changed in the account since :func:`take_snapshot`, per table and kind of
    change, with the first ``examples`` keys of each (agent/role and group/agent for pairs)."""
    found: dict[str, dict[str, tuple[int, list[str]]]] = defaultdict(dict)
    changes = db.execute(conn, "dry_run_diff", (examples, account_id))
    for entity, what, count, k1, k2, fields in changes:
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
