"""mssql-cdc through dstream itself: init records the start, run --once delivers to the files output, a rerun resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, Peer


def dstream(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "dstream.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=90)


def test_init_then_run_once_through_dstream_loses_nothing_made_in_between(freetds_peer: Peer, tmp_path: Path) -> None:
    peer = freetds_peer
    peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Persons (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL)")
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Persons', @role_name = NULL")
    peer.sql("INSERT INTO Persons VALUES (0, N'before init')")
    conn = peer.connection_string.replace("\\", "\\\\").replace('"', '\\"')
    (tmp_path / "task.hcl").write_text(f'''task "cdc-demo" {{
  type = "providers"
  input {{
    provider = "mssql-cdc"
    config {{
      connection_string = "{conn}"
      tables            = ["Persons"]
      poll_interval_min = 0.05
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
    init = dstream("init", "task.hcl", cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    peer.sql("INSERT INTO Persons VALUES (1, N'between init and run')")
    first = dstream("run", "--once", "task.hcl", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    peer.sql("UPDATE Persons SET Name = N'later' WHERE ID = 1")
    second = dstream("run", "--once", "task.hcl", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    lines = [json.loads(x) for x in (tmp_path / "out" / "Persons_cdc_events.jsonl").read_text().splitlines()]
    assert [(m["metadata"]["OperationType"], m["data"]["Name"]) for m in lines] == [("Insert", "between init and run"), ("Update", "later")]
