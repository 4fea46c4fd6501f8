"""Providers that are not built-in Python: a bash input speaking protocol v1, and legacy (pre-protocol) providers."""

from __future__ import annotations

import json
from pathlib import Path

from ._support import checkpoints, copy_provider, external, files_output, generator_input, ok, write_task

LEGACY_WARNING = "does not speak protocol v1: treated as managing nothing"


def shell_task(directory: Path, count: int) -> Path:
    return write_task(directory, "shell", external("./shell_input.sh", f"      count = {count}"), files_output())


def shell_seqs(directory: Path) -> list[int]:
    lines = (directory / "out" / "Shell_cdc_events.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        assert row["stream"] == "Shell" and row["data"]["Name"] == f"shell-{row['data']['ID']}"
    return [row["position"]["seq"] for row in rows]


def test_bash_input_provider(dstream, tmp_path: Path) -> None:
    copy_provider("shell_input.sh", tmp_path)
    shell_task(tmp_path, 5)

    result = ok(dstream("validate", "task.hcl"))
    assert "input ./shell_input.sh -> output files (streams: Shell)" in result.stdout
    result = ok(dstream("init", "task.hcl"))
    assert "Resources: 1 added, 0 changed, 0 destroyed." in result.stdout
    target = tmp_path / "out" / "Shell_cdc_events.jsonl"
    assert target.is_file() and target.stat().st_size == 0

    result = ok(dstream("run", "--once", "task.hcl"))
    assert "[input:./shell_input.sh] shell-input: emitting seq 1..5" in result.stderr
    assert shell_seqs(tmp_path) == [1, 2, 3, 4, 5]
    assert checkpoints(tmp_path / ".dstream" / "shell.checkpoints.json") == {"Shell": {"seq": 5}}

    shell_task(tmp_path, 8)  # more changes upstream
    result = ok(dstream("run", "--once", "task.hcl"))
    assert "shell-input: emitting seq 6..8" in result.stderr, "the checkpoint must be handed back to the input"
    assert shell_seqs(tmp_path) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert checkpoints(tmp_path / ".dstream" / "shell.checkpoints.json") == {"Shell": {"seq": 8}}
    report = json.loads(ok(dstream("status", "--json", "task.hcl")).stdout)
    assert report["streams"][0]["name"] == "Shell" and report["streams"][0]["checkpoint"] == {"seq": 8}

    result = ok(dstream("run", "--once", "task.hcl"))
    assert "shell-input: emitting seq 9..8" in result.stderr
    assert shell_seqs(tmp_path) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_legacy_output_provider(dstream, tmp_path: Path) -> None:
    copy_provider("legacy_output.sh", tmp_path)
    write_task(tmp_path, "legacy", generator_input(7), external("./legacy_output.sh"))

    result = dstream("plan", "--detailed-exitcode", "task.hcl")
    assert result.returncode == 0, result.stdout + result.stderr  # it manages nothing, so nothing changes
    assert f"Warning: output provider './legacy_output.sh' {LEGACY_WARNING}" in result.stderr
    assert "No changes." in result.stdout
    result = ok(dstream("init", "task.hcl"))
    assert LEGACY_WARNING in result.stderr
    assert "Resources: 0 added, 0 changed, 0 destroyed." in result.stdout
    state = json.loads((tmp_path / ".dstream" / "legacy.state.json").read_text())
    assert state["resources"] == [] and state["serial"] >= 1

    before = (tmp_path / "legacy.out").read_text().splitlines() if (tmp_path / "legacy.out").exists() else []
    ok(dstream("run", "--once", "task.hcl"))
    new = [json.loads(line) for line in (tmp_path / "legacy.out").read_text().splitlines()[len(before):]]
    assert new[0]["command"] == "run" and new[0]["role"] == "output"  # its envelope: the first stdin line
    data = new[1:]
    assert [row["data"]["ID"] for row in data] == [1, 2, 3, 4, 5, 6, 7]
    assert [row["stream"] for row in data] == ["Orders", "Customers", "Persons", "Orders", "Customers", "Persons", "Orders"]
    assert not (tmp_path / ".dstream" / "legacy.checkpoints.json").exists(), "a legacy output acknowledges nothing"


def test_legacy_input_provider(dstream, tmp_path: Path) -> None:
    copy_provider("legacy_input.sh", tmp_path)
    write_task(tmp_path, "old", external("./legacy_input.sh"), files_output())

    result = dstream("plan", "--detailed-exitcode", "task.hcl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"Warning: input provider './legacy_input.sh' {LEGACY_WARNING}" in result.stderr
    assert "No changes." in result.stdout  # no streams announced, so the output wants no files

    plan = json.loads(ok(dstream("plan", "--json", "task.hcl")).stdout)
    assert plan["legacy_providers"] == ["input"]
    assert plan["resource_changes"] == [] and plan["streams"] == []
