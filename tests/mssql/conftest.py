"""Fixtures for mssql-cdc: the TDS peer as a subprocess, both ODBC drivers, the provider as a process.

The peer speaks TLS with a trustme certificate (for "localhost" and 127.0.0.1), and the default
connection strings encrypt everything, as production does:
- ODBC Driver 18: Encrypt=yes, SERVER=localhost (the driver matches the host name against the
  certificate's DNS names only, not its IP addresses), the CA trusted through OpenSSL's
  SSL_CERT_FILE (`tls_env()`; the autouse fixture sets it for every test here).
- FreeTDS 1.3: Encryption=require. Its connection-string keywords cannot name a CA, and it then
  checks no certificate at all; tests/mssql/test_tls.py shows the freetds.conf form that does.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
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


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the trustme CA (what clients trust)
    server: Path  # the peer's key and certificate chain
    leaf: Path  # the peer's certificate alone (for ServerCertificate= pinning)


_TLS: list[TlsFiles] = []


def tls_files() -> TlsFiles:
    """One CA and server certificate for the whole test session, made on first use."""
    if not _TLS:
        import trustme

        directory = Path(tempfile.mkdtemp(prefix="dstream-tds-tls-"))
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "leaf.pem")
        ca.cert_pem.write_to_path(str(files.ca))
        cert.private_key_and_cert_chain_pem.write_to_path(str(files.server))
        cert.cert_chain_pems[0].write_to_path(str(files.leaf))
        _TLS.append(files)
    return _TLS[0]


def tls_env() -> dict[str, str]:
    """What a process needs to trust the peer's certificate (ODBC Driver 18 reads OpenSSL's SSL_CERT_FILE)."""
    return {"SSL_CERT_FILE": str(tls_files().ca)}


@pytest.fixture(autouse=True)
def trust_peer_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in tls_env().items():
        monkeypatch.setenv(name, value)


def connection_string(driver: str, port: int, encrypt: str = "yes") -> str:
    """The default (encrypted) connection string of a driver; encrypt = "yes", "strict" or "no"."""
    if driver == "freetds":
        encryption = {"yes": "require", "no": "off"}[encrypt]
        return f"DRIVER={{FreeTDS}};SERVER=127.0.0.1;PORT={port};UID=sa;PWD=x;DATABASE=dstream;TDS_Version=7.4;Encryption={encryption}"
    path = ms_driver()
    if path is None:
        pytest.skip("mssql-python-odbc is not installed")
    return f"DRIVER={path};SERVER=localhost,{port};UID=sa;PWD=x;DATABASE=dstream;Encrypt={encrypt}"


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


def start_peer(driver: str, *options: str) -> Peer:
    """The peer with TLS (options: --force-encryption, --entra-only)."""
    proc = subprocess.Popen([sys.executable, str(PEER), "--port", "0", "--cert", str(tls_files().server), *options], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"peer did not start: {line!r}")
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


@pytest.fixture
def entra_peer() -> Iterator[Peer]:
    """A peer with dbo.Persons under CDC, then Entra-only (the admin connection, already signed in, stays)."""
    p = start_peer("msodbc18")
    try:
        p.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Persons (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL)")
        p.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Persons', @role_name = NULL")
        p.sql("EXEC dstream_test.entra_only 1")
        yield p
    finally:
        p.stop()
