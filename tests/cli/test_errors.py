"""Bad input, as a user meets it: the documented exit code and exactly one "Error:" line, never a traceback.

Exit codes (dstream.py): 1 error, 3 usage or task file, 4 locked / already running, 5 provider failed.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from state.backend import ALREADY_RUNNING, STATE_LOCKED
from state.lifecycle import NOT_INITIALISED

from ._support import (
    checkpoints,
    copy_provider,
    error_line,
    external,
    files_output,
    generator_input,
    lock_held,
    ok,
    start,
    wait_for,
    write_task,
)

SYNTAX = """task "broken" {
  input {
    provider = "generator"
    config {
      count = = 5
    }
  }
}
"""
UNKNOWN_KEY = """task "t" {
  input {
    provider = "generator"
  }
  outptu {
    provider = "files"
  }
}
"""
UNSET_ENV = """task "t" {
  input {
    provider = "generator"
  }
  output {
    provider = "files"
    config {
      directory = "{{ env \\"DSTREAM_TEST_SURELY_UNSET_VAR\\" }}"
    }
  }
}
"""
UNKNOWN_PROVIDER = """task "t" {
  input {
    provider = "generatr"
  }
  output {
    provider = "files"
  }
}
"""
CONFIG_TYPO = """task "t" {
  input {
    provider = "generator"
  }
  output {
    provider = "files"
    config {
      directry = "out"
    }
  }
}
"""
TWO_TASKS = """task "a" {
  input {
    provider = "generator"
  }
  output {
    provider = "files"
  }
}
task "b" {
  input {
    provider = "generator"
  }
  output {
    provider = "files"
  }
}
"""
DUPLICATE = """task "t" {
  input {
    provider = "generator"
    provider = "jsonl"
  }
  output {
    provider = "files"
  }
}
"""


@pytest.mark.parametrize(
    ("text", "args", "code", "fragments"),
    [
        pytest.param(None, ("validate", "nowhere.hcl"), 3, ("task file nowhere.hcl not found",), id="missing-task-file"),
        pytest.param(SYNTAX, ("validate", "task.hcl"), 3, ("task.hcl:5:15: HCL syntax error",), id="hcl-syntax-error"),
        pytest.param(UNKNOWN_KEY, ("plan", "task.hcl"), 3, ("task.hcl:5: unknown key 'outptu' in task \"t\"", "did you mean 'output'?"), id="unknown-key"),
        pytest.param(UNSET_ENV, ("validate", "task.hcl"), 3, ("task.hcl:8: environment variable DSTREAM_TEST_SURELY_UNSET_VAR is not set",), id="unset-env-var"),
        pytest.param(UNKNOWN_PROVIDER, ("init", "task.hcl"), 3, ("task.hcl:3: unknown provider 'generatr'", "did you mean 'generator'?"), id="unknown-provider"),
        pytest.param(CONFIG_TYPO, ("validate", "task.hcl"), 5,
                     ("task.hcl:8: output provider 'files': unknown config key 'directry'", "did you mean 'directory'?"), id="provider-config-typo"),
        pytest.param(TWO_TASKS, ("plan", "task.hcl"), 3, ("task.hcl holds several tasks: a, b", "--task"), id="several-tasks"),
        pytest.param(DUPLICATE, ("validate", "task.hcl"), 3, ("task.hcl:4: duplicate attribute", "first at line 3"), id="duplicate-attribute"),
        pytest.param(CONFIG_TYPO, ("plan", "--bogus", "task.hcl"), 3, ("unrecognized arguments: --bogus",), id="bad-flag"),
        pytest.param(CONFIG_TYPO, ("plan", "--lock-timeout", "soon", "task.hcl"), 3, ("invalid duration 'soon'",), id="bad-lock-timeout"),
        pytest.param(None, (), 3, ("arguments are required: VERB",), id="no-verb"),
        pytest.param(None, ("frobnicate",), 3, ("invalid choice: 'frobnicate'",), id="unknown-verb"),
        pytest.param(CONFIG_TYPO, ("init", "--plan", "missing.plan", "task.hcl"), 3, ("plan file missing.plan not found",), id="plan-file-not-found"),
    ],
)
def test_bad_input(dstream, tmp_path: Path, text: str | None, args: tuple[str, ...], code: int, fragments: tuple[str, ...]) -> None:
    if text is not None:
        (tmp_path / "task.hcl").write_text(text)
    result = dstream(*args)
    error_line(result, code, *fragments)
    assert result.stdout == ""
    assert not (tmp_path / ".dstream" / "t.state.json").exists()


def test_unknown_task_name(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "demo", generator_input(3), files_output(), file="dstream.hcl")
    error_line(dstream("validate", "demu"), 3, "no task 'demu' in dstream.hcl", "did you mean 'demo'?")
    ok(dstream("validate", "demo"))  # the same lookup with the right name works


def test_provider_path_not_executable(dstream, tmp_path: Path) -> None:
    script = copy_provider("crash_after_hello.sh", tmp_path)
    script.chmod(0o644)
    task = write_task(tmp_path, "t", generator_input(3), external("./crash_after_hello.sh"))
    line = task.read_text().splitlines().index('    provider_path = "./crash_after_hello.sh"') + 1
    error_line(dstream("plan", "task.hcl"), 3, f"task.hcl:{line}: provider_path ./crash_after_hello.sh is not executable", "chmod +x")


def test_provider_crashes(dstream, tmp_path: Path) -> None:
    copy_provider("crash_after_hello.sh", tmp_path)
    write_task(tmp_path, "t", generator_input(3), external("./crash_after_hello.sh"))
    result = dstream("plan", "task.hcl")
    error_line(result, 5, "output provider './crash_after_hello.sh'", "exited with code 7", "segmentation fault in the flux capacitor")
    assert "[output:./crash_after_hello.sh] crash: segmentation fault in the flux capacitor" in result.stderr


def test_provider_writes_garbage_after_hello(dstream, tmp_path: Path) -> None:
    copy_provider("garbage_after_hello.sh", tmp_path)
    write_task(tmp_path, "t", generator_input(3), external("./garbage_after_hello.sh"))
    error_line(dstream("plan", "task.hcl"), 5, "output provider './garbage_after_hello.sh'", "broke the protocol: stdout line 2 is not JSON", "this is not json at all")


def test_second_run_while_running(pyz: Path, dstream, tmp_path: Path) -> None:
    copy_provider("slow_input.sh", tmp_path)
    write_task(tmp_path, "slow", external("./slow_input.sh"), files_output())
    ok(dstream("init", "task.hcl"))
    lock = tmp_path / ".dstream" / "slow.run.lock"
    first = start(pyz, "run", "task.hcl", cwd=tmp_path)
    try:
        holder = wait_for(lambda: lock.exists() and lock.read_text().strip() and json.loads(lock.read_text()), 30, "the first run to take the run lock")
        assert f"(pid {first.pid})" in holder["who"]
        result = dstream("run", "--once", "task.hcl")
        error_line(result, 4, ALREADY_RUNNING, f"(pid {first.pid})", holder["id"], "for run")
        assert first.poll() is None, "the second run must not disturb the first"
    finally:
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=60)
    assert code == 0, (tmp_path / "dstream.log").read_text()
    assert lock.read_text() == "", "a run that ended releases its lock record"


def test_plan_while_state_locked(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "t", generator_input(3), files_output())
    lock_id = "5d0c1c9e-1111-4222-8333-944455556666"
    with lock_held(tmp_path / ".dstream" / "t.state.lock", lock_id):
        result = dstream("plan", "task.hcl")
        error_line(result, 4, STATE_LOCKED, "alice@build-host (pid 4242)", f"lock ID {lock_id}", f"dstream state unlock TASK {lock_id}")
        error_line(dstream("state", "unlock", "task.hcl", "not-the-lock-id"), 1, "no lock with ID not-the-lock-id on task t")
    assert not (tmp_path / "out").exists()


def test_lock_timeout_waits_then_fails(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "t", generator_input(3), files_output())
    lock_id = "0a0b0c0d-aaaa-4bbb-8ccc-ddddeeeeffff"
    with lock_held(tmp_path / ".dstream" / "t.state.lock", lock_id):
        started = time.monotonic()
        result = dstream("init", "--lock-timeout", "2s", "task.hcl")
        waited = time.monotonic() - started
    error_line(result, 4, STATE_LOCKED, lock_id, allow=("[", "Warning: waiting for the state lock"))
    assert "Warning: waiting for the state lock" in result.stderr
    assert 2.0 <= waited < 20, f"waited {waited:.1f}s"
    assert not (tmp_path / "out").exists() and not (tmp_path / ".dstream" / "t.state.json").exists()


def test_stale_saved_plan_after_config_change(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "t", generator_input(3), files_output("out"))
    ok(dstream("init", "task.hcl"))
    ok(dstream("plan", "--out", "saved.plan", "task.hcl"))
    write_task(tmp_path, "t", generator_input(3), files_output("elsewhere"))
    state = (tmp_path / ".dstream" / "t.state.json").read_bytes()
    error_line(dstream("init", "--plan", "saved.plan", "task.hcl"), 1, "saved plan is stale", "configuration changed")
    assert (tmp_path / ".dstream" / "t.state.json").read_bytes() == state
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("verb", [("plan",), ("init",), ("run", "--once"), ("destroy", "--auto-approve"), ("status",)])
def test_corrupt_state_is_refused_and_left_alone(dstream, tmp_path: Path, verb: tuple[str, ...]) -> None:
    write_task(tmp_path, "t", generator_input(3), files_output())
    state = tmp_path / ".dstream" / "t.state.json"
    state.parent.mkdir()
    corrupt = b'{\n  "version": 1,\n  "serial": 7,\n  "lineage": "abc",\n  "resources": [\n    {"role": "out'
    state.write_bytes(corrupt)
    error_line(dstream(*verb, "task.hcl"), 1, "t.state.json is not valid JSON")
    assert state.read_bytes() == corrupt
    assert not (tmp_path / "out").exists()


def test_run_before_init(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "t", generator_input(3), files_output())
    error_line(dstream("run", "--once", "task.hcl"), 1, NOT_INITIALISED.format(task="t"), "dstream init task.hcl")
    assert not (tmp_path / "out").exists()


def test_output_fails_mid_run(dstream, tmp_path: Path) -> None:
    copy_provider("failing_output.sh", tmp_path)
    write_task(tmp_path, "t", generator_input(100), external("./failing_output.sh"))
    ok(dstream("init", "task.hcl"))
    result = dstream("run", "--once", "task.hcl")
    error_line(result, 5, "output provider './failing_output.sh'", "exited with code 3", "disk quota exceeded on /dev/sdz")
    assert "[output:./failing_output.sh] failing-output: received 2 lines" in result.stderr
    assert checkpoints(tmp_path / ".dstream" / "t.checkpoints.json") is None


def test_input_fails_mid_run(dstream, tmp_path: Path) -> None:
    copy_provider("failing_input.sh", tmp_path)
    write_task(tmp_path, "t", external("./failing_input.sh"), files_output())
    ok(dstream("init", "task.hcl"))
    result = dstream("run", "--once", "task.hcl")
    error_line(result, 5, "input provider './failing_input.sh'", "exited with code 9", "connection reset by peer after 2 changes")
    rows = [json.loads(line) for line in (tmp_path / "out" / "Flaky_cdc_events.jsonl").read_text().splitlines()]
    assert [r["data"]["ID"] for r in rows] == [1, 2], "what the input sent before failing is still delivered"
    assert checkpoints(tmp_path / ".dstream" / "t.checkpoints.json") == {"Flaky": {"seq": 2}}
