"""The benchmark runs end to end at scale S and reports what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale import STAGES, bench


def test_bench_at_scale_s_reports_every_day_and_a_harmless_rerun(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two S days on the test server: every stage timed, the rows each day stages, a floor with
    its three parts, and a re-run of the last day that changes nothing."""
    monkeypatch.setenv("ETL_DATABASE_URL", database_url)
    report = bench("S", 2, workdir=tmp_path)
    assert report["scale"] == "S"
    assert report["rerun_changed"] == 0
    assert [(day, f["rows"]) for day, f in report["days"].items()] == [
        ("day1", 7491),
        ("day2", 7349),
    ]
    for figures in report["days"].values():
        assert set(figures["stages_s"]) == set(STAGES)
        assert figures["peak_rss_mb"] > 0
        assert set(figures["floor"]) == {"read_s", "decode_s", "load_s", "total_s"}
        assert figures["floor"]["total_s"] > 0
