"""Views: read-only reports on what etl stored, as text or JSON -- the ledger (``status``), the
accounts, and a day's quarantined records (``errors``); the group hierarchy is views_tree."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from etl import db, source

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


def account_rows(conn: db.Connection) -> list[dict[str, Any]]:
    """Every account: the days it applied (how many, and the last in day order) and its newest
    run with status."""
    accounts = []
    for key, account_id, days, day, entity, run_id, status, finished in db.execute(
        conn, "view_accounts"
    ):
        accounts.append(
            {
                "account": key,
                "account_id": account_id,
                "days": len(days or ()),
                "last_day": max(days, key=source.natural_key) if days else None,
                "newest_run": None
                if run_id is None
                else {"run_id": run_id, "day": day, "entity": entity, "status": status},
                "finished_at": None if finished is None else finished.astimezone(UTC).isoformat(),
            }
        )
    return accounts


def accounts_text(accounts: list[dict[str, Any]]) -> str:
    if not accounts:
        return "no accounts yet"
    rows = []
    for a in accounts:
        run = a["newest_run"]
        newest = None if run is None else f"{run['day']} {run['entity']} (run {run['run_id']})"
        finished = (
            None if a["finished_at"] is None else _when(datetime.fromisoformat(a["finished_at"]))
        )
        status = None if run is None else run["status"]
        rows.append(
            (a["account"], a["account_id"], a["days"], a["last_day"], newest, status, finished)
        )
    headers = ("account", "id", "days", "last day", "newest run", "status", "finished at")
    return text_table(headers, rows, right={1, 2})


# -- errors -----------------------------------------------------------------------------------


def error_rows(
    conn: db.Connection, account_id: int, day: str, examples: int = EXAMPLES
) -> list[dict[str, Any]]:
    """A day's quarantined records and elements per entity, from each entity's last succeeded
    run of the day: a count per error type and field (array positions folded, ``agent_ids[]``),
    with the first ``examples`` by file name and position."""
    succeeded: dict[str, int] = {}
    for run in ledger_runs(conn, account_id, day):  # in run order: the last one stays
        if run.status == "succeeded":
            succeeded[run.entity] = run.run_id
    found = db.execute(conn, "view_errors", (account_id, day, examples))
    kinds: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    for entity, _, error_type, field, count, record_id, file, message in found:
        kind = kinds[entity].setdefault(
            (error_type, field),
            {"error_type": error_type, "field": field, "count": count, "examples": []},
        )
        kind["examples"].append({"file": file, "message": message, "record_id": record_id})
    return [
        {
            "entity": entity,
            "run_id": succeeded[entity],
            "quarantined": sum(k["count"] for k in kinds[entity].values()),
            "errors": list(kinds[entity].values()),
        }
        for entity in sorted(succeeded, key=ENTITY_ORDER.__getitem__)
    ]


def errors_text(
    entities: list[dict[str, Any]], day: str, account: str, other_runs: list[Run]
) -> str:
    """The day's quarantined records by entity, type and field, with examples; if no run of the
    day succeeded, that, and where to see why its runs did not (``other_runs``)."""
    if not entities:
        if not other_runs:
            return f"no succeeded run of day {day}"
        statuses = ", ".join(dict.fromkeys(f"{r.entity} {r.status}" for r in other_runs))
        return (
            f"no succeeded run of day {day} ({statuses}): its bad records are recorded when a run "
            f"of it succeeds; etl status --account {account} --day {day} says why"
        )
    lines = []
    for entity in entities:
        lines.append(
            f"{entity['entity']} (run {entity['run_id']}): {_quarantined(entity['quarantined'])}"
        )
        for kind in entity["errors"]:
            lines.append(f"  {kind['error_type']} {kind['field']}: {kind['count']}")
            for e in kind["examples"]:
                record = "" if e["record_id"] is None else f" (id {e['record_id']})"
                lines.append(f"    {e['file']} {e['message']}{record}")
    return "\n".join(lines)


def _quarantined(count: int) -> str:
    if count == 0:
        return "nothing quarantined"
    return f"{count} quarantined" if count != 1 else "1 quarantined"
