"""Helpers shared by the end-to-end tests in tests/cli."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLI_PROVIDERS = Path(__file__).resolve().parent / "providers"
SHARED_PROVIDERS = ROOT / "tests" / "providers"
GENERATOR_TABLES = ("Persons", "Orders", "Customers")  # generator default: change i goes to tables[i % 3]


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a clean success (exit 0, no traceback) and hand the result back."""
    assert result.returncode == 0, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    return result


def error_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str, allow: tuple[str, ...] = ("[",)) -> str:
    """Assert a failure the way a user sees it and return its Error: line.

    The exit code is `code`, nothing anywhere is a traceback, the last non-empty
    stderr line is the one and only line starting with "Error:", the lines before
    it start with one of `allow` (provider log lines are "[role:provider] ..."),
    and the Error: line holds every fragment.
    """
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    assert result.returncode == code, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, describe(result)
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, describe(result)
    assert lines[-1] == errors[0], describe(result)
    for line in lines[:-1]:
        assert line.startswith(allow), f"unexpected stderr line {line!r}\n{describe(result)}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def copy_provider(name: str, directory: Path) -> Path:
    """Copy a helper provider next to a task file; python ones get this interpreter."""
    source = CLI_PROVIDERS / name if (CLI_PROVIDERS / name).exists() else SHARED_PROVIDERS / name
    target = directory / name
    if name.endswith(".py"):
        text = source.read_text().split("\n", 1)[1]
        target.write_text(f"#!{sys.executable}\n{text}")
    else:
        shutil.copyfile(source, target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def write_task(directory: Path, name: str, input_block: str, output_block: str, file: str = "task.hcl") -> Path:
    """A task file with the given input { } and output { } bodies."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file
    path.write_text(f'task "{name}" {{\n  type = "providers"\n  input {{\n{input_block}\n  }}\n  output {{\n{output_block}\n  }}\n}}\n')
    return path


def generator_input(count: int, extra: str = "") -> str:
    return f'    provider = "generator"\n    config {{\n      count = {count}\n{extra}    }}'


def files_output(directory: str = "out") -> str:
    return f'    provider = "files"\n    config {{\n      directory = "{directory}"\n    }}'


def external(path: str, config: str = "") -> str:
    return f'    provider_path = "{path}"' + (f"\n    config {{\n{config}\n    }}" if config else "")


def dstream_env(pyz: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the `dstream` fixture uses, for processes started by hand."""
    env = {**os.environ, "SHIV_ROOT": str(pyz.parent / ".shiv"), **(extra or {})}
    env.pop("NO_COLOR", None)
    return env


def start(pyz: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `python dstream.pyz ARGS` in the background; stderr (and stdout) go to `log`."""
    sink = open(log or cwd / "dstream.log", "ab")
    try:
        return subprocess.Popen([sys.executable, str(pyz), *args], cwd=cwd, env=dstream_env(pyz, env), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    finally:
        sink.close()


def checkpoints(path: Path) -> dict[str, Any] | None:
    """{stream: position} from a checkpoints file, None while it does not exist."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return {name: entry["position"] for name, entry in doc["streams"].items()}


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children(pid: int) -> list[int]:
    """Live direct children of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None and info[1] == pid and info[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    info = _stat(pid)
    return info is not None and info[0] != "Z"  # a zombie has exited; it only waits for a reaper


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


LOCK_HOLDER = r"""
import fcntl, json, sys
path, lock_id = sys.argv[1], sys.argv[2]
handle = open(path, "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.seek(0)
handle.truncate()
handle.write(json.dumps({"id": lock_id, "operation": "init", "who": "alice@build-host (pid 4242)", "version": "0.1.0",
                         "created": "2026-01-01T00:00:00Z"}))
handle.flush()
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def lock_held(lock_file: Path, lock_id: str) -> Iterator[None]:
    """Another process holds the flock on `lock_file` (with its LockInfo in it) for the block."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock_file), lock_id], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
