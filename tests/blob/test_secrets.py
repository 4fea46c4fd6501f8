"""The storage account key of the connection string never leaves the environment variable it came from; with
account_url, no bearer token the credential fetched appears anywhere either."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli._support import error_line, files_output, generator_input, ok

from ._blob import BlobTasks


def test_account_key_never_appears(blob: BlobTasks, tmp_path: Path) -> None:
    """Every command's output (blob.cli checks each one), debug and JSON logs, saved plans, pulled bundles,
    and every blob's content and metadata are free of the AccountKey (and of every token the stand-in az issued)."""
    task = blob.write(tmp_path, "t", generator_input(30), files_output())
    assert blob.azurite.connection_string not in task.read_text(), "the task file only names the variable"

    ok(blob.cli("validate", "task.hcl"))
    ok(blob.cli("plan", "--out", "saved.plan", "task.hcl"))
    ok(blob.cli("--log-level", "debug", "plan", "task.hcl"))
    ok(blob.cli("--log-format", "json", "plan", "--json", "task.hcl"))
    ok(blob.cli("init", "--plan", "saved.plan", "task.hcl"))
    ok(blob.cli("--log-level", "debug", "run", "--once", "task.hcl"))
    report = ok(blob.cli("status", "--json", "task.hcl"))
    assert json.loads(report.stdout)["backend"] == f"azureblob ({blob.azurite.endpoint}/{blob.name})"
    ok(blob.cli("status", "task.hcl"))
    ok(blob.cli("state", "show", "task.hcl"))
    pulled = ok(blob.cli("state", "pull", "task.hcl"))
    (tmp_path / "bundle.json").write_text(pulled.stdout)
    ok(blob.cli("state", "push", "task.hcl", "bundle.json"))
    with blob.holding("t") as holder:
        refused = blob.cli("--log-level", "debug", "plan", "task.hcl")
        assert refused.returncode == 4 and holder.id in refused.stderr, refused.stderr
        error_line(blob.cli("plan", "task.hcl"), 4, holder.id)
        blob.assert_no_secret(json.dumps({k: v for k, v in blob.blob("t/t.state.json").get_blob_properties().metadata.items()}), "the lock metadata")

    blob.assert_no_secret((tmp_path / "saved.plan").read_bytes(), "the saved plan")
    for item in blob.container.list_blobs(include=["metadata"]):
        blob.assert_no_secret(blob.data(item.name), f"blob {item.name}")
        blob.assert_no_secret(json.dumps(item.metadata or {}), f"the metadata of blob {item.name}")
    blob.assert_no_secret(json.dumps(blob.container.get_container_properties().metadata or {}), "the container metadata")
    if blob.auth.az is not None:
        assert len(blob.auth.tokens()) >= 1, "the oauth mode must really have signed in with tokens"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blob.assert_no_secret(path.read_bytes(), str(path))
