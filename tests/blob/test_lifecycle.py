"""The lifecycle, saved plans, state pull/push and migration with state in Azure Blob Storage (Azurite)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.cli._support import error_line, files_output, generator_input, ok, write_task

from ._blob import PREFIX, BlobTasks

TASK = "local-demo"
TABLES = ("Customers", "Orders", "Persons")
BLOBS = [f"{PREFIX}{TASK}.checkpoints.json", f"{PREFIX}{TASK}.run.lock", f"{PREFIX}{TASK}.state.json"]


def out_file(directory: Path, table: str) -> Path:
    return directory / "out" / f"{table}_cdc_events.jsonl"


def test_local_example_lifecycle_on_blob_state(blob: BlobTasks, example_dir: Path) -> None:
    """examples/local.hcl plus a backend "azureblob" block: the same lifecycle, state only in the container."""
    blob.use_blob(example_dir / "local.hcl")

    def cli(*args: str) -> Any:
        return blob.cli(*args, cwd=example_dir)

    result = ok(cli("validate", "local.hcl"))
    assert result.stdout == "Task local-demo is valid: input jsonl -> output files (streams: Customers, Orders, Persons)\n"
    assert blob.names() == [], "validate must not touch the backend"

    result = cli("plan", "--detailed-exitcode", "local.hcl")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in result.stdout
    assert not (example_dir / "out").exists()

    result = ok(cli("init", "local.hcl"))
    summary = re.search(r"Init complete! Resources: 3 added, 0 changed, 0 destroyed\. State serial (\d+)\.", result.stdout)
    assert summary, result.stdout
    state = blob.state(TASK)
    assert state["task"] == TASK and state["serial"] == int(summary.group(1)) >= 4
    assert [(r["name"], r["id"]) for r in state["resources"]] == [(t, f"out/{t}_cdc_events.jsonl") for t in TABLES]
    assert [s["name"] for s in state["streams"]] == list(TABLES)
    lineage, serial = state["lineage"], state["serial"]
    props = blob.blob(f"{PREFIX}{TASK}.state.json").get_blob_properties()
    assert props.lease.state != "leased", "init must release the state lock"

    result = cli("plan", "--detailed-exitcode", "local.hcl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes. Your infrastructure matches the configuration." in result.stdout

    ok(cli("run", "--once", "local.hcl"))
    assert sum(len(out_file(example_dir, t).read_bytes().splitlines()) for t in TABLES) == 60
    positions = blob.checkpoints(TASK)
    assert set(positions) == set(TABLES) and all(p["offset"] > 0 for p in positions.values())
    assert blob.names() == BLOBS

    result = ok(cli("status", "local.hcl"))
    assert f"Task {TASK} — state serial {serial}, lineage {lineage}" in result.stdout
    assert "state lock: free" in result.stdout and "run lock: free" in result.stdout
    report = json.loads(ok(cli("status", "--json", "local.hcl")).stdout)
    assert report["backend"] == f"azureblob ({blob.azurite.endpoint}/{blob.name})"
    assert (report["serial"], report["lineage"], report["locks"]) == (serial, lineage, {"run": None, "state": None})
    assert {s["name"]: s["checkpoint"] for s in report["streams"]} == positions

    before = {t: out_file(example_dir, t).read_bytes() for t in TABLES}
    ok(cli("run", "--once", "local.hcl"))
    assert {t: out_file(example_dir, t).read_bytes() for t in TABLES} == before, "a second run resumes from the blob checkpoints"

    result = ok(cli("destroy", "--auto-approve", "local.hcl"))
    assert "Destroy complete! Resources: 3 destroyed." in result.stdout
    assert not any(out_file(example_dir, t).exists() for t in TABLES)
    state = blob.state(TASK)
    assert state["resources"] == [] and state["streams"] == [] and state["lineage"] == lineage and state["serial"] > serial
    assert f"{PREFIX}{TASK}.checkpoints.json" not in blob.names(), "destroy forgets the checkpoints"

    assert not (example_dir / ".dstream").exists(), "with the azureblob backend nothing may be written to .dstream/"


def test_stale_saved_plan_is_refused(blob: BlobTasks, example_dir: Path) -> None:
    blob.use_blob(example_dir / "local.hcl")
    ok(blob.cli("plan", "--out", "old.plan", "local.hcl", cwd=example_dir))
    ok(blob.cli("init", "local.hcl", cwd=example_dir))
    state = blob.data(f"{PREFIX}{TASK}.state.json")
    error_line(blob.cli("init", "--plan", "old.plan", "local.hcl", cwd=example_dir), 1, "stale")
    assert blob.data(f"{PREFIX}{TASK}.state.json") == state


def _pull(blob: BlobTasks, directory: Path, target: Path) -> dict[str, Any]:
    result = ok(blob.cli("state", "pull", "task.hcl", cwd=directory))
    target.write_text(result.stdout)
    return json.loads(result.stdout)


def test_push_refuses_another_lineage_unless_forced(blob: BlobTasks, tmp_path: Path) -> None:
    blob.write(tmp_path, "t", generator_input(3), files_output())
    ok(blob.cli("init", "task.hcl"))
    bundle = _pull(blob, tmp_path, tmp_path / "bundle.json")
    current = blob.state("t")
    assert bundle["state"] == current

    bundle["state"]["lineage"] = "00000000-0000-4000-8000-000000000000"
    (tmp_path / "other.json").write_text(json.dumps(bundle))
    before = blob.data(f"{PREFIX}t.state.json")
    error_line(blob.cli("state", "push", "task.hcl", "other.json"), 1, "lineage", "--force")
    assert blob.data(f"{PREFIX}t.state.json") == before

    result = ok(blob.cli("state", "push", "--force", "task.hcl", "other.json"))
    pushed = blob.state("t")
    assert pushed["lineage"] == "00000000-0000-4000-8000-000000000000"
    assert pushed["serial"] == current["serial"] + 1, "a forced push must still move the serial forward"
    assert f"Pushed state serial {pushed['serial']} (lineage 00000000-0000-4000-8000-000000000000)" in result.stdout


def test_push_refuses_an_older_serial(blob: BlobTasks, tmp_path: Path) -> None:
    blob.write(tmp_path, "t", generator_input(3), files_output())
    ok(blob.cli("init", "task.hcl"))
    old = _pull(blob, tmp_path, tmp_path / "old.json")
    ok(blob.cli("state", "push", "task.hcl", "old.json"))  # same lineage and serial: accepted, serial + 1
    newer = blob.state("t")
    assert newer["serial"] == old["state"]["serial"] + 1 and newer["lineage"] == old["state"]["lineage"]
    before = blob.data(f"{PREFIX}t.state.json")
    error_line(blob.cli("state", "push", "task.hcl", "old.json"), 1, f"serial {old['state']['serial']}", f"newer serial {newer['serial']}")
    assert blob.data(f"{PREFIX}t.state.json") == before


def test_migrate_local_state_to_blob(blob: BlobTasks, tmp_path: Path) -> None:
    """state pull with the local backend, switch the task file to azureblob, state push: nothing to do afterwards."""
    task = write_task(tmp_path, "mig", generator_input(30), files_output())
    ok(blob.cli("init", "task.hcl"))
    ok(blob.cli("run", "--once", "task.hcl"))
    local_state = json.loads((tmp_path / ".dstream" / "mig.state.json").read_text())
    local_checkpoints = json.loads((tmp_path / ".dstream" / "mig.checkpoints.json").read_text())
    bundle = _pull(blob, tmp_path, tmp_path / "bundle.json")
    assert bundle["state"] == local_state
    outputs = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    blob.use_blob(task)
    result = ok(blob.cli("state", "push", "task.hcl", "bundle.json"))
    assert "with checkpoints for 3 stream(s)" in result.stdout, result.stdout
    pushed = blob.state("mig")
    assert pushed["lineage"] == local_state["lineage"]
    assert pushed["serial"] == local_state["serial"], "an empty backend takes the pushed state as it is"
    assert pushed["resources"] == local_state["resources"] and pushed["streams"] == local_state["streams"]
    assert blob.checkpoints("mig") == {name: entry["position"] for name, entry in local_checkpoints["streams"].items()}
    assert blob.checkpoints("mig") == {"Persons": {"seq": 30}, "Orders": {"seq": 28}, "Customers": {"seq": 29}}

    result = blob.cli("plan", "--detailed-exitcode", "task.hcl")
    assert result.returncode == 0 and "No changes." in result.stdout, result.stdout + result.stderr
    ok(blob.cli("run", "--once", "task.hcl"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == outputs, "streaming resumes from the migrated checkpoints"
    assert json.loads((tmp_path / ".dstream" / "mig.state.json").read_text()) == local_state, "the old backend is left as it was"
