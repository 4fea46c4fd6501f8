"""The zipapp holds each compiled module for every (interpreter, machine) pair it claims (issue 12).

aarch64 and CPython 3.10/3.12 cannot run here; this shows at least that their extension files are
in the archive, under the names their import system looks for, built for the right machine.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

PYTHONS = ("310", "311", "312", "313", "314")
MACHINES = {"x86_64": 62, "aarch64": 183}  # ELF e_machine
# every compiled module the dependencies need; each must exist for all ten pairs
VERSIONED = ("pyodbc", "regex/_regex", "_cffi_backend")
ABI3 = ("cryptography/hazmat/bindings/_rust",)  # one file per machine, under _abi3/<machine>/
PAIRS = [(python, machine) for python in PYTHONS for machine in MACHINES]


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", "not an ELF file"
    return int.from_bytes(data[18:20], "little")


@pytest.fixture(scope="module")
def archive(pyz: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(pyz) as z:
        return {name: z.read(name) for name in z.namelist() if name.endswith(".so")}


@pytest.mark.parametrize(("python", "machine"), PAIRS, ids=[f"cp{p}-{m}" for p, m in PAIRS])
def test_extension_files_for(archive: dict[str, bytes], python: str, machine: str) -> None:
    wanted = [f"site-packages/{module}.cpython-{python}-{machine}-linux-gnu.so" for module in VERSIONED]
    wanted += [f"site-packages/_abi3/{machine}/{module}.abi3.so" for module in ABI3]
    missing = [name for name in wanted if name not in archive]
    assert not missing, f"cp{python} on {machine} lacks {missing}"
    wrong = [name for name in wanted if elf_machine(archive[name]) != MACHINES[machine]]
    assert not wrong, f"built for another machine: {wrong}"


def test_no_other_extension_files(archive: dict[str, bytes]) -> None:
    """A new compiled dependency must be added above (and so be covered for every pair); no pure-fallback speed-ups ship."""
    expected = {f"site-packages/{m}.cpython-{p}-{a}-linux-gnu.so" for m in VERSIONED for p, a in PAIRS}
    expected |= {f"site-packages/_abi3/{a}/{m}.abi3.so" for m in ABI3 for a in MACHINES}
    assert sorted(set(archive) - expected) == []
    assert not [n for n in archive if re.search(r"charset_normalizer", n)]
