"""The `jsonl` input as a process: half-written last lines, truncated and replaced files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def change(i: int, table: str = "Persons") -> bytes:
    return json.dumps({"data": {"ID": i}, "metadata": {"TableName": table, "Schema": "dbo"}}).encode() + b"\n"


def envelope(checkpoints: dict[str, Any] | None = None, once: bool = True, **config: Any) -> bytes:
    env = {"protocol": 1, "command": "run", "task": "t", "role": "input", "config": {"path": "changes.jsonl", **config},
           "streams": [], "resources": [], "checkpoints": checkpoints or {}, "once": once}
    return json.dumps(env).encode() + b"\n"


def jsonl(cwd: Path, env: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "providers.jsonl"], input=env, cwd=cwd, capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def emitted(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def one_error(result: subprocess.CompletedProcess[bytes], *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    return stderr


def test_once_stops_at_the_last_complete_line(tmp_path: Path) -> None:
    """A line still being written (no newline yet) is not complete: it is neither sent nor an error."""
    (tmp_path / "changes.jsonl").write_bytes(change(1) + change(2) + change(3)[:-9])
    lines = emitted(jsonl(tmp_path, envelope()))
    assert [line["data"]["ID"] for line in lines] == [1, 2]
    assert lines[-1]["position"]["offset"] == len(change(1) + change(2))


def test_resumes_after_its_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "changes.jsonl").write_bytes(change(1) + change(2) + change(3))
    first = emitted(jsonl(tmp_path, envelope()))
    again = emitted(jsonl(tmp_path, envelope({"Persons": first[1]["position"]})))
    assert [line["data"]["ID"] for line in again] == [3]


def test_old_offset_only_positions_still_resume(tmp_path: Path) -> None:
    (tmp_path / "changes.jsonl").write_bytes(change(1) + change(2) + change(3))
    lines = emitted(jsonl(tmp_path, envelope({"Persons": {"offset": len(change(1))}})))
    assert [line["data"]["ID"] for line in lines] == [2, 3]


def test_shorter_file_than_the_checkpoint_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "changes.jsonl").write_bytes(change(1))
    result = jsonl(tmp_path, envelope({"Persons": {"offset": 5000}}))
    one_error(result, "changes.jsonl", "stream Persons", "byte 5000", "truncated or replaced", "dstream destroy")
    assert result.stdout == b""


def test_replaced_file_fails_loudly(tmp_path: Path) -> None:
    """Rotated: a new file as long as the old one, other content. Offsets alone would skip its first lines."""
    (tmp_path / "changes.jsonl").write_bytes(change(1) + change(2))
    checkpoint = emitted(jsonl(tmp_path, envelope()))[-1]["position"]
    (tmp_path / "changes.jsonl").write_bytes(change(7) + change(8) + change(9))
    result = jsonl(tmp_path, envelope({"Persons": checkpoint}))
    one_error(result, "changes.jsonl", "stream Persons", "replaced or rewritten")
    assert result.stdout == b""


def test_grown_file_resumes(tmp_path: Path) -> None:
    (tmp_path / "changes.jsonl").write_bytes(change(1) + change(2))
    checkpoint = emitted(jsonl(tmp_path, envelope()))[-1]["position"]
    with open(tmp_path / "changes.jsonl", "ab") as handle:
        handle.write(change(3))
    assert [line["data"]["ID"] for line in emitted(jsonl(tmp_path, envelope({"Persons": checkpoint})))] == [3]


def follow(cwd: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "providers.jsonl"], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(envelope(once=False, poll_interval=0.05))
    proc.stdin.close()
    return proc


def test_follow_waits_for_a_line_to_be_finished(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    path.write_bytes(change(1) + change(2)[:10])
    proc = follow(tmp_path)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["data"]["ID"] == 1
        time.sleep(0.3)
        with open(path, "ab") as handle:
            handle.write(change(2)[10:])
        assert json.loads(proc.stdout.readline())["data"]["ID"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_follow_fails_when_the_file_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    path.write_bytes(change(1) + change(2))
    proc = follow(tmp_path)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.readline()
        with open(path, "r+b") as handle:  # copytruncate rotation: same file, emptied
            handle.truncate(0)
        assert proc.wait(timeout=20) == 1
        stderr = proc.stderr.read().decode()
        assert "changes.jsonl was truncated to 0 bytes while being followed" in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_follow_fails_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    path.write_bytes(change(1))
    proc = follow(tmp_path)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        (tmp_path / "new.jsonl").write_bytes(change(5) + change(6))
        os.replace(tmp_path / "new.jsonl", path)  # create rotation: a new file under the old name
        assert proc.wait(timeout=20) == 1
        stderr = proc.stderr.read().decode()
        assert "changes.jsonl was replaced while being followed" in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
