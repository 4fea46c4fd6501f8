"""`dstream snapshot TASK --table dbo.Orders` through the built zipapp (mssql-cdc -> files): the next
run re-delivers the table as Snapshot rows, then every change after the checkpoint the stream had,
including those committed before the request and never delivered; a consumer applying the file in
order equals the table. An unknown table is one line naming the configured tables."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import Peer
from .test_snapshot_e2e import Writer, checkpoint, consume, dstream, jsonl

ROWS = 300


def task(tmp: Path, peer: Peer) -> None:
    conn = peer.connection_string.replace("\\", "\\\\").replace('"', '\\"')
    (tmp / "task.hcl").write_text(f'''task "snap" {{
  input {{
    provider = "mssql-cdc"
    config {{
      connection_string   = "{conn}"
      tables              = ["Orders"]
      poll_interval_min   = 0.05
      poll_interval_max   = 0.2
      snapshot_chunk_size = 40
    }}
  }}
  output {{
    provider = "files"
    config {{
      directory = "out"
    }}
  }}
}}
''')


def lines(tmp: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp / "out" / "Orders_cdc_events.jsonl").read_text().splitlines()]


def test_on_demand_snapshot_redelivers_the_table_then_the_changes_since_the_checkpoint(peer: Peer, pyz: Path, tmp_path: Path) -> None:
    peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY, Item nvarchar(40) NULL, Qty int NULL)")
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Orders', @role_name = NULL")
    peer.sql("INSERT INTO Orders (ID, Item, Qty) VALUES " + ", ".join(f"({i}, N'row {i}', 0)" for i in range(ROWS)))
    task(tmp_path, peer)
    assert dstream(pyz, tmp_path, "init", "task.hcl").returncode == 0
    peer.sql("UPDATE Orders SET Qty = 1 WHERE ID < 5")  # snapshot = none (the default): only changes after init
    first = dstream(pyz, tmp_path, "run", "--once", "task.hcl")
    assert first.returncode == 0, first.stderr
    assert [m["metadata"]["OperationType"] for m in lines(tmp_path)] == ["Update"] * 5
    acked = checkpoint(tmp_path)

    peer.sql("UPDATE Orders SET Item = N'pending' WHERE ID = 7", "DELETE FROM Orders WHERE ID = 8")  # committed, not yet delivered
    unknown = dstream(pyz, tmp_path, "snapshot", "task.hcl", "--table", "dbo.Nope")
    assert unknown.returncode == 5 and "Traceback" not in unknown.stderr, unknown.stderr
    [error] = [x for x in unknown.stderr.splitlines() if x.startswith("Error:")]
    assert "'dbo.Nope' is not one this task streams; configured tables: dbo.Orders" in error
    assert checkpoint(tmp_path) == acked, "a refused request changed the checkpoint"

    asked = dstream(pyz, tmp_path, "snapshot", "task.hcl", "--table", "dbo.orders")  # names compare as SQL Server does
    assert asked.returncode == 0, asked.stderr
    marked = checkpoint(tmp_path)
    assert marked["snapshot"]["requested"] == "on_demand"
    assert {k: v for k, v in marked.items() if k != "snapshot"} == acked, "the request moved the stream's position"
    status = json.loads(dstream(pyz, tmp_path, "status", "--json", "task.hcl").stdout)
    assert status["streams"][0]["checkpoint"]["snapshot"]["requested"] == "on_demand", status

    writer = Writer(peer.port, set(range(ROWS)) - {8})
    writer.start()
    second = dstream(pyz, tmp_path, "run", "--once", "task.hcl")
    time.sleep(0.3)
    writer.stop()
    assert second.returncode == 0, second.stderr
    assert "snapshot" not in checkpoint(tmp_path)
    third = dstream(pyz, tmp_path, "run", "--once", "task.hcl")
    assert third.returncode == 0, third.stderr

    after = lines(tmp_path)[5:]
    kinds = [m["metadata"]["OperationType"] for m in after]
    snapshots = kinds.count("Snapshot")
    assert snapshots >= ROWS - 1 - writer.done["delete"] - writer.done["key"] and kinds[:snapshots] == ["Snapshot"] * snapshots, kinds[:20]
    changes = after[snapshots:]
    assert any(m["metadata"]["OperationType"] == "Delete" and m["data"]["ID"] == 8 for m in changes), "a change from before the request was skipped"
    assert any(m["data"]["ID"] == 7 and m["data"]["Item"] == "pending" for m in changes), "a change from before the request was skipped"
    expected = {r[0]: {"ID": r[0], "Item": r[1], "Qty": r[2]} for r in peer.sql("SELECT ID, Item, Qty FROM dbo.Orders")}
    got, _ = consume(jsonl(tmp_path / "out" / "Orders_cdc_events.jsonl"))
    assert got == expected


def test_provider_check_runs_the_snapshot_rule_against_a_live_database(freetds_peer: Peer, pyz: Path, tmp_path: Path) -> None:
    """`dstream provider check mssql-cdc --config` on a test database: every rule runs, snapshot included, and none fails."""
    freetds_peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.CheckA (ID int NOT NULL PRIMARY KEY, Name nvarchar(40) NULL)",
                     "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'CheckA', @role_name = NULL",
                     "INSERT INTO dbo.CheckA (ID, Name) VALUES (1, N'one'), (2, N'two'), (3, N'three')")
    config = {"connection_string": freetds_peer.connection_string, "tables": ["CheckA"], "start": "earliest",  # so run-once has changes to resume
              "poll_interval_min": 0.05, "poll_interval_max": 0.2}
    (tmp_path / "check.json").write_text(json.dumps(config))
    result = dstream(pyz, tmp_path, "provider", "check", "mssql-cdc", "--config", "check.json", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = {r["rule"]: (r["outcome"], r["reason"]) for r in json.loads(result.stdout)["results"]}
    assert outcomes["snapshot"][0] == outcomes["resume"][0] == "PASS", outcomes
    assert "read 3 change(s)" in outcomes["snapshot"][1], outcomes  # the run from its checkpoint re-read the table's 3 rows
    assert "FAIL" not in {o for o, _ in outcomes.values()}, outcomes
