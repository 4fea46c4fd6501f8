"""The lifecycle around the data path keeps its promises (issue 8): one test per defect, run as a user would.

Misbehaving providers come from providers/scripted.py, told what to do by their config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from host.pipeline import UNKNOWN_STREAM
from host.process import OTHER_PROTOCOL, STOPPED_ANSWERING
from state.backend import ALREADY_RUNNING

from ._support import (
    alive,
    checkpoints,
    children,
    copy_provider,
    describe,
    error_line,
    external,
    files_output,
    generator_input,
    ok,
    start,
    wait_for,
    write_task,
)


def scripted(directory: Path, role: str, behaviour: str = "", **extra: object) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    copy_provider("scripted.py", directory)
    settings = {"role": role, "behaviour": behaviour, **extra}
    return external("./scripted.py", "\n".join(f"      {k} = {json.dumps(v)}" for k, v in settings.items()))


def state(tmp_path: Path, task: str) -> dict:
    return json.loads((tmp_path / ".dstream" / f"{task}.state.json").read_text())


# --- data loss -------------------------------------------------------------------


def test_init_is_refused_while_the_task_runs(dstream, pyz: Path, tmp_path: Path) -> None:
    """D2: a replace by init would delete the file a running output appends to."""
    write_task(tmp_path, "busy", generator_input(0), files_output())
    ok(dstream("init", "task.hcl"))
    runner = start(pyz, "run", "task.hcl", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "out" / "Persons_cdc_events.jsonl").stat().st_size > 0, 30, "the run to stream")
        error_line(dstream("init", "task.hcl"), 4, ALREADY_RUNNING)
    finally:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 0


def test_secret_that_is_also_data_is_not_rewritten(dstream, tmp_path: Path) -> None:
    """D5: redaction is for what is shown; a path holding a word that is also a token stays that path."""
    copy_provider("shell_input.sh", tmp_path)
    inputs = external("./shell_input.sh", '      count = 3\n      api_token = "Shell"')  # also the table's name
    write_task(tmp_path, "tokens", inputs, '    provider = "files"\n    config {\n      file_template = "{schema}_{table}.jsonl"\n    }')
    ok(dstream("init", "task.hcl"))
    [resource] = state(tmp_path, "tokens")["resources"]
    assert resource["attributes"]["path"] == "out/dbo_Shell.jsonl", resource
    ok(dstream("run", "--once", "task.hcl"))
    assert len((tmp_path / "out" / "dbo_Shell.jsonl").read_text().splitlines()) == 3
    again = dstream("plan", "--detailed-exitcode", "task.hcl")
    assert again.returncode == 0, describe(again)
    ok(dstream("init", "task.hcl"))
    assert len((tmp_path / "out" / "dbo_Shell.jsonl").read_text().splitlines()) == 3, "init emptied the file"
    shown = ok(dstream("state", "list", "task.hcl")).stdout + ok(dstream("plan", "task.hcl")).stdout
    assert "Shell" not in shown, "what is shown is still redacted"


def test_partial_destroy_forgets_the_checkpoints_first(dstream, tmp_path: Path) -> None:
    """D6: the output's files go, the input's destroy fails: no checkpoint may survive its output."""
    write_task(tmp_path, "half", scripted(tmp_path, "input", "own_and_fail_destroy", count=3), files_output())
    ok(dstream("init", "task.hcl"))
    ok(dstream("run", "--once", "task.hcl"))
    assert checkpoints(tmp_path / ".dstream" / "half.checkpoints.json") == {"S": {"i": 3}}
    error_line(dstream("destroy", "--auto-approve", "task.hcl"), 5, "the database refuses to be destroyed", allow=("[", "output."))
    assert not (tmp_path / "out" / "S_cdc_events.jsonl").exists()
    assert not checkpoints(tmp_path / ".dstream" / "half.checkpoints.json")


def test_invalid_acks_are_protocol_errors_and_never_persisted(dstream, tmp_path: Path) -> None:
    """D8: an ack for an unknown stream, a null position or an unknown type stops the run (exit 5)."""
    for behaviour, fragment in (("bad_ack_stream", UNKNOWN_STREAM.format(stream="NotAStream")),
                                ("null_position", "stream 'S' has no position (null is not a position)"),
                                ("unknown_type", "unknown message type 'surprise'")):
        directory = tmp_path / behaviour
        write_task(directory, "acks", scripted(directory, "input", count=3), scripted(directory, "output", behaviour))
        ok(dstream("init", "task.hcl", cwd=directory))
        line = error_line(dstream("run", "--once", "task.hcl", cwd=directory), 5, "output provider './scripted.py'", fragment)
        assert "broke the protocol" in line
        assert not checkpoints(directory / ".dstream" / "acks.checkpoints.json")


def test_providers_keep_the_run_lock_until_they_exit(dstream, pyz: Path, tmp_path: Path) -> None:
    """D9: after dstream is killed, no second run may start while its providers still run."""
    write_task(tmp_path, "lingering", generator_input(0), scripted(tmp_path, "output", "slow_exit", seconds=8))
    ok(dstream("init", "task.hcl"))
    runner = start(pyz, "run", "task.hcl", cwd=tmp_path)
    providers = wait_for(lambda: len(children(runner.pid)) == 2 and children(runner.pid), 30, "both providers")
    wait_for(lambda: (tmp_path / "output-ready").exists(), 30, "the output to be ready")
    assert runner.poll() is None, (tmp_path / "dstream.log").read_text()
    runner.kill()
    runner.wait(timeout=10)
    assert any(alive(pid) for pid in providers), "the output should still be draining"
    error_line(dstream("run", "--once", "task.hcl", timeout=30), 4, ALREADY_RUNNING)
    wait_for(lambda: not any(alive(pid) for pid in providers), 30, "the providers to exit")
    status = json.loads(ok(dstream("status", "--json", "task.hcl")).stdout)
    assert status["locks"]["run"] is None, "the lock frees itself once they are gone"


# --- security ----------------------------------------------------------------------


def test_saved_plan_cannot_delete_what_state_does_not_own(dstream, tmp_path: Path) -> None:
    """S3: an edited plan file names a file outside state: init --plan refuses before touching anything."""
    write_task(tmp_path, "edited", generator_input(3), files_output())
    ok(dstream("plan", "--out", "saved.plan", "task.hcl"))
    victim = tmp_path / "precious.txt"
    victim.write_text("not dstream's\n")
    plan = json.loads((tmp_path / "saved.plan").read_text())
    plan["resource_changes"].append({**plan["resource_changes"][0], "address": 'output.file["Victim"]', "action": "delete",
                                     "resource": {"type": "file", "name": "Victim"}, "before": {"path": "precious.txt"}, "after": None})
    (tmp_path / "saved.plan").write_text(json.dumps(plan))
    error_line(dstream("init", "--plan", "saved.plan", "task.hcl"), 1, 'output.file["Victim"]', "not in state")
    assert victim.read_text() == "not dstream's\n"
    assert not (tmp_path / "out").exists(), "nothing of the plan was applied"


def test_providers_get_only_the_environment_they_need(dstream, tmp_path: Path) -> None:
    """S5: a third-party input must not read the output's {{ env }} secret, nor anything else of dstream's environment."""
    inputs = scripted(tmp_path, "input", "dump_environment")
    output = '    provider = "files"\n    config {\n      directory = "{{ env \\"OUT_DIR\\" }}"\n    }'
    write_task(tmp_path, "env", inputs, output)
    ok(dstream("validate", "task.hcl", env={"OUT_DIR": "out", "ASB_CONNECTION": "Endpoint=sb://x/;SharedAccessKey=abcdef", "HOME": str(tmp_path)}))
    seen = json.loads((tmp_path / "env-input.json").read_text())
    assert "ASB_CONNECTION" not in seen and "OUT_DIR" not in seen, sorted(seen)
    assert not [k for k in seen if k.startswith(("AZURE_", "DSTREAM_", "SHIV_"))], sorted(seen)
    assert seen["PATH"] == os.environ["PATH"] and seen["HOME"] == str(tmp_path)


# --- wrong results and hangs ---------------------------------------------------------


def test_a_provider_slower_than_the_hello_timeout_is_an_error(dstream, tmp_path: Path) -> None:
    """W1: not "legacy, no changes" with exit 0."""
    write_task(tmp_path, "slow", scripted(tmp_path, "input", "sleep_before_hello", seconds=30), files_output())
    result = dstream("plan", "--detailed-exitcode", "task.hcl", env={"DSTREAM_HELLO_TIMEOUT": "1"}, timeout=25)
    error_line(result, 5, "input provider './scripted.py'", STOPPED_ANSWERING.format(seconds=1))


def test_silence_after_hello_and_an_unread_envelope_end_in_errors(dstream, tmp_path: Path) -> None:
    """W2: lifecycle commands never hang holding the state lock."""
    write_task(tmp_path / "hang", "hang", scripted(tmp_path / "hang", "input", "hang_after_hello", seconds=60), files_output())
    result = dstream("plan", "task.hcl", cwd=tmp_path / "hang", env={"DSTREAM_PROVIDER_TIMEOUT": "2"}, timeout=30)
    error_line(result, 5, STOPPED_ANSWERING.format(seconds=2))
    big = scripted(tmp_path / "deaf", "input", padding="x" * 300_000)  # far more than a pipe holds
    (tmp_path / "deaf" / "NEVER_READ_STDIN").touch()
    write_task(tmp_path / "deaf", "deaf", big, files_output())
    result = dstream("plan", "task.hcl", cwd=tmp_path / "deaf", env={"DSTREAM_HELLO_TIMEOUT": "2"}, timeout=30)
    error_line(result, 5, "stopped answering")


def test_stopping_a_run_kills_an_input_that_ignores_sigterm(dstream, pyz: Path, tmp_path: Path) -> None:
    """W3: SIGTERM, then SIGKILL after DSTREAM_STOP_GRACE; what was delivered is checkpointed."""
    write_task(tmp_path, "stubborn", scripted(tmp_path, "input", "ignore_sigterm"), files_output())
    ok(dstream("init", "task.hcl"))
    runner = start(pyz, "run", "task.hcl", cwd=tmp_path, env={"DSTREAM_STOP_GRACE": "2"})
    wait_for(lambda: (tmp_path / "out" / "S_cdc_events.jsonl").stat().st_size > 0, 30, "the run to stream")
    runner.send_signal(signal.SIGTERM)
    began = time.monotonic()
    assert runner.wait(timeout=30) == 0, (tmp_path / "dstream.log").read_text()
    assert time.monotonic() - began < 20
    lines = (tmp_path / "out" / "S_cdc_events.jsonl").read_text().splitlines()
    assert checkpoints(tmp_path / ".dstream" / "stubborn.checkpoints.json") == {"S": {"i": len(lines)}}


# --- one clear line ------------------------------------------------------------------------


def test_an_input_killed_mid_line_is_blamed_not_the_output(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "cut", scripted(tmp_path, "input", "die_mid_line", count=3), files_output())
    ok(dstream("init", "task.hcl"))
    line = error_line(dstream("run", "--once", "task.hcl"), 5, "input provider './scripted.py'", f"exited with code {-signal.SIGKILL}")
    assert "output provider" not in line
    assert checkpoints(tmp_path / ".dstream" / "cut.checkpoints.json") == {"S": {"i": 3}}, "what was delivered before stays acknowledged"


def test_a_provider_error_is_one_line_without_a_doubled_prefix(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "typo", generator_input(3), '    provider = "files"\n    config {\n      directroy = "out"\n    }')
    result = dstream("plan", "task.hcl")
    error_line(result, 3 if "usage" in result.stderr else 5, "directroy", "did you mean 'directory'?")
    assert "files: error" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, describe(result)


def test_a_status_with_a_malformed_resource_is_a_protocol_error(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "st", generator_input(3), scripted(tmp_path, "output", "bad_status"))
    ok(dstream("init", "task.hcl"))
    error_line(dstream("status", "task.hcl"), 5, "output provider './scripted.py': broke the protocol", "malformed status message")


def test_state_push_of_a_bundle_without_state_is_a_usage_error(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "push", generator_input(3), files_output())
    (tmp_path / "bundle.json").write_text(json.dumps({"format": "dstream-state-bundle", "version": 1, "checkpoints": None}))
    error_line(dstream("state", "push", "task.hcl", "bundle.json"), 3, "holds no state document")


def test_detailed_exitcode_help_tells_the_real_codes() -> None:
    result = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "dstream.py"), "plan", "--help"], capture_output=True, text=True)
    assert "errors keep their codes (1, 3, 4, 5)" in " ".join(result.stdout.split()), result.stdout


def test_a_provider_speaking_another_protocol_version_is_one_clear_error(dstream, tmp_path: Path) -> None:
    """Issue 9: the version in hello is negotiated, not ignored."""
    write_task(tmp_path, "v2", scripted(tmp_path, "input", "protocol_2"), files_output())
    error_line(dstream("plan", "task.hcl"), 5, "input provider './scripted.py'", OTHER_PROTOCOL.format(theirs=2, ours=1))
