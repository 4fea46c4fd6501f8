"""Failures with state in Azure Blob Storage: corrupt state, a missing container, the storage account going away mid-run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli._support import alive, children, copy_provider, describe, error_line, external, files_output, generator_input, ok, wait_for
from tests.emulators.azurite import Azurite

from ._blob import LEASE, PREFIX, BlobTasks
from .conftest import service_client

GARBAGE = b'{\n  "version": 1,\n  "serial": 7,\n  "lineage": "abc",\n  "resources": [\n    {"role": "out'


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines())


@pytest.mark.parametrize("verb", [("plan",), ("init",)])
def test_corrupt_state_blob_is_refused_and_left_alone(blob: BlobTasks, tmp_path: Path, verb: tuple[str, ...]) -> None:
    blob.write(tmp_path, "t", generator_input(3), files_output())
    name = f"{PREFIX}t.state.json"
    blob.container.upload_blob(name, GARBAGE)
    error_line(blob.cli(*verb, "task.hcl"), 1, f"{blob.azurite.endpoint}/{blob.name}/{name} is not valid JSON")
    assert blob.data(name) == GARBAGE, "unusable state must be left byte for byte as it was"
    assert blob.blob(name).get_blob_properties().lease.state != "leased", "the state lock must be released after the refusal"
    assert not (tmp_path / "out").exists()


def test_missing_container(blob: BlobTasks, tmp_path: Path, service: Any) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    blob.write(tmp_path, "t", generator_input(3), files_output(), container=missing)
    for verb in (("plan",), ("init",), ("status",)):
        error_line(blob.cli(*verb, "task.hcl"), 1, f"container {blob.azurite.endpoint}/{missing} does not exist", "(create it first")
    assert not service.get_container_client(missing).exists(), "dstream must not create the container"
    assert not (tmp_path / "out").exists() and not (tmp_path / ".dstream").exists()


def test_storage_stopped_mid_run(blob: BlobTasks, tmp_path: Path) -> None:
    """Azurite dies while `run` streams: the run stops before its lease can expire, with one clear error line;
    after Azurite is back (data on disk) the state is intact and plan works."""
    with Azurite(location=tmp_path / "azurite-data", tls=blob.azurite.tls) as server:
        container = service_client(server).create_container("state")
        tasks = BlobTasks(server, container, blob.dstream, blob.pyz, tmp_path, blob.auth.on(server))
        work = tmp_path / "task"
        work.mkdir()
        copy_provider("slow_input.sh", work)
        tasks.write(work, "t", external("./slow_input.sh"), files_output())
        ok(tasks.cli("init", "task.hcl", cwd=work))
        state_before = tasks.data(f"{PREFIX}t.state.json")

        log, out = work / "run.log", work / "out" / "Slow_cdc_events.jsonl"
        run = tasks.start("run", "task.hcl", cwd=work, log=log)
        providers: list[int] = []
        try:
            wait_for(lambda: f"{PREFIX}t.checkpoints.json" in tasks.names(), 30, "the run to persist a checkpoint")
            providers = children(run.pid)
            server.stop()
            stopped = time.monotonic()
            code, at_expiry = None, None
            while time.monotonic() - stopped < 60 and code is None:
                code = run.poll()
                if at_expiry is None and time.monotonic() - stopped > LEASE + 2:
                    at_expiry = lines(out)
                time.sleep(0.1)
            took = time.monotonic() - stopped
        finally:
            if run.poll() is None:
                run.send_signal(signal.SIGKILL)
                run.wait(timeout=30)
        wait_for(lambda: not any(alive(pid) for pid in providers), 30, "the providers to stop")
        output = log.read_text()
        result = subprocess.CompletedProcess(run.args, run.returncode, "", output)

        server.start()  # same port, same --location: the data survived
        state_after = tasks.data(f"{PREFIX}t.state.json")
        assert state_after == state_before, "the state blob must be intact"
        assert json.loads(state_after)["serial"] == json.loads(state_before)["serial"]
        written = lines(out)
        assert 0 < tasks.checkpoints("t")["Slow"]["seq"] <= written, "checkpoints must be valid and never ahead of the output"
        plan = ok(tasks.cli("plan", "--lock-timeout", "30s", "task.hcl", cwd=work))
        assert "No changes." in plan.stdout
        tasks.check_logs()

        problems = []
        if took > LEASE:
            after = f", and wrote {written - at_expiry} changes after that" if at_expiry is not None else ""
            problems.append(f"dstream run was still running {took:.0f}s after Azurite stopped{' (killed)' if code is None else ''}; "
                            f"its {LEASE}s run lease had expired by {LEASE}s at the latest{after}")
        if code is not None:
            try:
                error_line(result, 1)
            except AssertionError as exc:
                problems.append(f"not one clear error line: {exc}")
        assert not problems, "\n".join(problems) + "\n" + describe(result)
