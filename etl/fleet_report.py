"""How a fleet's accounts ended: each one's :class:`Outcome`, the summary for a person and the
results file for a scheduler."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Outcome:
    """How one account's day ended."""

    key: str
    status: str  # succeeded, failed or refused
    rows: int = 0  # rows staged, pairs and members included
    seconds: float = 0.0
    message: str | None = None
    entities: dict[str, str] = field(default_factory=dict)  # entity -> status, as far as it got
    worker_rss_mb: int = 0  # the peak memory of the worker process that synced it, so far


def summary(day: str, outcomes: Iterable[Outcome], seconds: float) -> str:
    """A few lines for a person: counts, rate, the accounts that did not succeed with their
    reason, and the commands that show more."""
    outcomes = list(outcomes)
    by_status: dict[str, list[Outcome]] = {"succeeded": [], "failed": [], "refused": []}
    for outcome in outcomes:
        by_status[outcome.status].append(outcome)
    rows = sum(o.rows for o in outcomes)
    rate = len(outcomes) / seconds if seconds else 0.0
    lines = [
        f"day {day}: {len(outcomes)} accounts in {seconds:.1f} s ({rate * 60:,.0f} a minute), "
        f"{rows:,} rows staged",
        f"  succeeded: {len(by_status['succeeded'])}",
    ]
    for status in ("failed", "refused"):
        bad = by_status[status]
        if not bad:
            continue
        lines.append(f"  {status}: {len(bad)}")
        for outcome in sorted(bad, key=lambda o: o.key)[:10]:
            reason = (outcome.message or "").splitlines()[0] if outcome.message else ""
            lines.append(f"    {outcome.key}: {reason}")
        if len(bad) > 10:
            lines.append(f"    and {len(bad) - 10} more (see the results file, or etl accounts)")
    not_succeeded = sorted(by_status["failed"] + by_status["refused"], key=lambda o: o.key)
    if not_succeeded:
        first = not_succeeded[0]
        lines.append(
            f"next: etl status --account {first.key}; etl errors --account {first.key} --day {day}"
        )
    return "\n".join(lines)


def results_document(day: str, outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    """The results file: the same as the summary, for a scheduler."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("succeeded", "failed", "refused")}
    return {
        "day": day,
        "seconds": round(seconds, 3),
        **counts,
        "rows": sum(o.rows for o in outcomes),
        "accounts": [asdict(o) for o in outcomes],
    }
