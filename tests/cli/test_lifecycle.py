"""The local lifecycle of examples/local.hcl through the built zipapp: validate, plan, init, run, status, destroy."""

from __future__ import annotations

import json
import re
import stat
from collections import defaultdict
from pathlib import Path
from typing import Any

from ._support import ROOT, error_line, ok

TASK = "local-demo"
TABLES = ("Customers", "Orders", "Persons")
ENV = {"DSTREAM_OUT": "out"}  # the example's default, pinned in case the caller's environment sets it
INPUT = ROOT / "examples" / "data" / "changes.jsonl"


def expected_input() -> tuple[dict[str, list[tuple[dict[str, Any], int]]], dict[str, int]]:
    """Per table: its (envelope, end offset) in file order; and the end offset of its last line."""
    rows: dict[str, list[tuple[dict[str, Any], int]]] = defaultdict(list)
    offset = 0
    for raw in INPUT.read_bytes().splitlines(keepends=True):
        offset += len(raw)
        envelope = json.loads(raw)
        rows[envelope["metadata"]["TableName"]].append((envelope, offset))
    return dict(rows), {table: lines[-1][1] for table, lines in rows.items()}


def out_file(example_dir: Path, table: str) -> Path:
    return example_dir / "out" / f"{table}_cdc_events.jsonl"


def state_doc(example_dir: Path) -> dict[str, Any]:
    return json.loads((example_dir / ".dstream" / f"{TASK}.state.json").read_text())


def out_snapshot(example_dir: Path) -> dict[str, tuple[int, int]]:
    out = example_dir / "out"
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(out.iterdir())} if out.exists() else {}


def test_input_fixture_is_what_the_tests_assume() -> None:
    rows, _ = expected_input()
    assert sorted(rows) == list(TABLES)
    assert sum(len(r) for r in rows.values()) == 60


def test_local_lifecycle(dstream, example_dir: Path) -> None:
    def cli(*args: str):
        return dstream(*args, cwd=example_dir, env=ENV)

    rows, last_offsets = expected_input()
    checkpoints_file = example_dir / ".dstream" / f"{TASK}.checkpoints.json"

    result = ok(cli("validate", "local.hcl"))
    assert result.stdout == "Task local-demo is valid: input jsonl -> output files (streams: Customers, Orders, Persons)\n"

    result = cli("plan", "--detailed-exitcode", "local.hcl")
    assert result.returncode == 2, result.stderr
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in result.stdout
    for table in TABLES:
        assert f'# output.file["{table}"] will be created' in result.stdout
        assert f'+ path = "out/{table}_cdc_events.jsonl"' in result.stdout
    assert not (example_dir / "out").exists(), "plan must not create anything"
    assert not (example_dir / ".dstream" / f"{TASK}.state.json").exists(), "plan must not write state"

    result = ok(cli("init", "local.hcl"))
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in result.stdout
    summary = re.search(r"Init complete! Resources: 3 added, 0 changed, 0 destroyed\. State serial (\d+)\.", result.stdout)
    assert summary, result.stdout
    for table in TABLES:
        assert out_file(example_dir, table).is_file()
        assert out_file(example_dir, table).stat().st_size == 0
        assert f"[output:files] created out/{table}_cdc_events.jsonl" in result.stderr
    state = state_doc(example_dir)
    assert state["version"] == 1
    assert state["task"] == TASK
    assert state["serial"] == int(summary.group(1)) >= 4  # at least: the new task, then one write per resource
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", state["lineage"])
    assert [(r["role"], r["provider"], r["type"], r["name"], r["id"], r["attributes"]) for r in state["resources"]] == [
        ("output", "files", "file", t, f"out/{t}_cdc_events.jsonl", {"path": f"out/{t}_cdc_events.jsonl"}) for t in TABLES
    ]
    assert [s["name"] for s in state["streams"]] == list(TABLES)
    lineage, serial = state["lineage"], state["serial"]

    result = cli("plan", "--detailed-exitcode", "local.hcl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes. Your infrastructure matches the configuration." in result.stdout

    ok(cli("run", "--once", "local.hcl"))
    total = 0
    for table in TABLES:
        lines = out_file(example_dir, table).read_bytes().splitlines()
        total += len(lines)
        assert len(lines) == len(rows[table])
        for raw, (envelope, end) in zip(lines, rows[table], strict=True):  # only its table's rows, in input order
            got = json.loads(raw)
            assert got.pop("stream") == table
            assert got.pop("position")["offset"] == end  # with a crc32 of that line
            assert got == envelope
    assert total == 60

    result = ok(cli("status", "local.hcl"))
    assert f"Task {TASK} — state serial {serial}, lineage {lineage}" in result.stdout
    assert "state lock: free" in result.stdout and "run lock: free" in result.stdout
    for table in TABLES:
        size = out_file(example_dir, table).stat().st_size
        assert re.search(rf'output\.file\["{table}"\]\s+out/{table}_cdc_events\.jsonl\s+present, bytes={size},', result.stdout), result.stdout
        assert re.search(rf'^{table}\s+\{{"crc32": \d+, "offset": {last_offsets[table]}\}}\s', result.stdout, re.M), result.stdout

    report = json.loads(ok(cli("status", "--json", "local.hcl")).stdout)
    assert report["task"] == TASK and report["serial"] == serial and report["lineage"] == lineage
    assert report["locks"] == {"run": None, "state": None}
    assert [(r["address"], r["id"], r["provider"], r["status"]["status"], r["status"]["bytes"]) for r in report["resources"]] == [
        (f'output.file["{t}"]', f"out/{t}_cdc_events.jsonl", "files", "present", out_file(example_dir, t).stat().st_size) for t in TABLES
    ]
    assert {s["name"]: s["checkpoint"]["offset"] for s in report["streams"]} == {t: last_offsets[t] for t in TABLES}
    assert all(s["updated_at"] for s in report["streams"])

    before = {t: out_file(example_dir, t).read_bytes() for t in TABLES}
    ok(cli("run", "--once", "local.hcl"))
    assert {t: out_file(example_dir, t).read_bytes() for t in TABLES} == before, "a second run must resume after its checkpoints"
    positions = {name: entry["position"] for name, entry in json.loads(checkpoints_file.read_text())["streams"].items()}
    assert {t: p["offset"] for t, p in positions.items()} == {t: last_offsets[t] for t in TABLES}

    result = ok(cli("destroy", "--auto-approve", "local.hcl"))
    assert "Plan: 0 to add, 0 to change, 3 to destroy." in result.stdout
    assert "Destroy complete! Resources: 3 destroyed." in result.stdout
    for table in TABLES:
        assert not out_file(example_dir, table).exists()
    state = state_doc(example_dir)
    assert state["resources"] == [] and state["streams"] == []
    assert state["lineage"] == lineage and state["serial"] > serial
    assert not checkpoints_file.exists()

    result = cli("plan", "--detailed-exitcode", "local.hcl")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in result.stdout


def test_plan_json(dstream, example_dir: Path) -> None:
    result = ok(dstream("plan", "--json", "local.hcl", cwd=example_dir, env=ENV))
    plan = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert plan["task"] == TASK
    assert plan["format_version"] == "1"
    assert plan["state"]["serial"] == 0
    assert plan["refreshed"] is True
    assert plan["summary"] == {"add": 3, "change": 0, "destroy": 0, "adopt": 0}
    assert [(c["address"], c["action"], c["before"], c["after"]) for c in plan["resource_changes"]] == [
        (f'output.file["{t}"]', "create", None, {"path": f"out/{t}_cdc_events.jsonl"}) for t in TABLES
    ]
    assert plan["resource_drift"] == []
    assert [s["name"] for s in plan["streams"]] == list(TABLES)


def test_saved_plan_is_applied_to_a_new_task(dstream, example_dir: Path) -> None:
    """plan --out before the first init, then init --plan: the plan was made against "no state" and still is."""
    result = ok(dstream("plan", "--out", "tfplan.json", "local.hcl", cwd=example_dir, env=ENV))
    assert "Saved the plan to tfplan.json. Apply it with: dstream init local.hcl --plan tfplan.json" in result.stdout
    saved = example_dir / "tfplan.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["summary"]["add"] == 3
    assert not (example_dir / "out").exists()

    result = ok(dstream("init", "--plan", "tfplan.json", "local.hcl", cwd=example_dir, env=ENV))
    assert "Init complete! Resources: 3 added, 0 changed, 0 destroyed." in result.stdout
    assert all(out_file(example_dir, t).is_file() for t in TABLES)
    assert [r["name"] for r in state_doc(example_dir)["resources"]] == list(TABLES)


def test_saved_plan_is_applied_to_an_existing_task(dstream, example_dir: Path) -> None:
    ok(dstream("init", "local.hcl", cwd=example_dir, env=ENV))
    out_file(example_dir, "Persons").unlink()
    result = ok(dstream("plan", "--out", "fix.plan", "local.hcl", cwd=example_dir, env=ENV))
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in result.stdout
    assert not out_file(example_dir, "Persons").exists()

    result = ok(dstream("init", "--plan", "fix.plan", "local.hcl", cwd=example_dir, env=ENV))
    assert "Init complete! Resources: 1 added, 0 changed, 0 destroyed." in result.stdout
    assert out_file(example_dir, "Persons").is_file()


def test_stale_saved_plan_is_refused(dstream, example_dir: Path) -> None:
    ok(dstream("plan", "--out", "old.plan", "local.hcl", cwd=example_dir, env=ENV))
    ok(dstream("init", "local.hcl", cwd=example_dir, env=ENV))
    state_before = (example_dir / ".dstream" / f"{TASK}.state.json").read_bytes()

    result = dstream("init", "--plan", "old.plan", "local.hcl", cwd=example_dir, env=ENV)
    error_line(result, 1, "stale")
    assert (example_dir / ".dstream" / f"{TASK}.state.json").read_bytes() == state_before


def test_plan_no_refresh_does_not_touch_outputs(dstream, example_dir: Path) -> None:
    result = ok(dstream("plan", "--no-refresh", "local.hcl", cwd=example_dir, env=ENV))
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in result.stdout
    assert not (example_dir / "out").exists()

    ok(dstream("init", "local.hcl", cwd=example_dir, env=ENV))
    out_file(example_dir, "Orders").unlink()
    before = out_snapshot(example_dir)
    result = dstream("plan", "--no-refresh", "--detailed-exitcode", "local.hcl", cwd=example_dir, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes." in result.stdout  # state is the truth without refresh: the deletion is not seen
    assert "has been deleted" not in result.stdout
    assert out_snapshot(example_dir) == before
    assert sorted(before) == ["Customers_cdc_events.jsonl", "Persons_cdc_events.jsonl"]


def test_drift_deleted_output_file(dstream, example_dir: Path) -> None:
    ok(dstream("init", "local.hcl", cwd=example_dir, env=ENV))
    out_file(example_dir, "Orders").unlink()

    result = dstream("plan", "--detailed-exitcode", "local.hcl", cwd=example_dir, env=ENV)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Objects have changed outside of dstream" in result.stdout
    assert '# output.file["Orders"] has been deleted' in result.stdout
    assert '# output.file["Orders"] will be created' in result.stdout
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in result.stdout
    assert not out_file(example_dir, "Orders").exists(), "plan must not repair drift"

    result = ok(dstream("init", "local.hcl", cwd=example_dir, env=ENV))
    assert "Resources: 1 added, 0 changed, 0 destroyed." in result.stdout
    assert out_file(example_dir, "Orders").is_file()
    result = dstream("plan", "--detailed-exitcode", "local.hcl", cwd=example_dir, env=ENV)
    assert result.returncode == 0 and "No changes." in result.stdout, result.stdout + result.stderr
