"""Builds dist/dstream.pyz: one reproducible zipapp for CPython 3.10-3.14 on Linux x86_64 and aarch64.

1. Wheels: dstream's own (pip wheel .) and, for every (interpreter, machine) pair,
   the binary wheels of the pinned dependencies (pip download --only-binary for
   that interpreter's tags on manylinux2014). Pins are exact (pyproject.toml),
   so every pair resolves to the same versions.
2. One site-packages: every wheel unpacked into it. Pure-Python files are shared
   and must be byte-identical across wheels; compiled extension files carry
   their interpreter and machine in the name (pyodbc.cpython-313-aarch64-linux-gnu.so),
   so the import system picks the right one. abi3 wheels (one file name for every
   interpreter and machine) go under _abi3/<machine>/, which _dstream_abi3.pth puts
   on sys.path; a package with a pure-Python fallback ships its pure wheel.
3. shiv's archive, without shiv's compile-all at first run (it compiled every module of
   every SDK, several seconds): each interpreter compiles what it imports, once, into
   the unpacked copy (_dstream_boot lets it write bytecode). Its __main__ first runs _dstream_boot.check() (the one-line
   refusal of an interpreter or platform outside the set), then shiv's bootstrap.

Run by build.sh (which sets SOURCE_DATE_EPOCH): python packaging/build_pyz.py OUTPUT
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
MACHINES = ("x86_64", "aarch64")
PURE_ONLY = {"charset_normalizer"}  # compiled speed-ups with a pure-Python fallback: ship the py3-none-any wheel
MAIN = "# -*- coding: utf-8 -*-\nimport _dstream_boot\n_dstream_boot.check()\nimport _bootstrap\n_bootstrap.bootstrap()\n"
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


class BuildError(Exception):
    pass


def pip(*args: str, target: str = "") -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"], capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]
        raise BuildError(f"pip {args[0]} failed{target}: {' '.join(lines[-3:])}")


def dependencies() -> list[str]:
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def download(wheels: Path, requirements: list[str]) -> None:
    """Every pair's wheels, four pip processes at a time (each mostly waits on the index), each into its own folder."""
    jobs: list[tuple[Path, list[str], str]] = []
    for python in PYTHONS:
        abi = "cp" + python.replace(".", "")
        for machine in MACHINES:
            jobs.append((wheels / f"{abi}-{machine}", ["--implementation", "cp", "--python-version", python, "--abi", abi, "--platform",
                                                    f"manylinux2014_{machine}", "--platform", f"manylinux_2_17_{machine}", *requirements],
                         f" for CPython {python} on {machine}"))
    pure = [r for r in requirements if normal(r.split("==")[0]) in PURE_ONLY]
    jobs.append((wheels / "pure", ["--platform", "any", "--implementation", "py", "--python-version", PYTHONS[0], "--abi", "none", *pure], ""))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for done in [pool.submit(pip, "download", "--only-binary=:all:", "--no-deps", "--dest", str(dest), *args, target=target)
                     for dest, args, target in jobs]:
            done.result()
    for dest, _, _ in jobs:
        for wheel in dest.glob("*.whl"):
            wheel.replace(wheels / wheel.name)


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def py_version(tag: str) -> tuple[int, int]:
    digits = tag.split(".")[0][2:]  # cp38 -> (3, 8), cp311 -> (3, 11)
    return int(digits[0]), int(digits[1:] or 0)


def chosen(wheels: Path) -> list[tuple[Path, str]]:
    """Each wheel to unpack with the directory (relative to site-packages) it goes to."""
    picked: dict[tuple[str, str], Path] = {}
    out: list[tuple[Path, str]] = []
    for wheel in sorted(wheels.glob("*.whl")):
        m = WHEEL_NAME.match(wheel.name)
        if not m:
            raise BuildError(f"unexpected wheel name {wheel.name}")
        name, abi, plat = normal(m["name"]), m["abi"], m["plat"]
        if name in PURE_ONLY and plat != "any":
            continue
        if abi == "abi3":  # the oldest abi3 wheel serves every newer interpreter; one per machine
            machine = next((mach for mach in MACHINES if mach in plat), None)
            if machine is None:
                raise BuildError(f"{wheel.name}: no supported machine in its platform tag")
            key = (name, machine)
            if key not in picked or py_version(m["py"]) < py_version(WHEEL_NAME.match(picked[key].name)["py"]):  # type: ignore[index]
                picked[key] = wheel
            continue
        out.append((wheel, ""))
    out.extend((wheel, f"_abi3/{machine}") for (_, machine), wheel in sorted(picked.items()))
    return out


def unpack(wheel: Path, site: Path, subdir: str, owners: dict[str, str]) -> None:
    """Unpack a wheel's importable files; a shared path must hold the same bytes in every wheel."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue  # scripts, headers, data: not importable, not needed
                name = "/".join(parts[2:])
            elif parts[0].endswith(".dist-info") and parts[-1] in ("RECORD", "WHEEL"):
                continue  # per-wheel bookkeeping (tags, hashes): differs between the wheels of one version
            rel = f"{subdir}/{name}" if subdir else name
            data = archive.read(info)
            target = site / rel
            if target.exists():
                if target.read_bytes() != data:
                    raise BuildError(f"{rel}: {wheel.name} and {owners[rel]} hold different bytes under one name")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode if mode & 0o400 else 0o644)
            owners[rel] = wheel.name


def build(output: Path, work: Path) -> None:
    wheels, site = work / "wheels", work / "site-packages"
    wheels.mkdir()
    site.mkdir()
    pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT))
    download(wheels, dependencies())
    owners: dict[str, str] = {}
    for wheel, subdir in chosen(wheels):
        unpack(wheel, site, subdir, owners)
    shutil.copyfile(HERE / "_dstream_abi3.py", site / "_dstream_abi3.py")
    (site / "_dstream_abi3.pth").write_text("import _dstream_abi3\n")
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache)
    archive = work / "shiv.pyz"
    result = subprocess.run([sys.executable, "-m", "shiv", "--entry-point", "dstream:main", "--output-file", str(archive),
                             "--python", "/usr/bin/env python3", "--site-packages", str(site), "--reproducible", "--compressed"], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"shiv failed: {result.stderr.strip()[-500:]}")
    with_boot(archive, output)


def with_boot(archive: Path, output: Path) -> None:
    """shiv's archive with _dstream_boot.py added and a __main__ that runs it first (same timestamps, same order)."""
    raw = archive.read_bytes()
    shebang = raw[:raw.index(b"\n") + 1]
    tmp = output.with_suffix(".tmp")
    with zipfile.ZipFile(archive) as source, open(tmp, "wb") as fd:
        fd.write(shebang)
        with zipfile.ZipFile(fd, "w") as target:
            main_info = None
            for info in source.infolist():
                if info.filename == "__main__.py":
                    main_info = info
                    continue
                target.writestr(info, source.read(info))
            if main_info is None:
                raise BuildError("shiv's archive has no __main__.py")
            boot = zipfile.ZipInfo("_dstream_boot.py", main_info.date_time)
            boot.compress_type, boot.external_attr = main_info.compress_type, main_info.external_attr
            target.writestr(boot, (HERE / "_dstream_boot.py").read_bytes())
            target.writestr(main_info, MAIN.encode())
    tmp.chmod(0o755)
    tmp.replace(output)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    output = Path(sys.argv[1]).resolve()
    work = Path(tempfile.mkdtemp(prefix="dstream-build-"))
    try:
        build(output, work)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for leftover in (ROOT / "build", *ROOT.glob("*.egg-info")):
            shutil.rmtree(leftover, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
