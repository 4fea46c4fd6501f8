"""Kill dstream and each provider at random moments across mssql-cdc → asb-queues: the consumer
still gets every committed change once, in commit order per table."""

from __future__ import annotations

from pathlib import Path

from .scenario import run_scenario

KILLS = 20


def test_random_kills_lose_nothing_duplicate_nothing_and_keep_order(pyz: Path, tmp_path: Path, seed: int) -> None:
    report = run_scenario(tmp_path / "scenario", pyz, seed, KILLS, progress=print)
    print(report.summary())
    assert sum(report.kills.values()) >= KILLS, report.summary()
    assert {kill.split()[0] for kill in report.kills} == {"dstream", "input", "output"}, report.summary()
    assert report.written > 0 and report.ok, report.summary()
