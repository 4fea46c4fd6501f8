"""SQL Server with encryption on: both drivers, both TLS forms of the TDS peer, trust as users configure it.

Findings (also in docs/mssql-cdc.md, "Signing in"):
- ODBC Driver 18 does Encrypt=yes (TLS inside PRELOGIN) and Encrypt=strict (TDS 8.0); it trusts
  OpenSSL's store (SSL_CERT_FILE works), matches SERVER= against the certificate's DNS names only
  (SERVER=127.0.0.1 fails "subject name does not match host name" with an IP SAN: use the name or
  HostNameInCertificate=), ignores TrustServerCertificate with strict, and accepts ServerCertificate=
  (the server's own certificate, pinned) only with strict.
- FreeTDS 1.3.17 does TLS inside PRELOGIN (Encryption=require) but not TDS 8.0 (Encryption=strict
  fails to connect); with connection-string keywords it verifies no certificate at all, and it uses
  GnuTLS (SSL_CERT_FILE means nothing to it): only a freetds.conf server section with `ca file`
  (Servername=..., FREETDSCONF=...) makes it check one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyodbc
import pytest

from .conftest import Peer, config, connection_string, ms_driver, provider, tls_files

FOREIGN_CA_DIR: list[Path] = []


def enable_persons(peer: Peer) -> None:
    peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Persons (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL)")
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Persons', @role_name = NULL")


def session(cs: str, **env: str) -> tuple[str, int]:
    """(encrypt_option, protocol_version) of a connection made with `cs`, as sys.dm_exec_connections shows it."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        conn = pyodbc.connect(cs, autocommit=True, timeout=10)
        row = conn.cursor().execute("SELECT encrypt_option, protocol_version FROM sys.dm_exec_connections WHERE session_id = @@SPID").fetchone()
        conn.close()
        return str(row[0]), int(row[1])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def foreign_ca() -> Path:
    """A CA that did not sign the peer's certificate."""
    if not FOREIGN_CA_DIR:
        import tempfile

        import trustme

        path = Path(tempfile.mkdtemp(prefix="dstream-foreign-ca-")) / "ca.pem"
        trustme.CA().cert_pem.write_to_path(str(path))
        FOREIGN_CA_DIR.append(path)
    return FOREIGN_CA_DIR[0]


def ms(port: int, extra: str) -> str:
    path = ms_driver()
    if path is None:
        pytest.skip("mssql-python-odbc is not installed")
    return f"DRIVER={path};SERVER=localhost,{port};UID=sa;PWD=x;DATABASE=dstream;{extra}"


def run_once(peer: Peer, cs: str, env: dict[str, str] | None = None) -> Any:
    enable_persons(peer)
    init = provider("init", config(peer, ["Persons"], start="earliest", connection_string=cs), env=env)
    assert init.rc == 0, init.stderr
    peer.sql("INSERT INTO Persons VALUES (1, N'over TLS')")
    return provider("run", config(peer, ["Persons"], start="earliest", connection_string=cs), env=env)


# --- the default connection strings encrypt everything -------------------------------------


def test_default_connection_strings_encrypt_every_packet(peer: Peer) -> None:
    assert session(peer.connection_string) == ("TRUE", 0x74000004)


def test_encrypt_no_still_encrypts_the_login_and_force_encryption_encrypts_all(tmp_path: Path) -> None:
    from .conftest import start_peer

    for options, expected in (((), "FALSE"), (("--force-encryption",), "TRUE")):
        p = start_peer("msodbc18", *options)
        try:
            assert session(connection_string("msodbc18", p.port, encrypt="no"))[0] == expected  # ENCRYPT_OFF: TLS for LOGIN7 only
        finally:
            p.stop()


# --- mssql-cdc over each form ----------------------------------------------------------------


@pytest.mark.parametrize("form", ["ca-trusted", "trust-server-certificate", "strict", "strict-pinned"])
def test_mssql_cdc_reads_over_tls_with_odbc_driver_18(freetds_peer: Peer, form: str) -> None:
    port = freetds_peer.port
    cs, env = {
        "ca-trusted": (ms(port, "Encrypt=yes"), {}),
        "trust-server-certificate": (ms(port, "Encrypt=yes;TrustServerCertificate=yes"), {"SSL_CERT_FILE": str(foreign_ca())}),
        "strict": (ms(port, "Encrypt=strict"), {}),
        "strict-pinned": (ms(port, f"Encrypt=strict;ServerCertificate={tls_files().leaf}"), {"SSL_CERT_FILE": str(foreign_ca())}),
    }[form]
    assert session(cs, **env) == ("TRUE", 0x08000000 if form.startswith("strict") else 0x74000004)
    run = run_once(freetds_peer, cs, env)
    assert run.rc == 0, run.stderr
    assert [c["data"]["Name"] for c in run.of("Persons")] == ["over TLS"]


def test_mssql_cdc_reads_over_tls_with_freetds_checking_the_ca_through_freetds_conf(freetds_peer: Peer, tmp_path: Path) -> None:
    conf = tmp_path / "freetds.conf"
    conf.write_text(f"[tdspeer]\n\thost = 127.0.0.1\n\tport = {freetds_peer.port}\n\ttds version = 7.4\n\tencryption = require\n"
                    f"\tca file = {tls_files().ca}\n")
    cs = "DRIVER={FreeTDS};Servername=tdspeer;UID=sa;PWD=x;DATABASE=dstream"
    env = {"FREETDSCONF": str(conf)}
    assert session(cs, **env)[0] == "TRUE"
    run = run_once(freetds_peer, cs, env)
    assert run.rc == 0, run.stderr
    assert [c["data"]["Name"] for c in run.of("Persons")] == ["over TLS"]
    conf.write_text(conf.read_text().replace(str(tls_files().ca), str(foreign_ca())))
    with pytest.raises(pyodbc.Error):
        session(cs, **env)


def test_freetds_cannot_do_tds_8_strict(freetds_peer: Peer) -> None:
    cs = connection_string("freetds", freetds_peer.port).replace("Encryption=require", "Encryption=strict")
    with pytest.raises(pyodbc.Error):
        session(cs)


# --- an untrusted certificate: one line naming the fix ------------------------------------


@pytest.mark.parametrize("encrypt", ["yes", "strict"])
def test_untrusted_certificate_is_one_line_naming_both_fixes(freetds_peer: Peer, encrypt: str) -> None:
    enable_persons(freetds_peer)
    cs = ms(freetds_peer.port, f"Encrypt={encrypt}")
    env = {"SSL_CERT_FILE": str(foreign_ca())}
    plan = provider("plan", config(freetds_peer, ["Persons"], connection_string=cs), env=env, timeout=60)
    assert plan.rc == 1 and "Traceback" not in plan.stderr
    error = plan.of_type("error")[0]
    assert error["message"].startswith("SQL Server's TLS certificate is not trusted: SSL Provider: "), error
    assert "certificate verify failed" in error["message"]
    assert "SSL_CERT_FILE" in error["hint"] and "TrustServerCertificate=yes" in error["hint"], error
    run = provider("run", config(freetds_peer, ["Persons"], connection_string=cs), env=env, timeout=60)  # not retried: no retry can fix it
    assert run.rc == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "TLS certificate is not trusted" in lines[0] and "TrustServerCertificate=yes" in lines[0], run.stderr
