"""What the zipapp benchmarks share: building and snapshotting dist/dstream.pyz."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    pass


def ensure_pyz(pyz: Path) -> None:
    if pyz.is_file():
        return
    print(f"{pyz} missing: running ./build.sh", file=sys.stderr)
    subprocess.run(["bash", str(ROOT / "build.sh")], cwd=ROOT, check=True)
    if not pyz.is_file():
        raise BenchError(f"./build.sh did not produce {pyz}")


def snapshot_pyz(pyz: Path, tmp: Path) -> tuple[Path, str]:
    """Copy the zipapp (same file name, same bytes, so the same shiv build id and warm
    extraction under SHIV_ROOT): a rebuild of dist/ during the benchmark cannot pull it
    away mid-run. Returns the copy and its shiv build id."""
    copy = tmp / pyz.name
    try:
        shutil.copy2(pyz, copy)
        with zipfile.ZipFile(copy) as archive:
            build_id = str(json.loads(archive.read("environment.json")).get("build_id", ""))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BenchError(f"cannot snapshot {pyz}: {exc}") from None
    return copy, build_id
