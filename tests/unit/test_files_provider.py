"""The `files` output as a process: torn tails, full disks, short writes, adopted files, edited plans."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATH = "out/Persons_cdc_events.jsonl"
STREAMS = [{"name": "Persons", "table": "Persons", "schema": "dbo"}]


def change(i: int) -> bytes:
    return json.dumps({"data": {"ID": i}, "metadata": {"TableName": "Persons"}, "stream": "Persons",
                       "position": {"seq": i}}).encode() + b"\n"


def state(path: str = PATH, **extra: Any) -> list[dict[str, Any]]:
    return [{"type": "file", "name": "Persons", "id": path, "attributes": {"path": path, **extra}}]


def envelope(command: str, config: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"protocol": 1, "command": command, "task": "t", "role": "output", "config": config or {},
            "streams": STREAMS, "resources": state(), **fields}


def files(cwd: Path, env: dict[str, Any], data: bytes = b"", limit: int | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m providers.files` with `env` as its envelope and `data` after it (optionally under RLIMIT_FSIZE)."""

    def file_size_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "providers.files"], input=json.dumps(env).encode() + b"\n" + data,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60,
                          preexec_fn=file_size_limit)


def messages(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def acknowledged(result: subprocess.CompletedProcess[bytes]) -> list[Any]:
    return [m["position"] for m in messages(result) if m["type"] == "checkpoint"]


def one_error(result: subprocess.CompletedProcess[bytes], fragment: str) -> None:
    """Failed with exit 1 and one `error` line (the last) naming the failure; no traceback."""
    text = f"exit {result.returncode}\n{result.stdout.decode()}\n{result.stderr.decode()}"
    assert result.returncode == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    errors = [m for m in messages(result) if m["type"] == "error"]
    assert len(errors) == 1 and errors[0] == messages(result)[-1], text
    assert fragment in errors[0]["message"], text


@pytest.fixture
def task(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / PATH).write_bytes(b"")
    return tmp_path


# --- run: torn tails, full disks, short writes -------------------------------------


def test_torn_tail_is_cut_before_appending(task: Path) -> None:
    """A crash mid-write left half a line; the change it held was never acknowledged and comes again."""
    (task / PATH).write_bytes(change(1) + change(2)[:17])
    result = files(task, envelope("run"), change(2) + change(3))
    assert result.returncode == 0, result.stderr
    assert (task / PATH).read_bytes() == change(1) + change(2) + change(3)
    assert acknowledged(result) == [{"seq": 3}]
    assert b"cut an incomplete last line (17 bytes)" in result.stderr


def test_file_without_any_newline_is_emptied(task: Path) -> None:
    (task / PATH).write_bytes(change(1)[:-1])
    assert files(task, envelope("run"), change(1)).returncode == 0
    assert (task / PATH).read_bytes() == change(1)


def test_full_disk_is_one_error_and_acknowledges_nothing(task: Path) -> None:
    (task / PATH).unlink()
    (task / PATH).symlink_to("/dev/full")  # every write: ENOSPC
    result = files(task, envelope("run"), change(1) + change(2))
    one_error(result, f"no space left on device writing {PATH}")
    assert acknowledged(result) == []


def test_short_write_is_cut_back_to_the_last_acknowledged_line(task: Path) -> None:
    """Past RLIMIT_FSIZE a write is short, then fails (EFBIG): no partial line may stay behind."""
    before = b"".join(change(i) for i in range(1, 4))
    (task / PATH).write_bytes(before)
    data = b"".join(change(i) for i in range(4, 200))
    result = files(task, envelope("run"), data, limit=len(before) + 1000)
    one_error(result, f"file too large writing {PATH}")
    assert acknowledged(result) == []
    assert (task / PATH).read_bytes() == before


def test_fsync_false_still_writes_whole_lines(task: Path) -> None:
    data = b"".join(change(i) for i in range(1, 50))
    result = files(task, envelope("run", {"fsync": False}), data)
    assert result.returncode == 0, result.stderr
    assert (task / PATH).read_bytes() == data
    assert acknowledged(result)[-1] == {"seq": 49}


# --- adopted files -----------------------------------------------------------------


def test_adopt_is_recorded_and_destroy_leaves_the_file(task: Path) -> None:
    (task / PATH).write_bytes(change(1))
    result = files(task, envelope("init", {"adopt_existing": True}, resources=[]))
    assert result.returncode == 0, result.stderr
    created = [m for m in messages(result) if m["type"] == "resource"]
    assert [(m["action"], m["resource"]["attributes"]) for m in created] == [("created", {"path": PATH, "adopted": True})]

    result = files(task, envelope("plan", {"adopt_existing": True}, resources=state(adopted=True)))
    assert [m["type"] for m in messages(result)] == ["hello"], "an adopted file is no drift and no change"

    result = files(task, envelope("destroy", resources=state(adopted=True)))
    assert result.returncode == 0, result.stderr
    assert [(m["action"], m["resource"]["name"]) for m in messages(result) if m["type"] == "resource"] == [("deleted", "Persons")]
    assert f"left in place (adopted): {PATH}".encode() in result.stderr
    assert (task / PATH).read_bytes() == change(1)


def test_destroy_adopted_deletes_adopted_files(task: Path) -> None:
    result = files(task, envelope("destroy", {"destroy_adopted": True}, resources=state(adopted=True)))
    assert result.returncode == 0, result.stderr
    assert not (task / PATH).exists()


def test_destroy_deletes_the_files_it_created(task: Path) -> None:
    assert files(task, envelope("destroy")).returncode == 0
    assert not (task / PATH).exists()


# --- init of a saved (maybe edited) plan -------------------------------------------


def replace_change(before: str, after: str) -> dict[str, Any]:
    return {"action": "replace", "resource": {"type": "file", "name": "Persons"}, "before": {"path": before},
            "after": {"path": after}, "replace_paths": ["path"]}


@pytest.mark.parametrize("edited", [
    {"action": "delete", "resource": {"type": "file", "name": "Orders"}, "before": {"path": "victim.txt"}, "after": None, "replace_paths": []},
    {"action": "delete", "resource": {"type": "file", "name": "Persons"}, "before": {"path": "victim.txt"}, "after": None, "replace_paths": []},
    replace_change("victim.txt", PATH),
    {"action": "create", "resource": {"type": "file", "name": "Persons"}, "before": None, "after": {"path": "victim.txt"}, "replace_paths": []},
    {"action": "adopt", "resource": {"type": "file", "name": "Persons"}, "before": None, "after": {"path": PATH}, "replace_paths": []},
], ids=["delete-not-in-state", "delete-other-path", "replace-other-path", "create-other-path", "adopt-not-allowed"])
def test_edited_plan_is_refused_before_touching_anything(task: Path, edited: dict[str, Any]) -> None:
    (task / "victim.txt").write_bytes(b"not ours\n")
    (task / PATH).write_bytes(change(1))
    harmless: dict[str, Any] = {"action": "create", "resource": {"type": "file", "name": "Orders"}, "before": None,
                "after": {"path": "out/Orders_cdc_events.jsonl"}, "replace_paths": []}
    streams = [*STREAMS, {"name": "Orders", "table": "Orders", "schema": "dbo"}]
    result = files(task, envelope("init", streams=streams, changes=[harmless, edited]))
    one_error(result, "the plan would")
    assert [m for m in messages(result) if m["type"] == "resource"] == []
    assert (task / "victim.txt").read_bytes() == b"not ours\n"
    assert (task / PATH).read_bytes() == change(1)
    assert not (task / "out/Orders_cdc_events.jsonl").exists()


def test_replace_onto_an_unmanaged_file_keeps_both(task: Path) -> None:
    (task / PATH).write_bytes(change(1))
    (task / "new").mkdir()
    (task / "new/Persons_cdc_events.jsonl").write_bytes(b"someone else's\n")
    config = {"directory": "new"}
    result = files(task, envelope("init", config, changes=[replace_change(PATH, "new/Persons_cdc_events.jsonl")]))
    one_error(result, "new/Persons_cdc_events.jsonl exists but is not managed by this task")
    assert (task / PATH).read_bytes() == change(1)
    assert (task / "new/Persons_cdc_events.jsonl").read_bytes() == b"someone else's\n"


def test_replace_by_another_spelling_of_the_same_path_keeps_the_data(task: Path) -> None:
    (task / PATH).write_bytes(change(1))
    result = files(task, envelope("init", {"directory": "./out"}))
    assert result.returncode == 0, result.stderr
    applied = [(m["action"], m["resource"]["attributes"]) for m in messages(result) if m["type"] == "resource"]
    assert applied == [("deleted", {"path": PATH}), ("created", {"path": "./out/Persons_cdc_events.jsonl"})]
    assert (task / PATH).read_bytes() == change(1)


def test_replace_moves_to_the_new_file(task: Path) -> None:
    result = files(task, envelope("init", {"directory": "new"}))
    assert result.returncode == 0, result.stderr
    assert not (task / PATH).exists() and (task / "new/Persons_cdc_events.jsonl").is_file()


def test_a_file_that_cannot_be_deleted_is_one_error(task: Path) -> None:
    (task / PATH).unlink()
    (task / PATH).mkdir()  # os.remove: EISDIR
    one_error(files(task, envelope("destroy")), f"cannot delete {PATH}")
