"""The tree view: the stored group hierarchy of an account, as text or JSON, with member
counts; inactive groups, orphans and parent cycles marked."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from etl import db, hierarchy


@dataclass(frozen=True)
class Group:
    group_id: int
    name: str
    parent_id: int | None
    present: bool
    inactive: bool
    members: int
    active_members: int


@dataclass(frozen=True)
class Shown:
    """A group as the tree shows it: its depth below its top, what marks it, whether it is the
    last of its parent's children shown (None for a top)."""

    group: Group
    depth: int
    prefix: str
    last: bool | None
    orphan_of: str | None  # "absent today" or "not a known group": its parent is no present group
    cycle: list[int] | None


def tree_rows(
    conn: db.Connection, account_id: int, group_id: int | None = None
) -> list[Shown] | None:
    """The stored hierarchy of present groups in the order shown: roots first (no parent, or a
    parent that is no present group), then each parent cycle from its smallest id, its other
    members below it; every group once. ``group_id``: that group's subtree only (None if it is
    no present group)."""
    groups = {r[0]: Group(*r) for r in db.execute(conn, "view_groups", (account_id,))}
    shown = {g.group_id: g for g in groups.values() if g.present}
    children: dict[int, list[Group]] = defaultdict(list)
    for g in shown.values():
        if g.parent_id in shown:
            children[g.parent_id].append(g)
    cycles = _cycles(shown)
    on_cycle = {member: cycle for cycle in cycles for member in cycle}

    def orphan_of(g: Group) -> str | None:
        if g.parent_id is None or g.parent_id in shown:
            return None
        return "absent today" if g.parent_id in groups else "not a known group"

    if group_id is not None:
        if group_id not in shown:
            return None
        tops = [shown[group_id]]
    else:
        roots = [g for g in shown.values() if g.parent_id not in shown]
        tops = sorted(roots, key=_order) + [shown[cycle[0]] for cycle in cycles]
    rows: list[Shown] = []
    seen: set[int] = set()
    for top in tops:
        if top.group_id in seen:
            continue
        seen.add(top.group_id)
        # depth-first without recursion (a hierarchy may be thousands deep)
        stack: list[tuple[Group, int, str, bool | None]] = [(top, 0, "", None)]
        while stack:
            g, depth, prefix, last = stack.pop()
            rows.append(Shown(g, depth, prefix, last, orphan_of(g), on_cycle.get(g.group_id)))
            inner = "" if last is None else prefix + ("    " if last else "│   ")
            below = [c for c in sorted(children[g.group_id], key=_order) if c.group_id not in seen]
            seen.update(c.group_id for c in below)
            stack.extend(
                (c, depth + 1, inner, i == len(below) - 1)
                for i, c in reversed(list(enumerate(below)))
            )
    return rows


def tree_text(rows: list[Shown] | None, group_id: int | None = None, dim: bool = False) -> str:
    """The tree, one group a line with its member counts; ``[inactive]``, ``[orphan ...]`` and
    ``[cycle ...]`` mark what needs a look. ``dim``: inactive groups in faint text (a
    terminal)."""
    if rows is None:
        return f"no present group {group_id}"
    lines = []
    for row in rows:
        g = row.group
        marks = []
        if g.inactive:
            marks.append("[inactive]")
        if row.orphan_of is not None:
            marks.append(f"[orphan: parent {g.parent_id} is {row.orphan_of}]")
        if row.cycle is not None:
            marks.append(_cycle_mark(row.cycle))
        text = " ".join(
            [f"{g.name} ({g.group_id})  members {g.members}, active {g.active_members}", *marks]
        )
        text = f"\x1b[2m{text}\x1b[0m" if dim and g.inactive else text
        branch = "" if row.last is None else ("└── " if row.last else "├── ")
        lines.append(f"{row.prefix}{branch}{text}")
    return "\n".join(lines) if lines else "no groups yet"


def tree_document(account: str, rows: list[Shown] | None) -> dict[str, Any]:
    """The tree for a program: the groups in the order shown, each with its depth; each parent
    cycle listed once (from its smallest id), a group on one naming the cycle's first id."""
    cycles = {tuple(r.cycle) for r in rows or () if r.cycle is not None}
    return {
        "account": account,
        "groups": [
            {
                "group_id": r.group.group_id,
                "name": r.group.name,
                "parent_group_id": r.group.parent_id,
                "depth": r.depth,
                "inactive": r.group.inactive,
                "members": r.group.members,
                "active_members": r.group.active_members,
                "orphan": r.orphan_of,
                "cycle": None if r.cycle is None else r.cycle[0],
            }
            for r in rows or ()
        ],
        "cycles": [list(cycle) for cycle in sorted(cycles)],
    }


def _cycle_mark(cycle: list[int]) -> str:
    ids = " -> ".join(map(str, cycle[: hierarchy.CYCLE_IDS_SHOWN]))
    more = " -> ..." if len(cycle) > hierarchy.CYCLE_IDS_SHOWN else ""
    return f"[cycle of {len(cycle)}: {ids}{more}]"


def _order(g: Group) -> tuple[str, int]:
    return g.name.lower(), g.group_id


def _cycles(groups: dict[int, Group]) -> list[list[int]]:
    """Each parent cycle among ``groups`` once, as ids from its smallest id along the parents."""
    cycles: list[list[int]] = []
    seen: set[int] = set()
    for start in sorted(groups):
        path: list[int] = []
        where: dict[int, int] = {}
        node: int | None = start
        while node is not None and node in groups and node not in seen and node not in where:
            where[node] = len(path)
            path.append(node)
            node = groups[node].parent_id
        if node is not None and node in where:
            loop = path[where[node] :]
            first = loop.index(min(loop))
            cycles.append(loop[first:] + loop[:first])
        seen.update(path)
    return sorted(cycles)
