"""The benchmark generator: deterministic, and its days sync as the contract says."""

from __future__ import annotations

from pathlib import Path

from conftest import rows, sync

from etl import db
from etl.synth import generate


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.json"))}


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    """Two runs with one seed write identical days; another seed writes other days."""
    generate("S", 2, 7, tmp_path / "a", bad_rate=0.01)
    generate("S", 2, 7, tmp_path / "b", bad_rate=0.01)
    generate("S", 2, 8, tmp_path / "c", bad_rate=0.01)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert tree(tmp_path / "a") != tree(tmp_path / "c")
    assert len(list((tmp_path / "a" / "sync-day1" / "agent_details").iterdir())) == 1_000


def test_clean_days_load_without_error_rows(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """Scale S without bad records: two days load with no error row and the day-2 churn."""
    generate("S", 2, 1, tmp_path)
    for day in ("day1", "day2"):
        assert sync(database_url, day, data_dir=tmp_path) == 0
    assert rows(conn, "SELECT count(*) FILTER (WHERE present), count(*) FROM etl.agents") == [
        (990, 1010)
    ]
    assert rows(conn, "SELECT count(*) FILTER (WHERE present), count(*) FROM etl.groups") == [
        (200, 203)
    ]
    assert rows(
        conn,
        "SELECT (SELECT count(*) FROM etl.agent_pipeline_errors)"
        " + (SELECT count(*) FROM etl.role_pipeline_errors)"
        " + (SELECT count(*) FROM etl.group_pipeline_errors)",
    ) == [(0,)]


def test_bad_records_are_quarantined_by_type(
    tmp_path: Path, database_url: str, conn: db.Connection
) -> None:
    """With --bad-rate 0.02 every kind of bad record the generator writes is quarantined."""
    generate("S", 1, 1, tmp_path, bad_rate=0.02)
    assert sync(database_url, "day1", data_dir=tmp_path) == 0
    counts = rows(
        conn,
        "SELECT 'agent', error_type, count(*) FROM etl.agent_pipeline_errors GROUP BY 2"
        " UNION ALL SELECT 'role', error_type, count(*) FROM etl.role_pipeline_errors GROUP BY 2"
        " UNION ALL SELECT 'group', error_type, count(*) FROM etl.group_pipeline_errors"
        " GROUP BY 2 ORDER BY 1, 2",
    )
    assert counts == [
        ("agent", "DUPLICATE_RECORD", 1),
        ("agent", "VALIDATION_ERROR", 12),
        ("group", "DUPLICATE_RECORD", 1),
        ("group", "HIERARCHY_CYCLE", 2),
        ("group", "INVALID_AGENT_ID", 50),  # members whose agent record was spoiled
        ("group", "INVALID_MAPPING", 1),
        ("group", "ORPHAN_PARENT", 4),  # parents whose group record was spoiled
        ("group", "VALIDATION_ERROR", 3),
        ("role", "DUPLICATE_RECORD", 1),
        ("role", "INVALID_AGENT_ID", 32),
        ("role", "VALIDATION_ERROR", 20),  # agent_details records: 2% of 1,000
    ]
