"""`init` while `run` streams: refused (exit 4, the run lock is held), so a queue replace can never
delete what the running output is appending to; the consumer loses nothing."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from .scenario import QUEUE, TASK, Scenario
from .writer import TABLES

# enable_partitioning cannot change in place: a plan of this task replaces (deletes) both queues
REPLACING_TASK = TASK.replace("requires_duplicate_detection = true", "requires_duplicate_detection = true\n        enable_partitioning          = true")


def wait_until_delivering(scenario: Scenario, timeout: float = 30.0) -> None:
    assert scenario.peers is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queues = scenario.peers.amqp_stats().get("queues", {})
        if all(queues.get(QUEUE.format(table=t), {}).get("accepted", 0) > 0 for t in TABLES):
            return
    raise AssertionError("the run delivered nothing within 30 s")


def test_init_while_run_streams_is_refused_and_loses_nothing(pyz: Path, tmp_path: Path, seed: int) -> None:
    with Scenario(tmp_path / "scenario", pyz, seed) as scenario:
        scenario.init()
        scenario.start_writer()
        run, _ = scenario.start("run")
        wait_until_delivering(scenario)
        (scenario.dir / "task.hcl").write_text(REPLACING_TASK)
        init_code, init_text = scenario.dstream("init")
        (scenario.dir / "task.hcl").write_text(TASK)
        time.sleep(1.0)  # the run goes on streaming after the refused init
        run.send_signal(signal.SIGTERM)
        run_code = run.wait(60)
        report = scenario.finish()
    print(report.summary())
    assert report.written > 0 and report.ok, report.summary()
    assert run_code == 0, f"run exit {run_code}"
    assert init_code == 4, init_text
    assert init_text.strip().splitlines()[-1].startswith("Error: task is already running"), init_text
