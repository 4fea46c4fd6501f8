"""Fixtures for mssql-cdc: the TDS peer as a subprocess, both ODBC drivers, the provider as a process."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyodbc
import pytest

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "tests" / "emulators" / "tds" / "tds_server.py"
MS_DRIVER_GLOB = "mssql_python_odbc/libs/linux/debian_ubuntu/x86_64/lib/libmsodbcsql-18.*.so*"  # mssql-python-odbc==18.6.2.2, tests only


def ms_driver() -> str | None:
    for base in sys.path:
        found = sorted(glob.glob(os.path.join(base, MS_DRIVER_GLOB)))
        if found:
            return found[0]
    return None


def connection_string(driver: str, port: int) -> str:
    if driver == "freetds":
        return f"DRIVER={{FreeTDS}};SERVER=127.0.0.1;PORT={port};UID=sa;PWD=x;DATABASE=dstream;TDS_Version=7.4"
    path = ms_driver()
    if path is None:
        pytest.skip("mssql-python-odbc is not installed")
    return f"DRIVER={path};SERVER=127.0.0.1,{port};UID=sa;PWD=x;DATABASE=dstream;Encrypt=no"


@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    port: int
    driver: str
    _conn: Any = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.driver, self.port)

    def conn(self) -> Any:
        if self._conn is None:
            self._conn = pyodbc.connect(connection_string("freetds", self.port), autocommit=True, timeout=10)
        return self._conn

    def sql(self, *statements: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run statements (one batch each) on the peer's admin connection; rows of the last result."""
        rows: list[Any] = []
        cursor = self.conn().cursor()
        for stmt in statements:
            cursor.execute(stmt, *params)
            rows = cursor.fetchall() if cursor.description else []
        cursor.close()
        return rows

    def max_lsn(self) -> bytes:
        return bytes(self.sql("SELECT sys.fn_cdc_get_max_lsn() AS m")[0][0])

    def stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pyodbc.Error:
                pass
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_peer(driver: str) -> Peer:
    proc = subprocess.Popen([sys.executable, str(PEER), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"peer did not start: {line!r} {proc.stderr.read().decode() if proc.stderr else ''}")
    return Peer(proc, int(line.split()[1]), driver)


@pytest.fixture(params=["freetds", "msodbc18"])
def peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    p = start_peer(request.param)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def freetds_peer() -> Iterator[Peer]:
    p = start_peer("freetds")
    try:
        yield p
    finally:
        p.stop()


@dataclass
class Reply:
    rc: int
    lines: list[dict[str, Any]]
    stderr: str

    @property
    def changes(self) -> list[dict[str, Any]]:
        return [m for m in self.lines if "data" in m]

    def of(self, stream: str) -> list[dict[str, Any]]:
        return [m for m in self.changes if m["stream"] == stream]

    def last_positions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self.lines:
            if "position" in m and m.get("stream"):
                out[m["stream"]] = m["position"]
        return out

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.lines if m.get("type") == kind]


def envelope(command: str, config: dict[str, Any], checkpoints: dict[str, Any] | None = None, once: bool = True, **extra: Any) -> str:
    return json.dumps({"protocol": 1, "command": command, "task": "t", "role": "input", "config": config, "streams": [], "resources": [],
                       "checkpoints": checkpoints or {}, "once": once, **extra})


def provider(command: str, config: dict[str, Any], checkpoints: dict[str, Any] | None = None, once: bool = True, timeout: float = 40,
             env: dict[str, str] | None = None, **extra: Any) -> Reply:
    """Run python -m providers.mssql_cdc with one envelope; parse its stdout lines."""
    result = subprocess.run([sys.executable, "-m", "providers.mssql_cdc"], input=envelope(command, config, checkpoints, once, **extra) + "\n",
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    return Reply(result.returncode, lines, result.stderr)


def config(peer: Peer, tables: list[str], **extra: Any) -> dict[str, Any]:
    return {"connection_string": peer.connection_string, "tables": tables, "poll_interval_min": 0.05, "poll_interval_max": 0.2, **extra}


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")
