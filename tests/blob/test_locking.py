"""Locks as finite blob leases: waiting, refusing, expiry after a holder dies, a broken lease, unlock, one run at a time."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from azure.storage.blob import BlobLeaseClient

from tests.cli._support import GENERATOR_TABLES, copy_provider, describe, error_line, external, files_output, generator_input, ok, wait_for

from ._blob import LEASE, PREFIX, BlobTasks

WAITING = "waiting for the state lock"
INIT_DONE = re.compile(r"Init complete! Resources: (\d+) added, 0 changed, 0 destroyed\. State serial (\d+)\.")


def test_concurrent_inits_wait_and_apply_once(blob: BlobTasks, tmp_path: Path) -> None:
    """Two `init --lock-timeout 30s` of one task, both released at once: one applies, the other finds nothing to do."""
    baseline = tmp_path / "sequential"
    blob.write(baseline, "seq", generator_input(3), files_output())
    first = ok(blob.cli("init", "task.hcl", cwd=baseline))
    second = ok(blob.cli("init", "task.hcl", cwd=baseline))
    assert "3 added" in first.stdout and "No changes." in second.stdout and "0 added" in second.stdout, second.stdout
    expected_serial = blob.state("seq")["serial"]

    race = tmp_path / "race"
    blob.write(race, "race", generator_input(3), files_output())
    with blob.holding("race") as holder:
        procs = [blob.start("init", "--lock-timeout", "30s", "task.hcl", cwd=race, log=race / f"init{i}.log") for i in (1, 2)]
        logs = [race / "init1.log", race / "init2.log"]
        wait_for(lambda: all(log.exists() and WAITING in log.read_text() for log in logs), 30, "both inits to wait for the state lock")
        assert all(p.poll() is None for p in procs)
        assert holder.send("unlock") == {"event": "unlocked"}
        codes = [p.wait(timeout=60) for p in procs]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(texts)
    summaries = sorted((int(m.group(1)), int(m.group(2))) for m in (INIT_DONE.search(t) for t in texts) if m)
    assert len(summaries) == 2, "\n".join(texts)
    assert [added for added, _ in summaries] == [0, 3], f"exactly one init applies the plan:\n{texts}"
    assert all(WAITING in t and holder.who in t for t in texts), "each init must say it waited, and for whom"
    state = blob.state("race")
    assert state["serial"] == expected_serial, f"serial {state['serial']} after the race, {expected_serial} after two sequential inits"
    assert summaries[1][1] == expected_serial and summaries[0][1] == expected_serial
    assert [r["name"] for r in state["resources"]] == sorted(GENERATOR_TABLES)


def test_init_without_lock_timeout_is_refused_with_the_holder(blob: BlobTasks, tmp_path: Path) -> None:
    blob.write(tmp_path, "t", generator_input(3), files_output())
    with blob.holding("t", who="alice@build-host (pid 4242)") as holder:
        started = time.monotonic()
        result = blob.cli("init", "--lock-timeout", "0s", "task.hcl")
        assert time.monotonic() - started < 10
        error_line(result, 4, "state is locked", "alice@build-host (pid 4242)", f"lock ID {holder.id}", f"dstream state unlock TASK {holder.id}")
    assert not (tmp_path / "out").exists()
    assert blob.data(f"{PREFIX}t.state.json") == b"", "the loser must not write state (the holder created the blob empty for its lease)"


def test_lock_of_a_killed_holder_expires(blob: BlobTasks, tmp_path: Path) -> None:
    """A holder SIGKILLed mid-operation cannot release its lease; a waiter gets the lock once the lease runs out."""
    blob.write(tmp_path, "t", generator_input(3), files_output())
    ok(blob.cli("init", "task.hcl"))
    before = blob.data(f"{PREFIX}t.state.json")
    with blob.holding("t") as holder:
        assert holder.locked["serial"] == json.loads(before)["serial"]
        holder.kill()
        killed = time.monotonic()
        result = blob.cli("plan", "--lock-timeout", "60s", "task.hcl")
        waited = time.monotonic() - killed
    ok(result)
    assert WAITING in result.stderr and holder.who in result.stderr, describe(result)
    assert "No changes." in result.stdout
    assert waited < LEASE + LEASE / 3 + 5, f"the lock came free only after {waited:.1f}s (lease {LEASE}s)"
    after = blob.data(f"{PREFIX}t.state.json")
    assert json.loads(after) == json.loads(before), "the state must be intact"
    assert blob.blob(f"{PREFIX}t.state.json").get_blob_properties().lease.state != "leased"


def test_broken_lease_stops_the_holder_writing(blob: BlobTasks, tmp_path: Path) -> None:
    """Someone breaks the holder's lease and writes: the holder's next write is refused as a lost lock."""
    blob.write(tmp_path, "t", generator_input(3), files_output())
    ok(blob.cli("init", "task.hcl"))
    name = f"{PREFIX}t.state.json"
    with blob.holding("t") as holder:
        BlobLeaseClient(blob.blob(name)).break_lease(lease_break_period=0)
        theirs = json.loads(blob.data(name))
        theirs["serial"] += 10
        written = (json.dumps(theirs, indent=2, sort_keys=True) + "\n").encode()
        blob.blob(name).upload_blob(written, overwrite=True)
        event = holder.send("write")
        assert event["event"] == "error" and event["kind"] == "StateError", event
        assert "lost the lock" in event["message"], f"the refusal must say the lock was lost: {event['message']}"
    assert blob.data(name) == written, "the holder must not have written anything after losing its lease"


def test_state_unlock_needs_the_holders_lock_id(blob: BlobTasks, tmp_path: Path) -> None:
    blob.write(tmp_path, "t", generator_input(3), files_output())
    ok(blob.cli("init", "task.hcl"))
    with blob.holding("t") as holder:
        locks = json.loads(ok(blob.cli("status", "--json", "task.hcl")).stdout)["locks"]
        assert locks["run"] is None
        assert (locks["state"]["id"], locks["state"]["who"]) == (holder.id, holder.who)

        error_line(blob.cli("state", "unlock", "task.hcl", "not-the-lock-id"), 1, "no lock with ID not-the-lock-id on task t")
        assert json.loads(ok(blob.cli("status", "--json", "task.hcl")).stdout)["locks"]["state"]["id"] == holder.id
        error_line(blob.cli("plan", "task.hcl"), 4, "state is locked", holder.id)

        result = ok(blob.cli("state", "unlock", "task.hcl", locks["state"]["id"]))
        assert f"Released the state lock {holder.id} ({holder.who})" in result.stdout
        assert json.loads(ok(blob.cli("status", "--json", "task.hcl")).stdout)["locks"] == {"run": None, "state": None}
        ok(blob.cli("plan", "--lock-timeout", "0s", "task.hcl"))
        event = holder.send("write")
        assert event["event"] == "error" and event["kind"] == "StateError", f"the holder whose lock was broken still wrote: {event}"


def test_one_run_at_a_time(blob: BlobTasks, tmp_path: Path) -> None:
    blob.write(tmp_path, "gen", generator_input(0, "      payload_bytes = 0\n"), files_output())
    ok(blob.cli("init", "task.hcl"))
    log = tmp_path / "run1.log"
    first = blob.start("run", "task.hcl", cwd=tmp_path, log=log)
    try:
        wait_for(lambda: blob.blob(f"{PREFIX}gen.run.lock").exists() and
                 blob.blob(f"{PREFIX}gen.run.lock").get_blob_properties().lease.state == "leased", 30, "the first run to take the run lock")
        status = ok(blob.cli("status", "task.hcl"))
        line = next((x for x in status.stdout.splitlines() if x.startswith("run lock:")), "")
        match = re.search(r"\(pid (\d+)\).*lock ID ([0-9a-f-]{36})", line)
        assert match and int(match.group(1)) == first.pid, status.stdout
        assert "state lock: free" in status.stdout

        started = time.monotonic()
        second = blob.cli("run", "--lock-timeout", "0s", "task.hcl", timeout=30)
        assert time.monotonic() - started < 10, "the second run must be refused at once"
        error_line(second, 4, "task is already running", f"(pid {first.pid})", match.group(2))
        assert "[input:" not in second.stderr and "[output:" not in second.stderr, "the refused run must not start providers"
        assert first.poll() is None, "the refused run must not disturb the first"
        time.sleep(1.5)
    finally:
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=60)
    assert code == 0, log.read_text()
    assert blob.blob(f"{PREFIX}gen.run.lock").get_blob_properties().lease.state != "leased", "a finished run releases its lease"
    persisted = blob.checkpoints("gen")
    for table in GENERATOR_TABLES:
        data = (tmp_path / "out" / f"{table}_cdc_events.jsonl").read_bytes()
        seqs = [int(s) for s in re.findall(rb'"position":\{"seq":(\d+)\}', data)]
        assert seqs, f"{table}: nothing streamed"
        assert all(b - a == 3 for a, b in zip(seqs, seqs[1:], strict=False)), f"{table}: a change was written twice or skipped: one writer only"
        assert persisted[table] == {"seq": seqs[-1]}, "a clean stop persists exactly what was written"


def _break_run_lock(blob: BlobTasks, run: subprocess.Popen[bytes], log: Path, ready: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Once `ready` holds, `state unlock` the live run's lock; return the run's outcome and how long it ran on."""
    try:
        wait_for(lambda: ready in blob.names(), 30, f"{ready} to appear")

        def run_lock() -> dict | None:  # the run.lock blob exists from init on (init takes the run lock too): wait for the run's lease
            holder = json.loads(ok(blob.cli("status", "--json", "task.hcl", cwd=log.parent)).stdout)["locks"]["run"]
            return holder if holder and holder["operation"] == "run" else None

        lock_id = wait_for(run_lock, 30, "the run to hold its lock")["id"]
        ok(blob.cli("state", "unlock", "task.hcl", lock_id, cwd=log.parent))
        broken = time.monotonic()
        code = run.wait(timeout=30)
        return subprocess.CompletedProcess(run.args, code, "", log.read_text()), time.monotonic() - broken
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)


def test_streaming_run_stops_when_its_lock_is_broken(blob: BlobTasks, tmp_path: Path) -> None:
    """`state unlock` of a live run's lock breaks its lease: the next checkpoint write notices, streaming stops at once."""
    copy_provider("slow_input.sh", tmp_path)
    blob.write(tmp_path, "slow", external("./slow_input.sh"), files_output())
    ok(blob.cli("init", "task.hcl"))
    log, out = tmp_path / "run.log", tmp_path / "out" / "Slow_cdc_events.jsonl"
    run = blob.start("run", "task.hcl", cwd=tmp_path, log=log)
    result, took = _break_run_lock(blob, run, log, f"{PREFIX}slow.checkpoints.json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, describe(result)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: lost the") and "lock" in last, describe(result)  # one line or two: see the idle test
    assert took < 5, f"the run streamed on for {took:.1f}s after its lock was broken"
    size = out.stat().st_size
    time.sleep(0.5)
    assert out.stat().st_size == size
    assert 0 < blob.checkpoints("slow")["Slow"]["seq"] <= len(out.read_bytes().splitlines())


def test_idle_run_fails_when_its_lock_is_broken(blob: BlobTasks, tmp_path: Path) -> None:
    """A run with nothing to checkpoint learns of the broken lease from its renewal thread: it must fail (exit 1,
    one Error line), not report a clean stop, so that cron or a supervisor sees that it lost its lock."""
    (tmp_path / "empty.jsonl").write_bytes(b"")  # the jsonl input follows the file: no changes, so no checkpoint writes
    blob.write(tmp_path, "idle", '    provider = "jsonl"\n    config {\n      path = "empty.jsonl"\n    }', files_output())
    ok(blob.cli("init", "task.hcl"))
    log = tmp_path / "run.log"
    run = blob.start("run", "task.hcl", cwd=tmp_path, log=log)
    result, took = _break_run_lock(blob, run, log, f"{PREFIX}idle.run.lock")
    assert took < LEASE / 3 + 3, f"the run noticed its broken lock only after {took:.1f}s"
    error_line(result, 1, "run lock", "lost")
