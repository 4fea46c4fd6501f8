"""The `jsonl` input through the built zipapp: a last line still being written, a rotated file."""

from __future__ import annotations

import json
from pathlib import Path

from ._support import checkpoints, error_line, files_output, ok, write_task

INPUT = '    provider = "jsonl"\n    config {\n      path = "changes.jsonl"\n    }'


def change(i: int) -> bytes:
    return json.dumps({"data": {"ID": i}, "metadata": {"TableName": "Persons", "Schema": "dbo", "OperationType": "Insert"}}).encode() + b"\n"


def delivered(directory: Path) -> list[int]:
    return [json.loads(line)["data"]["ID"] for line in (directory / "out" / "Persons_cdc_events.jsonl").read_bytes().splitlines()]


def test_run_once_stops_at_the_last_complete_line(dstream, tmp_path: Path) -> None:
    (tmp_path / "changes.jsonl").write_bytes(change(1) + change(2) + change(3)[:20])  # change 3 is still being written
    write_task(tmp_path, "t", INPUT, files_output())
    ok(dstream("init", "task.hcl"))
    ok(dstream("run", "--once", "task.hcl"))
    assert delivered(tmp_path) == [1, 2]

    with open(tmp_path / "changes.jsonl", "ab") as handle:
        handle.write(change(3)[20:])
    ok(dstream("run", "--once", "task.hcl"))
    assert delivered(tmp_path) == [1, 2, 3]


def test_rotated_input_fails_loudly(dstream, tmp_path: Path) -> None:
    (tmp_path / "changes.jsonl").write_bytes(change(1) + change(2))
    write_task(tmp_path, "t", INPUT, files_output())
    ok(dstream("init", "task.hcl"))
    ok(dstream("run", "--once", "task.hcl"))
    saved = checkpoints(tmp_path / ".dstream" / "t.checkpoints.json")

    (tmp_path / "changes.jsonl").write_bytes(change(7) + change(8) + change(9))  # rotated: a new file, longer
    result = dstream("run", "--once", "task.hcl")
    error_line(result, 5, "input provider 'jsonl'", "changes.jsonl is not the file stream Persons was read from", "replaced or rewritten")
    assert delivered(tmp_path) == [1, 2]
    assert checkpoints(tmp_path / ".dstream" / "t.checkpoints.json") == saved

    (tmp_path / "changes.jsonl").write_bytes(change(7))  # truncated: shorter than the checkpoint
    error_line(dstream("run", "--once", "task.hcl"), 5, "changes.jsonl", "truncated or replaced")
    assert delivered(tmp_path) == [1, 2]
