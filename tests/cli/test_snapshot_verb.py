"""`dstream snapshot TASK --table T` around any input: refused while the task runs, one line when the
input cannot take on-demand snapshots, and never a checkpoint written then (the mssql-cdc side is
tests/mssql/test_snapshot_e2e.py)."""

from __future__ import annotations

import signal
from pathlib import Path

from state.backend import ALREADY_RUNNING

from ._support import checkpoints, error_line, files_output, generator_input, ok, start, wait_for, write_task
from .test_promises import scripted


def test_snapshot_is_refused_while_the_task_runs(dstream, pyz: Path, tmp_path: Path) -> None:
    write_task(tmp_path, "busy", generator_input(0), files_output())
    ok(dstream("init", "task.hcl"))
    runner = start(pyz, "run", "task.hcl", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "out" / "Persons_cdc_events.jsonl").stat().st_size > 0, 30, "the run to stream")
        error_line(dstream("snapshot", "task.hcl", "--table", "dbo.Persons"), 4, ALREADY_RUNNING)
    finally:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 0


def test_an_input_without_on_demand_snapshots_is_one_line_and_changes_no_checkpoint(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "plain", scripted(tmp_path, "input", count=3), files_output())
    ok(dstream("init", "task.hcl"))
    ok(dstream("run", "--once", "task.hcl"))
    before = checkpoints(tmp_path / ".dstream" / "plain.checkpoints.json")
    error_line(dstream("snapshot", "task.hcl", "--table", "dbo.S"), 5, "input provider './scripted.py' does not support on-demand snapshots")
    assert checkpoints(tmp_path / ".dstream" / "plain.checkpoints.json") == before == {"S": {"i": 3}}


def test_snapshot_needs_a_table(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "plain", scripted(tmp_path, "input"), files_output())
    error_line(dstream("snapshot", "task.hcl"), 3, "--table")
