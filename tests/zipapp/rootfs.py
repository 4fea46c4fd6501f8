"""Debian root filesystems (.ci/rootfs/NAME, made by .ci/rootfs.sh) to run the zipapp under their python3.

Each holds only what a user would install (python3, and unixodbc + tdsodbc where named), never
the project's pip dependencies. The chroot shares the host's network namespace, so the host's
test peers on 127.0.0.1 are reachable from inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOTFS = ROOT / ".ci" / "rootfs"
WORK = "/tmp/dstream-zipapp"  # inside the root filesystem


class Rootfs:
    def __init__(self, name: str) -> None:
        self.name = name
        self.path = ROOTFS / name
        self.mounted: list[Path] = []

    def missing(self) -> str | None:
        """Why this root filesystem cannot be used here, or None."""
        if os.geteuid() != 0:
            return "chroot needs root"
        if not (self.path / ".dstream-ready").is_file():
            return f"{self.path.relative_to(ROOT)} is absent: make it with `bash .ci/rootfs.sh` (as .ci/run does)"
        return None

    def mount(self) -> None:
        for target, args in (("proc", ["-t", "proc", "proc"]), ("dev/shm", ["-t", "tmpfs", "tmpfs"])):
            where = self.path / target
            where.mkdir(parents=True, exist_ok=True)
            if subprocess.run(["mountpoint", "-q", str(where)]).returncode != 0:
                subprocess.run(["mount", *args, str(where)], check=True)
                self.mounted.append(where)

    def unmount(self) -> None:
        for where in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(where)], check=False)
        self.mounted.clear()

    def inside(self, relative: str) -> Path:
        """A host path for a path inside the root filesystem."""
        return self.path / relative.lstrip("/")

    def install_pyz(self, pyz: Path) -> str:
        """Copy the zipapp in (a fresh unpack directory each session); its path inside."""
        work = self.inside(WORK)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.copyfile(pyz, work / "dstream.pyz")
        return f"{WORK}/dstream.pyz"

    def run(self, argv: list[str], cwd: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """argv in cwd (a path inside), with a user's plain environment."""
        plain = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "SHIV_ROOT": f"{WORK}/.shiv", **(env or {})}
        command = ["chroot", str(self.path), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in plain.items()),
                   "/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
