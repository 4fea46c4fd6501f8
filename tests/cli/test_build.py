"""The zipapp: reproducible builds, self-contained, runs from anywhere, extracts where SHIV_ROOT says."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from providers import BUILTINS

from ._support import ROOT, describe, ok


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_copy(dest: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored) copied to `dest`: a build there leaves dist/ alone."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    return dest


def build(tree: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", str(tree / "build.sh")], cwd=tree, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def own_files(pyz: Path) -> dict[str, bytes]:
    """dstream's own files in a zipapp (its modules and its dist-info), by name."""
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
        info = [n for n in names if re.fullmatch(r"site-packages/dstream-[^/]+\.dist-info/[^/]+", n)]
        tops = next((archive.read(n).decode().split() for n in info if n.endswith("/top_level.txt")), [])
        own = [*info, *(n for n in names if any(n == f"site-packages/{t}.py" or n.startswith(f"site-packages/{t}/") for t in tops))]
        return {n: archive.read(n) for n in own}


def test_build_is_reproducible(pyz: Path, tmp_path: Path) -> None:
    """A build of a copy of the tree, elsewhere, gives the same bytes as the zipapp under test, or, when that one was
    built from other sources (a stale DSTREAM_PYZ), as a second build of the copy."""
    tree = tree_copy(tmp_path / "tree")
    result = build(tree)
    fresh = tree / "dist" / "dstream.pyz"
    built = sha256(fresh)
    assert re.search(rf"built dist/dstream\.pyz \(.+, sha256 {built[:16]}\.\.\.\)", result.stderr), result.stderr
    if own_files(pyz) == own_files(fresh):
        other = sha256(pyz)  # built from these sources, as .ci/run does: so one more build is enough
    else:
        build(tree)
        other = sha256(fresh)
    assert other == built, "two builds of the same tree must be byte-identical"


def test_size_stays_under_50_mb(pyz: Path) -> None:
    size = pyz.stat().st_size
    assert 5_000_000 < size < 50_000_000, f"dstream.pyz is {size / 1e6:.1f} MB"


def test_runs_from_another_directory(pyz: Path, dstream, tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    copy = elsewhere / "dstream.pyz"
    shutil.copyfile(pyz, copy)  # a copy away from the source tree: it must carry everything it needs
    for target in (pyz, copy):
        version = subprocess.run([sys.executable, str(target), "version"], cwd=elsewhere, capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "SHIV_ROOT": str(tmp_path / "shiv"), "PYTHONPATH": ""})
        assert version.returncode == 0, describe(version)
        first, interpreter, odbc = version.stdout.splitlines()
        assert re.fullmatch(r"dstream 0\.1\.0 \(provider protocol 1, Python 3\.\d+\.\d+\)", first), version.stdout
        assert interpreter == f"interpreter: CPython {platform.python_version()} on linux {platform.machine()} ({sys.executable})", version.stdout
        assert re.fullmatch(r"mssql-cdc: usable; ODBC drivers: .*FreeTDS.*", odbc), version.stdout  # .ci/run installs tdsodbc
    result = ok(dstream("providers", cwd=elsewhere))
    rows = [line.split(None, 2) for line in result.stdout.splitlines()]
    assert [(name, role) for name, role, _ in rows] == sorted((name, spec[1]) for name, spec in BUILTINS.items())
    assert all(description.strip() for _, _, description in rows)


def test_shiv_root_is_honoured(pyz: Path, dstream, tmp_path: Path) -> None:
    root = tmp_path / "extract-here"
    assert not root.exists()
    ok(dstream("version", env={"SHIV_ROOT": str(root)}))
    extracted = [p for p in root.iterdir() if p.name.startswith("dstream.pyz_")]
    assert len(extracted) == 1, list(root.iterdir())
    site = extracted[0] / "site-packages"
    assert (site / "dstream.py").is_file() and (site / "providers" / "files.py").is_file() and (site / "hcl2").is_dir()


def test_every_builtin_provider_runs_from_the_zipapp(pyz: Path, tmp_path: Path) -> None:
    """Each built-in provider, with its subpackages and SDKs, imports and answers from the zipapp alone."""
    env = {**os.environ, "SHIV_ROOT": str(pyz.parent / ".shiv"), "PYTHONPATH": ""}
    for name in BUILTINS:
        reply = subprocess.run([sys.executable, str(pyz), "provider", name], input='{"command":"validate","config":{}}\n', cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in reply.stderr and "ModuleNotFoundError" not in reply.stderr, f"{name}: {reply.stderr}"
        first = json.loads(reply.stdout.splitlines()[0])
        assert first["type"] == "hello" and first["provider"] == name, f"{name}: {reply.stdout}"
