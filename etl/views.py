"""Views: read-only reports on what etl stored, as plain text -- the ledger (``status``), the
group hierarchy (``tree``) and a day's quarantined records (``errors``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from etl import db, hierarchy, source

ENTITY_ORDER = {"agents": 0, "roles": 1, "groups": 2}
ENDED_BADLY = ("failed", "refused", "interrupted", "abandoned")
FAILED = (*ENDED_BADLY, "running")  # listed as not succeeded
EXAMPLES = 3  # records shown per (error type, field)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: set[int]) -> str:
    """Rows under headers in aligned columns; the columns at indexes ``right`` align right."""
    cells = [list(headers), *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]
    return "\n".join(lines)


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# -- status -----------------------------------------------------------------------------------


class Run(NamedTuple):
    """A ledger row as the view_status query gives it."""

    run_id: int
    day: str
    entity: str
    status: str
    synced_at: datetime
    staged: int | None
    inserted: int | None
    updated: int | None
    unchanged: int | None
    removed: int | None
    quarantined: int | None
    message: str | None
    started_at: datetime
    finished_at: datetime | None
    runs: int  # runs of this day and entity

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


def ledger_runs(conn: db.Connection, account_id: int, day: str | None) -> list[Run]:
    """Every run of the account (of ``day``), in run order."""
    return [Run(*row) for row in db.execute(conn, "view_status", (account_id, day))]


def shown_runs(runs: list[Run], every_run: bool = False) -> tuple[list[Run], list[Run]]:
    """(the runs the table shows, the runs listed as not succeeded), in day and entity order.
    Per day and entity the table shows its last run, except that refused retries (which change
    nothing) do not hide the run before them; with ``every_run`` it shows them all."""
    by_key: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_key[(run.day, run.entity)].append(run)
    shown: list[Run] = []
    failures: list[Run] = []
    for key in sorted(by_key, key=lambda k: (source.natural_key(k[0]), ENTITY_ORDER[k[1]])):
        group = by_key[key]
        last = next((r for r in reversed(group) if r.status != "refused"), group[-1])
        shown.extend(group if every_run else [last])
        later = [r for r in group if r.run_id > last.run_id]
        failures.extend(r for r in [last, *later] if r.status in FAILED)
        if every_run:
            failures.extend(r for r in group if r.run_id < last.run_id and r.status in FAILED)
    failures.sort(key=lambda r: (source.natural_key(r.day), ENTITY_ORDER[r.entity], r.run_id))
    return shown, failures


def needs_attention(runs: list[Run], under_way: bool) -> bool:
    """Whether an entity's latest run failed, was refused, interrupted or abandoned, or is
    still 'running' while no run of the account is under way (its process died), for
    monitoring."""
    latest: dict[str, Run] = {}
    for run in runs:  # in run order
        latest[run.entity] = run
    dead = () if under_way else ("running",)
    return any(r.status in (*ENDED_BADLY, *dead) for r in latest.values())


def status_text(runs: list[Run], day: str | None, every_run: bool) -> str:
    """The ledger: per day and entity its last run (``every_run``: all runs), with status, sync
    time, start time, duration and counts; failed, refused, abandoned and still-running runs
    are listed with their message below the table."""
    shown, failures = shown_runs(runs, every_run)
    if not shown:
        return "no runs yet" if day is None else f"no runs of day {day}"
    headers = (
        "day", "entity", "run", "status", "synced at", "started at", "seconds", "staged",
        "inserted", "updated", "unchanged", "removed", "quarantined", "runs",
    )  # fmt: skip
    rows = [
        (r.day, r.entity, r.run_id, r.status, _when(r.synced_at), _when(r.started_at),
         None if r.seconds is None else f"{r.seconds:.1f}", r.staged, r.inserted, r.updated,
         r.unchanged, r.removed, r.quarantined, r.runs)
        for r in shown
    ]  # fmt: skip
    text = text_table(headers, rows, right={2, *range(6, 14)})
    if failures:
        text += "\n\nnot succeeded:\n" + "\n".join(
            f"  run {r.run_id} ({r.day} {r.entity}) {r.status}: {r.message or 'no message'}"
            for r in failures
        )
    return text


def status_document(
    account: str, runs: list[Run], every_run: bool, under_way: bool
) -> dict[str, Any]:
    """The status view for a program: the runs the table shows, every field of each, and
    whether an entity's latest run needs attention (the exit status)."""
    shown, failures = shown_runs(runs, every_run)
    return {
        "account": account,
        "needs_attention": needs_attention(runs, under_way),
        "runs": [run_document(r) for r in shown],
        "not_succeeded": [r.run_id for r in failures],
    }


def run_document(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "day": run.day,
        "entity": run.entity,
        "status": run.status,
        "synced_at": run.synced_at.astimezone(UTC).isoformat(),
        "started_at": run.started_at.astimezone(UTC).isoformat(),
        "finished_at": None
        if run.finished_at is None
        else run.finished_at.astimezone(UTC).isoformat(),
        "seconds": run.seconds,
        "staged": run.staged,
        "inserted": run.inserted,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "removed": run.removed,
        "quarantined": run.quarantined,
        "message": run.message,
        "runs": run.runs,
    }


# -- accounts ---------------------------------------------------------------------------------


def accounts_view(conn: db.Connection) -> str:
    """Every account: the days it applied (how many, and the last in day order) and its newest
    run with status."""
    rows = []
    for key, account_id, days, day, entity, run_id, status, finished in db.execute(
        conn, "view_accounts"
    ):
        last = max(days, key=source.natural_key) if days else None
        newest = f"{day} {entity} (run {run_id})" if run_id is not None else None
        when = _when(finished) if finished is not None else None
        rows.append((key, account_id, len(days or ()), last, newest, status, when))
    if not rows:
        return "no accounts yet"
    headers = ("account", "id", "days", "last day", "newest run", "status", "finished at")
    return text_table(headers, rows, right={1, 2})


# -- tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    group_id: int
    name: str
    parent_id: int | None
    present: bool
    inactive: bool
    members: int
    active_members: int


def tree_view(
    conn: db.Connection, account_id: int, group_id: int | None = None, dim: bool = False
) -> str:
    """The stored hierarchy of present groups, each with its member counts; ``[inactive]``,
    ``[orphan ...]`` and ``[cycle ...]`` mark what needs a look. Roots come first (no parent, or
    a parent that is no present group), then each parent cycle from its smallest id, its other
    members below it. Every group is shown once. ``group_id``: that group's subtree only.
    ``dim``: inactive groups in faint text (a terminal)."""
    groups = {r[0]: Group(*r) for r in db.execute(conn, "view_groups", (account_id,))}
    shown = {g.group_id: g for g in groups.values() if g.present}
    children: dict[int, list[Group]] = defaultdict(list)
    for g in shown.values():
        if g.parent_id in shown:
            children[g.parent_id].append(g)
    cycles = _cycles(shown)
    on_cycle = {member: cycle for cycle in cycles for member in cycle}

    def label(g: Group) -> str:
        marks = []
        if g.inactive:
            marks.append("[inactive]")
        if g.parent_id is not None and g.parent_id not in shown:
            known = "absent today" if g.parent_id in groups else "not a known group"
            marks.append(f"[orphan: parent {g.parent_id} is {known}]")
        if g.group_id in on_cycle:
            marks.append(_cycle_mark(on_cycle[g.group_id]))
        text = " ".join(
            [f"{g.name} ({g.group_id})  members {g.members}, active {g.active_members}"]
        )
        text = " ".join([text, *marks])
        return f"\x1b[2m{text}\x1b[0m" if dim and g.inactive else text

    if group_id is not None:
        if group_id not in shown:
            return f"no present group {group_id}"
        tops = [shown[group_id]]
    else:
        roots = [g for g in shown.values() if g.parent_id not in shown]
        tops = sorted(roots, key=_order) + [shown[cycle[0]] for cycle in cycles]
    lines: list[str] = []
    seen: set[int] = set()
    for top in tops:
        if top.group_id in seen:
            continue
        seen.add(top.group_id)
        # depth-first without recursion (a hierarchy may be thousands deep): (group, prefix, last)
        stack: list[tuple[Group, str, bool | None]] = [(top, "", None)]
        while stack:
            g, prefix, last = stack.pop()
            branch = "" if last is None else ("└── " if last else "├── ")
            lines.append(f"{prefix}{branch}{label(g)}")
            inner = "" if last is None else prefix + ("    " if last else "│   ")
            below = [c for c in sorted(children[g.group_id], key=_order) if c.group_id not in seen]
            seen.update(c.group_id for c in below)
            stack.extend(
                (c, inner, i == len(below) - 1) for i, c in reversed(list(enumerate(below)))
            )
    return "\n".join(lines) if lines else "no groups yet"


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


# -- errors -----------------------------------------------------------------------------------


def errors_view(conn: db.Connection, account_id: int, day: str, examples: int = EXAMPLES) -> str:
    """A day's quarantined records and elements, from each entity's last succeeded run of the
    day: a count per error type and field (array positions folded, ``agent_ids[]``), with the
    first ``examples`` by file name and position."""
    succeeded: dict[str, int] = {}
    for run in ledger_runs(conn, account_id, day):  # in run order: the last one stays
        if run.status == "succeeded":
            succeeded[run.entity] = run.run_id
    if not succeeded:
        return f"no succeeded run of day {day}"
    found = db.execute(conn, "view_errors", (account_id, day, examples))
    by_entity: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in found:
        by_entity[row[0]].append(row)
    lines = []
    for entity in sorted(succeeded, key=ENTITY_ORDER.__getitem__):
        rows = by_entity[entity]
        total = sum({(r[2], r[3]): r[4] for r in rows}.values())
        lines.append(f"{entity} (run {succeeded[entity]}): {_quarantined(total)}")
        last_key = None
        for _, _, error_type, field, count, record_id, file, message in rows:
            if (error_type, field) != last_key:
                lines.append(f"  {error_type} {field}: {count}")
                last_key = (error_type, field)
            record = "" if record_id is None else f" (id {record_id})"
            lines.append(f"    {file} {message}{record}")
    return "\n".join(lines)


def _quarantined(count: int) -> str:
    if count == 0:
        return "nothing quarantined"
    return f"{count} quarantined" if count != 1 else "1 quarantined"
