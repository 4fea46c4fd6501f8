"""The seed's scenario as written: examples/mssql-to-asb.hcl through the built zipapp.

SQL Server is the TDS peer (tests/emulators/tds, TLS, FreeTDS), Service Bus the
AMQP peer behind the namespace-API peer: the task gives nothing but SQL_CONNECTION
and ASB_CONNECTION. init creates the three queues, plan --detailed-exitcode then
finds nothing to do, run --once delivers inserts, updates and deletes in commit
order per queue, destroy deletes the queues.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT
from servicebus_peers import AzurePeers

sys.path.insert(0, str(ROOT))
from tests.mssql.conftest import connection_string, start_peer, tls_env  # noqa: E402

TABLES = ("Persons", "Orders", "Customers")


def run(pyz: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "SHIV_ROOT": str(pyz.parent / ".shiv"), **env}
    return subprocess.run([sys.executable, str(pyz), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=180)


def operations(messages: list[Any]) -> list[tuple[str, int]]:
    bodies = [json.loads(str(m)) for m in messages]
    return [(b["metadata"]["OperationType"], b["data"]["ID"]) for b in bodies]


def test_the_seed_task_runs_as_written(pyz: Path, tmp_path: Path) -> None:
    sql = start_peer("freetds")
    try:
        with AzurePeers(tmp_path / "peers") as peers:
            sql.sql("EXEC sys.sp_cdc_enable_db")
            for table in TABLES:
                sql.sql(f"CREATE TABLE dbo.{table} (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL)",
                        f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{table}', @role_name = NULL")
            shutil.copy(ROOT / "examples" / "mssql-to-asb.hcl", tmp_path / "mssql-to-asb.hcl")
            env = {**peers.env(), **tls_env(), "SQL_CONNECTION": connection_string("freetds", sql.port), "ASB_CONNECTION": peers.connection_string}
            assert run(pyz, tmp_path, env, "validate", "mssql-to-asb.hcl").returncode == 0
            init = run(pyz, tmp_path, env, "init", "mssql-to-asb.hcl")
            assert init.returncode == 0, init.stdout + init.stderr
            assert set(peers.queues()) == {f"{t}_cdc_events" for t in TABLES}
            assert peers.arm_requests()["requests"] == 0  # managed through the namespace API alone
            plan = run(pyz, tmp_path, env, "plan", "--detailed-exitcode", "mssql-to-asb.hcl")
            assert plan.returncode == 0, plan.stdout + plan.stderr
            for table in TABLES:
                sql.sql(f"INSERT INTO dbo.{table} VALUES (1, N'one')", f"INSERT INTO dbo.{table} VALUES (2, N'two')")
                sql.sql(f"UPDATE dbo.{table} SET Name = N'uno' WHERE ID = 1")
                sql.sql(f"DELETE FROM dbo.{table} WHERE ID = 2")
            once = run(pyz, tmp_path, env, "run", "--once", "mssql-to-asb.hcl")
            assert once.returncode == 0, once.stdout + once.stderr
            for table in TABLES:
                got = operations([m for m in peers.receive(f"{table}_cdc_events", 4)])
                assert got == [("Insert", 1), ("Insert", 2), ("Update", 1), ("Delete", 2)], (table, got)
            destroy = run(pyz, tmp_path, env, "destroy", "--auto-approve", "mssql-to-asb.hcl")
            assert destroy.returncode == 0, destroy.stdout + destroy.stderr
            assert peers.queues() == {}
            for result in (init, plan, once, destroy):
                assert "c2VjcmV0LWtleQ==" not in result.stdout + result.stderr
    finally:
        sql.stop()
