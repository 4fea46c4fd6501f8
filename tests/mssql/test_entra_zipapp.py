"""authentication = "azure" through the built zipapp: the Entra ID token for Azure SQL never lands anywhere.

init, run --once, plan and status of mssql-cdc -> files with a stand-in `az` on PATH; then every file
the lifecycle wrote (state, checkpoints, the saved plan, the parse cache, the output) and everything
dstream printed is scanned for each token the stand-in minted, whole and by its signature.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import Peer
from .test_entra import StandInAz, az_env, token_cs


def test_the_sql_token_never_reaches_state_plans_caches_outputs_or_logs(entra_peer: Peer, pyz: Path, tmp_path: Path) -> None:
    az = StandInAz(tmp_path / "az")
    work = tmp_path / "work"
    work.mkdir()
    conn = token_cs(entra_peer.port).replace("\\", "\\\\").replace('"', '\\"')
    (work / "task.hcl").write_text(f'''task "entra" {{
  input {{
    provider = "mssql-cdc"
    config {{
      connection_string = "{conn}"
      authentication    = "azure"
      tables            = ["Persons"]
      start             = "earliest"
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
    env = {**os.environ, **az_env(az), "SHIV_ROOT": str(pyz.parent / ".shiv"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    entra_peer.sql("INSERT INTO Persons VALUES (7, N'read with a token')")
    printed = []
    for args in (["init", "task.hcl"], ["run", "--once", "task.hcl"], ["plan", "--out", "saved.plan", "task.hcl"],
                 ["status", "task.hcl"], ["status", "--json", "task.hcl"]):
        done = subprocess.run([sys.executable, str(pyz), *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 2) and "Traceback" not in done.stderr, f"{args}: {done.stderr}"
        printed += [done.stdout, done.stderr]
    assert "read with a token" in (work / "out" / "Persons_cdc_events.jsonl").read_text()
    assert (work / "saved.plan").is_file() and any((tmp_path / "cache").rglob("*"))
    tokens = az.tokens()
    assert tokens and all(t.count(".") == 2 for t in tokens), "the stand-in minted no token: the scan would prove nothing"
    written = [p for root in (work, tmp_path / "cache") for p in root.rglob("*") if p.is_file()]
    for token in tokens:
        signature = token.split(".")[2]
        for text in printed:
            assert token not in text and signature not in text
        for path in written:
            data = path.read_bytes()
            assert token.encode() not in data and signature.encode() not in data, f"the token is in {path}"
