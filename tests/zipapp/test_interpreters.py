"""The built dstream.pyz under each interpreter CI can get, with nothing but a user's packages installed (issue 12).

host-3.11 is this machine's interpreter; trixie-3.13 and sid-3.14 are Debian minbase root
filesystems with python3, unixodbc and tdsodbc (.ci/rootfs.sh). bullseye's 3.9 is outside the
set; trixie-noodbc has python3 alone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.mssql.conftest import start_peer

from .conftest import Where

ROOT = Path(__file__).resolve().parents[2]
REFUSAL = re.compile(r"Error: dstream\.pyz runs on CPython 3\.10-3\.14 on Linux x86_64/aarch64 \(glibc 2\.17 or newer\); "
                     r"this is CPython 3\.9\.\d+ on linux \w+ \(install python3\.10 or newer\)\n")


def ok(result: subprocess.CompletedProcess[str], what: str) -> str:
    assert result.returncode == 0, f"{what}: exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    return str(result.stdout)


def test_version_names_the_interpreter_and_odbc(where: Where) -> None:
    _, cwd = where.workdir()
    lines = ok(where.dstream("version", cwd=cwd), "version").splitlines()
    minor = where.name.split("-")[1]
    assert re.fullmatch(rf"dstream 0\.1\.0 \(provider protocol 1, Python {re.escape(minor)}\.\d+\)", lines[0]), lines
    assert lines[1].startswith(f"interpreter: CPython {minor}.") and " on linux " in lines[1], lines
    assert re.fullmatch(r"mssql-cdc: usable; ODBC drivers: .*FreeTDS.*", lines[2]), lines


def test_local_lifecycle(where: Where) -> None:
    """init -> plan -> run --once twice -> status -> destroy on examples/local.hcl."""
    host, cwd = where.workdir()
    shutil.copytree(ROOT / "examples", host / "examples", ignore=shutil.ignore_patterns(".dstream", "out", "bench-out", "__pycache__"))
    cwd += "/examples"
    ok(where.dstream("init", "local.hcl", cwd=cwd), "init")
    assert "No changes" in ok(where.dstream("plan", "local.hcl", cwd=cwd), "plan")
    ok(where.dstream("run", "--once", "local.hcl", cwd=cwd), "first run")
    out = host / "examples" / "out"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    changes = (ROOT / "examples" / "data" / "changes.jsonl").read_text().splitlines()
    assert sum(len(data.splitlines()) for data in first.values()) == len(changes), first.keys()
    ok(where.dstream("run", "--once", "local.hcl", cwd=cwd), "second run")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first, "a rerun resumes after its checkpoints: nothing twice"
    status = ok(where.dstream("status", "local.hcl", cwd=cwd), "status")
    assert all(stream in status for stream in ("Persons", "Orders", "Customers")), status
    ok(where.dstream("destroy", "--auto-approve", "local.hcl", cwd=cwd), "destroy")


def test_mssql_cdc_to_files(where: Where) -> None:
    """The TDS peer runs on the host; FreeTDS in the root filesystem reaches it on 127.0.0.1."""
    peer = start_peer("freetds")
    try:
        peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Persons (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL)")
        peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Persons', @role_name = NULL")
        host, cwd = where.workdir()
        conn = peer.connection_string.replace("\\", "\\\\").replace('"', '\\"')
        (host / "task.hcl").write_text(f'''task "cdc" {{
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
        ok(where.dstream("init", "task.hcl", cwd=cwd), "init")
        peer.sql("INSERT INTO Persons VALUES (1, N'after init')")
        ok(where.dstream("run", "--once", "task.hcl", cwd=cwd), "first run")
        peer.sql("UPDATE Persons SET Name = N'later' WHERE ID = 1")
        ok(where.dstream("run", "--once", "task.hcl", cwd=cwd), "second run")
        lines = [json.loads(x) for x in (host / "out" / "Persons_cdc_events.jsonl").read_text().splitlines()]
        assert [(m["metadata"]["OperationType"], m["data"]["Name"]) for m in lines] == [("Insert", "after init"), ("Update", "later")]
    finally:
        peer.stop()


def test_python_3_9_gets_one_line_and_exit_1(bullseye: Where) -> None:
    _, cwd = bullseye.workdir()
    for args in (("version",), ("init", "local.hcl")):
        result = bullseye.dstream(*args, cwd=cwd)
        assert result.returncode == 1 and result.stdout == "", result
        assert REFUSAL.fullmatch(result.stderr), result.stderr
    assert bullseye.rootfs is not None
    assert not bullseye.rootfs.inside("/tmp/dstream-zipapp/.shiv").exists(), "refused before shiv unpacks anything"


def test_host_without_unixodbc_gets_the_package_name(no_unixodbc: Where) -> None:
    host, cwd = no_unixodbc.workdir()
    version = ok(no_unixodbc.dstream("version", cwd=cwd), "version").splitlines()
    assert version[2] == "mssql-cdc: not usable: unixODBC's libodbc.so.2 is missing (install unixodbc on Debian/Ubuntu, unixODBC on RHEL)"
    (host / "task.hcl").write_text('''task "cdc" {
  type = "providers"
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "DRIVER={FreeTDS};SERVER=127.0.0.1;PORT=1;UID=sa;PWD=x"
      tables            = ["Persons"]
    }
  }
  output {
    provider = "files"
    config {
      directory = "out"
    }
  }
}
''')
    result = no_unixodbc.dstream("plan", "task.hcl", cwd=cwd)
    assert result.returncode == 5, result
    assert "Traceback" not in result.stderr and "ImportError" not in result.stderr, result.stderr
    assert "mssql-cdc needs unixODBC's libodbc.so.2, which this host lacks" in result.stderr, result.stderr
    assert "apt-get install unixodbc (Debian/Ubuntu) or dnf install unixODBC (RHEL)" in result.stderr, result.stderr
