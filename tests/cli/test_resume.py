"""Stopping a run: SIGKILL then resume (at-least-once, nothing lost), and SIGTERM (clean stop, exact checkpoints)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from ._support import GENERATOR_TABLES, alive, checkpoints, children, describe, files_output, generator_input, ok, start, wait_for, write_task

COUNT = 300_000
FAST_CHECKPOINTS = {"DSTREAM_CHECKPOINT_INTERVAL": "0.1"}


def seqs_in(path: Path, table: str) -> list[int]:
    """The seq of every line of a stream's file, checking each line is a whole change of that table."""
    seqs = []
    for number, raw in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        line = json.loads(raw)  # a torn line would fail here
        seq = line["position"]["seq"]
        assert line["stream"] == table and line["metadata"]["TableName"] == table, f"{path.name}:{number}: {raw[:120]!r}"
        assert line["data"]["ID"] == seq and GENERATOR_TABLES[seq % 3] == table, f"{path.name}:{number}: {raw[:120]!r}"
        seqs.append(seq)
    assert path.read_bytes().endswith(b"\n") or path.stat().st_size == 0, f"{path.name} ends in a partial line"
    return seqs


def files_of(directory: Path) -> dict[str, Path]:
    return {t: directory / "out" / f"{t}_cdc_events.jsonl" for t in GENERATOR_TABLES}


def wait_until_advanced(proc: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    """Block until the checkpoints file exists and has moved on at least once since first seen."""
    first: dict[str, Any] = {}

    def advanced() -> dict[str, Any] | None:
        assert proc.poll() is None, f"dstream run ended (exit {proc.returncode}) before it could be stopped"
        try:
            now = checkpoints(path)
        except ValueError:  # caught mid-replace; never expected with atomic writes, but retry rather than flake
            return None
        if not now:
            return None
        if not first:
            first.update(now)
            return None
        return now if now != first else None

    return wait_for(advanced, 60, "the checkpoints to advance")


def test_resume_after_sigkill(pyz: Path, dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "gen", generator_input(COUNT), files_output())
    ok(dstream("init", "task.hcl"))
    checkpoints_file = tmp_path / ".dstream" / "gen.checkpoints.json"

    proc = start(pyz, "run", "task.hcl", cwd=tmp_path, env=FAST_CHECKPOINTS)
    try:
        wait_until_advanced(proc, checkpoints_file)
        providers = children(proc.pid)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(providers) == 2, f"expected the input and the output as children, found {providers}"
    wait_for(lambda: not any(alive(pid) for pid in providers), 20, "the providers to exit after dstream was killed")

    at_kill = checkpoints(checkpoints_file)
    assert at_kill is not None and set(at_kill) == set(GENERATOR_TABLES)
    before = {t: seqs_in(path, t) for t, path in files_of(tmp_path).items()}
    delivered = set().union(*map(set, before.values()))
    assert len(delivered) < COUNT, "the providers kept going after dstream died (no parent-death signal?)"
    for table, seqs in before.items():
        assert seqs == sorted(set(seqs)), f"{table}: out of order or duplicated before any replay"
        assert at_kill[table]["seq"] <= seqs[-1], f"{table}: checkpoint {at_kill[table]} is ahead of the data (last seq {seqs[-1]})"

    ok(dstream("run", "--once", "task.hcl"))

    seen: set[int] = set()
    for table, path in files_of(tmp_path).items():
        seqs = seqs_in(path, table)
        assert seqs[: len(before[table])] == before[table], f"{table}: the resumed run rewrote earlier data"
        resumed = seqs[len(before[table]):]
        assert resumed == sorted(set(resumed)), f"{table}: the resumed run is out of order"
        if resumed:
            # the resumed run starts right after the checkpoint: only the tail past it is delivered twice
            assert resumed[0] == at_kill[table]["seq"] + 3, f"{table}: resumed at {resumed[0]}, checkpoint was {at_kill[table]}"
        expected = [s for s in range(1, COUNT + 1) if GENERATOR_TABLES[s % 3] == table]
        assert sorted(set(seqs)) == expected, f"{table}: seqs missing: {sorted(set(expected) - set(seqs))[:10]}"
        seen |= set(seqs)
    assert seen == set(range(1, COUNT + 1))
    final = checkpoints(checkpoints_file)
    assert final == {t: {"seq": max(s for s in range(COUNT - 2, COUNT + 1) if GENERATOR_TABLES[s % 3] == t)} for t in GENERATOR_TABLES}


def test_sigterm_stops_cleanly_with_exact_checkpoints(pyz: Path, dstream, tmp_path: Path) -> None:
    write_task(tmp_path, "gen", generator_input(0), files_output())  # count 0: until stopped
    ok(dstream("init", "task.hcl"))
    checkpoints_file = tmp_path / ".dstream" / "gen.checkpoints.json"
    log = tmp_path / "run.log"

    proc = start(pyz, "run", "task.hcl", cwd=tmp_path, env=FAST_CHECKPOINTS, log=log)
    try:
        wait_until_advanced(proc, checkpoints_file)
        providers = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(alive(pid) for pid in providers), "a provider outlived the run"
    stderr = log.read_text()
    result = subprocess.CompletedProcess(proc.args, code, "", stderr)
    assert "Traceback" not in stderr, describe(result)

    final = checkpoints(checkpoints_file)
    assert final is not None and set(final) == set(GENERATOR_TABLES)
    seen: set[int] = set()
    for table, path in files_of(tmp_path).items():
        seqs = seqs_in(path, table)
        assert seqs == sorted(set(seqs)), f"{table}: out of order or duplicated"
        assert final[table]["seq"] <= seqs[-1], f"{table}: checkpoint {final[table]} is ahead of the data (last seq {seqs[-1]})"
        assert final[table] == {"seq": seqs[-1]}, f"{table}: after a clean stop the checkpoint is the last line written"
        seen |= set(seqs)
    assert seen == set(range(1, max(seen) + 1)), "a clean stop must not leave a gap"
    assert code == 0, describe(result)
    assert "stopped on request" in stderr, describe(result)
