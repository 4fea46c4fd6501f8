"""The `files` output through the built zipapp: torn tails, a full disk, adopted files, edited plans."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ._support import GENERATOR_TABLES, checkpoints, describe, dstream_env, error_line, generator_input, ok, write_task

PERSONS = "out/Persons_cdc_events.jsonl"


def files_config(extra: str = "") -> str:
    return f'    provider = "files"\n    config {{\n      directory = "out"\n{extra}    }}'


def seqs(path: Path, table: str) -> list[int]:
    """The seq of every line of a stream's file; each line must be one whole change of that table."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a partial line"
    found = []
    for number, raw in enumerate(data.splitlines(), start=1):
        line = json.loads(raw)  # a torn or glued line fails here
        assert line["stream"] == table and line["data"]["ID"] == line["position"]["seq"], f"{path.name}:{number}: {raw[:120]!r}"
        found.append(line["position"]["seq"])
    return found


def expected(count: int, table: str) -> list[int]:
    return [i for i in range(1, count + 1) if GENERATOR_TABLES[i % 3] == table]


def state_resources(directory: Path, task: str) -> list[dict[str, Any]]:
    return json.loads((directory / ".dstream" / f"{task}.state.json").read_text())["resources"]


# --- torn tails and a full disk --------------------------------------------------


def test_torn_tail_is_cut_and_its_change_delivered_again(dstream, tmp_path: Path) -> None:
    """A run killed mid-write left half of a change that was never acknowledged: the next run
    must not glue the redelivered change onto it."""
    write_task(tmp_path, "t", generator_input(30), files_config())
    ok(dstream("init", "task.hcl"))
    ok(dstream("run", "--once", "task.hcl"))
    persons = tmp_path / PERSONS
    with open(persons, "ab") as handle:
        handle.write(b'{"data":{"ID":33,"Name":"na')  # seq 33 (a Persons change), torn
    write_task(tmp_path, "t", generator_input(60), files_config())
    result = ok(dstream("run", "--once", "task.hcl"))
    for table in GENERATOR_TABLES:
        assert seqs(tmp_path / f"out/{table}_cdc_events.jsonl", table) == expected(60, table)
    assert f"[output:files] {PERSONS}: cut an incomplete last line (27 bytes)" in result.stderr


UNSHARE = shutil.which("unshare")
FULL_DISK = r"""
set -u
mount -t tmpfs -o size=10m tmpfs out || exit 97
"$PY" "$PYZ" init task.hcl >init.log 2>&1 || { cat init.log >&2; exit 98; }
"$PY" "$PYZ" run --once task.hcl >run1.out 2>run1.err; echo $? >run1.rc
cp -r out full
cp .dstream/t.checkpoints.json run1.checkpoints.json 2>/dev/null || true
mount -o remount,size=64m out
"$PY" "$PYZ" run --once task.hcl >run2.out 2>run2.err; echo $? >run2.rc
cp -r out freed
"""


def can_mount_tmpfs() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs unshare -m and mount (root)")
def test_full_disk_fails_the_run_and_a_rerun_delivers_the_rest(pyz: Path, dstream, tmp_path: Path) -> None:
    """out/ is a 10 MiB tmpfs (in a private mount namespace) for 15 MB of changes: the run
    acknowledges a first sync (at most 8 MiB), then hits ENOSPC, fails with one line and exit 5,
    leaves whole lines only and acknowledged exactly what the files hold; once there is space
    again, a rerun delivers the rest, nothing twice."""
    count = 80_000
    write_task(tmp_path, "t", generator_input(count), files_config())
    (tmp_path / "out").mkdir()
    ok(dstream("version"))  # unpack the zipapp outside the small disk
    env = dstream_env(pyz, {"PY": sys.executable, "PYZ": str(pyz)})
    script = subprocess.run([UNSHARE or "unshare", "-m", "sh", "-c", FULL_DISK], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert script.returncode == 0, describe(script)

    first = subprocess.CompletedProcess([], int((tmp_path / "run1.rc").read_text()), "", (tmp_path / "run1.err").read_text())
    error_line(first, 5, "output provider", "no space left on device writing out/")
    saved = checkpoints(tmp_path / "run1.checkpoints.json") or {}
    for table in GENERATOR_TABLES:
        delivered = seqs(tmp_path / "full" / f"{table}_cdc_events.jsonl", table)
        assert delivered == expected(count, table)[:len(delivered)]
        assert len(delivered) < len(expected(count, table))
        acknowledged = saved.get(table, {"seq": 0})["seq"]
        assert delivered[-1:] == ([acknowledged] if acknowledged else []), "acknowledged exactly what is durable"
    assert saved, "the first sync fitted on the disk and was acknowledged"

    assert (tmp_path / "run2.rc").read_text().strip() == "0", (tmp_path / "run2.err").read_text()
    for table in GENERATOR_TABLES:
        assert seqs(tmp_path / "freed" / f"{table}_cdc_events.jsonl", table) == expected(count, table)


# --- adopted files ----------------------------------------------------------------


def test_adopted_file_survives_destroy(dstream, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / PERSONS).write_text("someone's data\n")
    write_task(tmp_path, "t", generator_input(3), files_config("      adopt_existing = true\n"))
    ok(dstream("init", "task.hcl"))
    recorded = {r["name"]: r["attributes"] for r in state_resources(tmp_path, "t")}
    assert recorded["Persons"] == {"path": PERSONS, "adopted": True}
    assert recorded["Orders"] == {"path": "out/Orders_cdc_events.jsonl"}
    result = dstream("plan", "--detailed-exitcode", "task.hcl")
    assert result.returncode == 0 and "No changes." in result.stdout, describe(result)

    result = ok(dstream("destroy", "--auto-approve", "task.hcl"))
    assert f"[output:files] left in place (adopted): {PERSONS}" in result.stderr
    assert (tmp_path / PERSONS).read_text() == "someone's data\n"
    assert not (tmp_path / "out/Orders_cdc_events.jsonl").exists()
    assert state_resources(tmp_path, "t") == []


def test_destroy_adopted_deletes_adopted_files(dstream, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / PERSONS).write_text("someone's data\n")
    write_task(tmp_path, "t", generator_input(3), files_config("      adopt_existing = true\n      destroy_adopted = true\n"))
    ok(dstream("init", "task.hcl"))
    ok(dstream("destroy", "--auto-approve", "task.hcl"))
    assert not (tmp_path / PERSONS).exists()


# --- saved plans ------------------------------------------------------------------


def test_edited_saved_plan_cannot_replace_a_file_not_in_state(dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "t", generator_input(3), files_config())
    ok(dstream("init", "task.hcl"))
    (tmp_path / "victim.txt").write_text("precious\n")
    write_task(tmp_path, "t", generator_input(3), files_config().replace('"out"', '"new"'))
    ok(dstream("plan", "--out", "p.json", "task.hcl"))
    plan = json.loads((tmp_path / "p.json").read_text())
    change = next(c for c in plan["resource_changes"] if c["action"] == "replace" and c["resource"]["name"] == "Persons")
    change["before"]["path"] = "victim.txt"
    (tmp_path / "p.json").write_text(json.dumps(plan))
    state_before = (tmp_path / ".dstream" / "t.state.json").read_bytes()

    result = dstream("init", "--plan", "p.json", "task.hcl")
    assert result.returncode != 0, describe(result)
    error_line(result, result.returncode, "victim.txt")
    assert (tmp_path / "victim.txt").read_text() == "precious\n"
    assert (tmp_path / ".dstream" / "t.state.json").read_bytes() == state_before
    assert all((tmp_path / f"out/{t}_cdc_events.jsonl").is_file() for t in GENERATOR_TABLES)
