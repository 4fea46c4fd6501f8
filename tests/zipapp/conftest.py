"""Where the built zipapp runs: the host's interpreter, or a Debian root filesystem's python3."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .rootfs import WORK, Rootfs

COUNTER = itertools.count()


class Where:
    """Runs `python dstream.pyz ARGS` in a fresh work directory, on the host or in a root filesystem."""

    def __init__(self, name: str, pyz: Path, host_tmp: Path, rootfs: Rootfs | None, python: str = sys.executable) -> None:
        self.name, self.rootfs, self.python = name, rootfs, python
        self.pyz = rootfs.install_pyz(pyz) if rootfs else str(pyz)
        self.host_tmp = host_tmp

    def workdir(self) -> tuple[Path, str]:
        """A new empty directory: its host path and the path the interpreter sees."""
        inner = f"{WORK}/case-{next(COUNTER)}"
        host = self.rootfs.inside(inner) if self.rootfs else self.host_tmp / inner.lstrip("/")
        shutil.rmtree(host, ignore_errors=True)
        host.mkdir(parents=True)
        return host, (inner if self.rootfs else str(host))

    def dstream(self, *args: str, cwd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self.rootfs:
            return self.rootfs.run(["python3", self.pyz, *args], cwd=cwd, timeout=timeout)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DSTREAM_"))}
        env["SHIV_ROOT"] = str(self.host_tmp / "shiv")
        return subprocess.run([self.python, self.pyz, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def rootfs_or_skip(name: str) -> Iterator[Rootfs]:
    rootfs = Rootfs(name)
    reason = rootfs.missing()
    if reason:
        pytest.skip(reason)
    rootfs.mount()
    try:
        yield rootfs
    finally:
        rootfs.unmount()


def pyenv_python(minor: str) -> str | None:
    """A pyenv-built CPython of this minor version on this machine (the CI image has 3.10 and 3.12), if any."""
    found = sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python{minor}"))
    return str(found[-1]) if found else None


@pytest.fixture(scope="session", params=["host-3.11", "pyenv-3.10", "pyenv-3.12", "trixie-3.13", "sid-3.14"])
def where(request: pytest.FixtureRequest, pyz: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Where]:
    """Each interpreter CI has: the host's, pyenv's 3.10 and 3.12 when the machine has them, Debian
    trixie's 3.13 and sid's 3.14 (python3, unixodbc, tdsodbc only)."""
    name = request.param
    if name.startswith("host"):
        yield Where(name, pyz, tmp_path_factory.mktemp("host"), None)
        return
    if name.startswith("pyenv"):
        python = pyenv_python(name.split("-")[1])
        if python is None:
            pytest.skip(f"no pyenv CPython {name.split('-')[1]} on this machine")
        yield Where(name, pyz, tmp_path_factory.mktemp(name), None, python)
        return
    yield from (Where(name, pyz, Path("/"), rootfs) for rootfs in rootfs_or_skip(name.split("-")[0]))


@pytest.fixture(scope="session")
def bullseye(pyz: Path) -> Iterator[Where]:
    """Debian bullseye: python3 is 3.9, outside the set."""
    yield from (Where("bullseye-3.9", pyz, Path("/"), rootfs) for rootfs in rootfs_or_skip("bullseye"))


@pytest.fixture(scope="session")
def no_unixodbc(pyz: Path) -> Iterator[Where]:
    """Debian trixie with python3 alone: no unixODBC."""
    yield from (Where("trixie-noodbc", pyz, Path("/"), rootfs) for rootfs in rootfs_or_skip("trixie-noodbc"))
