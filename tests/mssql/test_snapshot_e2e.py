"""The snapshot's promise through the built zipapp: a consumer that applies the queue in order
(Snapshot/Insert/Update = upsert by key, Delete = delete) ends with exactly the table, whatever
DML ran during the snapshot and when dstream was SIGKILLed mid-snapshot.

mssql-cdc -> files, both ODBC drivers: FreeTDS reads under READ COMMITTED (the database does not
allow snapshot isolation), Microsoft ODBC Driver 18 under SNAPSHOT (ALLOW_SNAPSHOT_ISOLATION ON).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyodbc
import pytest

from .conftest import ROOT, Peer, connection_string

sys.path.insert(0, str(ROOT / "tests" / "emulators"))
from servicebus_peers import AzurePeers  # noqa: E402

ROWS = 2500
CHUNK = 20


class Writer(threading.Thread):
    """Inserts, updates, deletes, key changes and long transactions on dbo.Orders until stopped."""

    def __init__(self, port: int, ids: set[int]):
        super().__init__(daemon=True)
        self.conn = pyodbc.connect(connection_string("freetds", port), autocommit=True, timeout=30)
        self.ids = set(ids)
        self.next_id = max(ids) + 1
        self.rng = random.Random(13)
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.done = {"insert": 0, "update": 0, "delete": 0, "key": 0, "long": 0}

    def sql(self, text: str, *params: Any) -> None:
        cur = self.conn.cursor()
        cur.execute(text, *params)
        cur.close()

    def one(self) -> None:
        kind = self.rng.choice(["insert", "update", "update", "delete", "key"])
        victim = self.rng.choice(sorted(self.ids))
        if kind == "insert":
            self.sql("INSERT INTO Orders (ID, Item, Qty) VALUES (?, ?, ?)", self.next_id, f"new {self.next_id}", 1)
            self.ids.add(self.next_id)
            self.next_id += 1
        elif kind == "update":
            self.sql("UPDATE Orders SET Item = ?, Qty = Qty + 1 WHERE ID = ?", f"upd {self.rng.random():.6f}", victim)
        elif kind == "delete":
            self.sql("DELETE FROM Orders WHERE ID = ?", victim)
            self.ids.discard(victim)
        else:  # the row moves in key order: from ahead of the snapshot's keyset to behind it, or back
            new = self.next_id if self.rng.random() < 0.5 else -self.next_id
            self.next_id += 1
            self.sql("UPDATE Orders SET ID = ? WHERE ID = ?", new, victim)
            self.ids.discard(victim)
            self.ids.add(new)
        self.done[kind] += 1

    def run(self) -> None:
        try:
            n = 0
            while not self.halt.is_set():
                n += 1
                if n % 60 == 0:  # a long transaction: its rows stay uncommitted while the snapshot reads
                    self.sql("BEGIN TRAN")
                    for _ in range(5):
                        self.one()
                    time.sleep(0.6)
                    self.sql("COMMIT")
                    self.done["long"] += 1
                else:
                    self.one()
                time.sleep(0.004)
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.conn.close()
        if self.error is not None:
            raise self.error


FILES = """  output {
    provider = "files"
    config {
      directory = "out"
    }
  }"""


def task(tmp: Path, peer: Peer, output: str = FILES) -> None:
    conn = peer.connection_string.replace("\\", "\\\\").replace('"', '\\"')
    (tmp / "task.hcl").write_text(f'''task "snap" {{
  input {{
    provider = "mssql-cdc"
    config {{
      connection_string   = "{conn}"
      tables              = ["Orders"]
      poll_interval_min   = 0.05
      poll_interval_max   = 0.2
      snapshot            = "initial"
      snapshot_chunk_size = {CHUNK}
    }}
  }}
{output}
}}
''')


def env(pyz: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {**os.environ, **(extra or {}), "SHIV_ROOT": str(pyz.parent / ".shiv"), "DSTREAM_CHECKPOINT_INTERVAL": "100ms"}
    out.pop("NO_COLOR", None)
    return out


def dstream(pyz: Path, tmp: Path, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(pyz), *args], cwd=tmp, env=env(pyz, extra), capture_output=True, text=True, timeout=180)


def checkpoint(tmp: Path) -> Any:
    try:
        return json.loads((tmp / ".dstream" / "snap.checkpoints.json").read_text())["streams"]["Orders"]["position"]
    except (FileNotFoundError, KeyError, ValueError):
        return None


def jsonl(path: Path) -> list[dict[str, Any]]:
    """What the files output wrote, in order."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def consume(messages: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], dict[str, int]]:
    """The consumer model: apply every message in order."""
    table: dict[int, dict[str, Any]] = {}
    kinds: dict[str, int] = {}
    for m in messages:
        kind = m["metadata"]["OperationType"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "Delete":
            table.pop(m["data"]["ID"], None)
        else:
            table[m["data"]["ID"]] = m["data"]
    return table, kinds


def test_snapshot_with_dml_and_a_sigkill_mid_snapshot_converges_to_the_table(peer: Peer, pyz: Path, tmp_path: Path) -> None:
    converge(peer, pyz, tmp_path, FILES, {}, lambda: jsonl(tmp_path / "out" / "Orders_cdc_events.jsonl"))


def converge(peer: Peer, pyz: Path, tmp_path: Path, output: str, extra: dict[str, str], read: Callable[[], list[dict[str, Any]]]) -> None:
    """Snapshot 2,500 rows with DML running, SIGKILL mid-snapshot, finish; `read()` then gives the queue in order."""
    snapshot_isolation = peer.driver == "msodbc18"
    peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY, Item nvarchar(40) NULL, Qty int NULL)")
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Orders', @role_name = NULL")
    if snapshot_isolation:
        peer.sql("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
    for start in range(0, ROWS, 500):
        peer.sql("INSERT INTO Orders (ID, Item, Qty) VALUES " + ", ".join(f"({i}, N'row {i}', 0)" for i in range(start, start + 500)))
    task(tmp_path, peer, output)
    init = dstream(pyz, tmp_path, "init", "task.hcl", extra=extra)
    assert init.returncode == 0, init.stderr
    assert checkpoint(tmp_path)["snapshot"]["requested"] == "initial"

    writer = Writer(peer.port, set(range(ROWS)))
    writer.start()
    log = open(tmp_path / "run1.log", "wb")
    first = subprocess.Popen([sys.executable, str(pyz), "run", "task.hcl"], cwd=tmp_path, env=env(pyz, extra), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            cp = checkpoint(tmp_path)
            if cp and cp.get("snapshot", {}).get("rows", 0) >= 300:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the snapshot made no acknowledged progress: " + (tmp_path / "run1.log").read_text()[-2000:])
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    killed_at = checkpoint(tmp_path)
    assert "snapshot" in killed_at and killed_at["snapshot"]["rows"] < ROWS, f"not killed mid-snapshot: {killed_at}"

    second = dstream(pyz, tmp_path, "run", "--once", "--lock-timeout", "60s", "task.hcl", extra=extra)  # the DML keeps running meanwhile
    assert second.returncode == 0, second.stderr
    assert "snapshot" not in checkpoint(tmp_path), "the snapshot did not finish"
    time.sleep(0.5)
    writer.stop()
    last = dstream(pyz, tmp_path, "run", "--once", "task.hcl", extra=extra)
    assert last.returncode == 0, last.stderr

    expected = {r[0]: {"ID": r[0], "Item": r[1], "Qty": r[2]} for r in peer.sql("SELECT ID, Item, Qty FROM dbo.Orders")}
    got, kinds = consume(read())
    assert kinds.get("Snapshot", 0) >= ROWS * 0.9 and kinds.get("Delete") and kinds.get("Update") and kinds.get("Insert"), kinds
    assert writer.done["long"] and writer.done["key"], writer.done
    assert sorted(got) == sorted(expected) and got == expected
    isolation = "SNAPSHOT" if snapshot_isolation else "READ COMMITTED"
    assert f"snapshot reads under {isolation} isolation" in second.stderr
    assert "Orders: snapshot done" in second.stderr and "Orders: snapshot ran" not in second.stderr


@pytest.mark.parametrize("mode", ["initial", "none"])
def test_plan_names_the_tables_to_snapshot_with_their_size(freetds_peer: Peer, pyz: Path, tmp_path: Path, mode: str) -> None:
    peer = freetds_peer
    peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY, Item nvarchar(40) NULL, Qty int NULL)")
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Orders', @role_name = NULL")
    peer.sql("INSERT INTO Orders (ID, Item, Qty) VALUES " + ", ".join(f"({i}, N'r', 0)" for i in range(45)))
    task(tmp_path, peer)
    text = (tmp_path / "task.hcl").read_text().replace('snapshot            = "initial"', f'snapshot            = "{mode}"')
    (tmp_path / "task.hcl").write_text(text)
    plan = dstream(pyz, tmp_path, "plan", "task.hcl")
    assert plan.returncode == 0, plan.stderr
    line = f'dbo.Orders will be snapshotted on the first run (snapshot = "initial"): ~45 rows (sys.partitions), 3 chunks of {CHUNK}'
    assert (line in plan.stdout + plan.stderr) == (mode == "initial"), plan.stdout + plan.stderr


ASB = """  output {
    provider = "asb-queues"
    config {
      connection_string = "%s"
    }
  }"""


def test_snapshot_through_asb_queues_converges_to_the_table(peer: Peer, pyz: Path, tmp_path: Path) -> None:
    """The same promise into Service Bus (the seed's shape: nothing but a connection string), read back in order
    through the real SDK, as a consumer would."""
    with AzurePeers(tmp_path / "peers") as asb:
        def read() -> list[dict[str, Any]]:
            return [json.loads(b"".join(m.body)) for m in asb.receive("Orders_cdc_events", 1, timeout=120)]

        converge(peer, pyz, tmp_path, ASB % asb.connection_string, {"REQUESTS_CA_BUNDLE": str(asb.ca)}, read)
