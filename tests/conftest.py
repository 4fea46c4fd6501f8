"""Shared fixtures: the built zipapp and a helper that runs it like a user would."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TIMEOUT = 120


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (--dist loadgroup), tests that share a machine-wide resource run on one worker: the Debian
    root filesystems (their mounts and one work directory each)."""
    for item in items:
        if item.nodeid.startswith("tests/zipapp/"):
            item.add_marker(pytest.mark.xdist_group("rootfs"))


@pytest.fixture(scope="session")
def pyz() -> Path:
    """dist/dstream.pyz, built once per test session (DSTREAM_PYZ names a prebuilt one)."""
    given = os.environ.get("DSTREAM_PYZ")
    if given:
        return Path(given).resolve()
    (ROOT / "dist").mkdir(exist_ok=True)
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # one id for all the workers of a run
    stamp = ROOT / "dist" / ".built-for-test-run"
    with open(ROOT / "dist" / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds, the others wait and use its build
        if not (run and stamp.is_file() and stamp.read_text() == run):
            subprocess.run(["bash", str(ROOT / "build.sh")], check=True, cwd=ROOT, timeout=600)
            stamp.write_text(run or "")
    return ROOT / "dist" / "dstream.pyz"


@pytest.fixture
def dstream(pyz: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python dstream.pyz ARGS` in tmp_path (or cwd=...), returning the completed process."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "SHIV_ROOT": str(pyz.parent / ".shiv"), **(env or {})}
        full_env.pop("NO_COLOR", None)
        return subprocess.run([sys.executable, str(pyz), *args], cwd=cwd or tmp_path, env=full_env, input=stdin,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """A private copy of examples/ (task files and data) to run the lifecycle in."""
    target = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", target, ignore=shutil.ignore_patterns(".dstream", "out", "bench-out"))
    return target
