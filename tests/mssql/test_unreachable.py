"""A lifecycle command that cannot reach SQL Server fails in one line, never with a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASK = """
task "unreachable" {
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "DRIVER={FreeTDS};SERVER=127.0.0.1,%d;UID=sa;PWD={{ env "DB_PASSWORD" }};Encryption=require"
      tables            = ["Persons"]
    }
  }
  output {
    provider = "files"
  }
}
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket closes


def test_plan_against_an_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "task.hcl").write_text(TASK % closed_port())
    env = {**os.environ, "DB_PASSWORD": "Pa55-Unreachable-9"}
    result = subprocess.run([sys.executable, str(ROOT / "dstream.py"), "plan", "task.hcl"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 5, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "SQL Server" in last and "connection_string" in last, last
    assert "Pa55-Unreachable-9" not in output
