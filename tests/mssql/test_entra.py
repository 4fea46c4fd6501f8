"""Azure SQL with Entra ID: authentication = "azure" signs in with DefaultAzureCredential's token.

The real chain runs (azure-identity, AzureCliCredential through AZURE_TOKEN_CREDENTIALS) against
the stand-in `az` of tests/emulators/entra.py, which mints a JWT per call for the resource asked
(`https://database.windows.net`). ODBC Driver 18 sends it in LOGIN7's FEDAUTH feature over TLS; the
TDS peer, switched to Entra-only after the tests' admin connection has set up CDC, refuses password
logins and checks each token's audience and expiry.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyodbc
import pytest

from .conftest import ROOT, Peer, Reply, config, ms_driver, provider

sys.path.insert(0, str(ROOT / "tests" / "emulators"))
from entra import StandInAz  # noqa: E402


def token_cs(port: int, driver: str = "msodbc18") -> str:
    if driver == "freetds":
        return f"DRIVER={{FreeTDS}};SERVER=127.0.0.1;PORT={port};DATABASE=dstream;TDS_Version=7.4;Encryption=require"
    path = ms_driver()
    if path is None:
        pytest.skip("mssql-python-odbc is not installed")
    return f"DRIVER={path};SERVER=localhost,{port};DATABASE=dstream;Encrypt=yes"  # no UID, no PWD


def az_env(az: StandInAz) -> dict[str, str]:
    return {"PATH": f"{az.bin}{os.pathsep}{os.environ['PATH']}", "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential"}


def run_with_token(peer: Peer, az: StandInAz, command: str = "run", driver: str = "msodbc18", **extra: object) -> Reply:
    cfg = config(peer, ["Persons"], start="earliest", authentication="azure", connection_string=token_cs(peer.port, driver), **extra)
    return provider(command, cfg, env=az_env(az), timeout=90)


def assert_no_token_in(az: StandInAz, *outputs: str) -> None:
    tokens = az.tokens()
    for text in outputs:
        for token in tokens:
            assert token not in text and token.split(".")[2] not in text


def test_password_logins_are_refused_once_the_peer_is_entra_only(entra_peer: Peer) -> None:
    with pytest.raises(pyodbc.Error, match="18456"):
        pyodbc.connect(token_cs(entra_peer.port) + ";UID=sa;PWD=x", timeout=10)


def test_mssql_cdc_reads_with_an_entra_token_and_never_shows_it(entra_peer: Peer, tmp_path: Path) -> None:
    az = StandInAz(tmp_path / "az")
    entra_peer.sql("INSERT INTO Persons VALUES (1, N'signed in with Entra ID')")
    run = run_with_token(entra_peer, az)
    assert run.rc == 0, run.stderr
    assert [c["data"]["Name"] for c in run.of("Persons")] == ["signed in with Entra ID"]
    assert az.issued() and {t["aud"] for t in az.issued()} == {"https://database.windows.net"}
    assert_no_token_in(az, run.stderr, str(run.lines))


def test_a_reconnect_signs_in_again_with_a_token_that_is_still_valid(entra_peer: Peer, tmp_path: Path) -> None:
    # tokens of 2 minutes: azure-identity renews within 5 minutes of expiry, so each connect asks the stand-in az again
    az = StandInAz(tmp_path / "az", lifetime=120)
    entra_peer.sql("INSERT INTO Persons VALUES (1, N'first')")
    cfg = config(entra_peer, ["Persons"], start="earliest", authentication="azure", connection_string=token_cs(entra_peer.port))
    import subprocess

    from .conftest import envelope, wait_for

    proc = subprocess.Popen([sys.executable, "-m", "providers.mssql_cdc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env={**os.environ, **az_env(az)}, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(envelope("run", cfg, once=False) + "\n")
    proc.stdin.flush()
    try:
        lines: list[str] = []
        while len([x for x in lines if "first" in x]) < 1:
            lines.append(proc.stdout.readline())
        before = len(az.issued())
        entra_peer.sql("EXEC dstream_test.drop_connections")  # every other session: the provider's
        entra_peer.sql("INSERT INTO Persons VALUES (2, N'after the reconnect')")
        while not any("after the reconnect" in x for x in lines):
            lines.append(proc.stdout.readline())
        wait_for(lambda: len(az.issued()) > before, timeout=5)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "reconnecting" in stderr
    assert_no_token_in(az, stderr, "".join(lines))


def test_a_token_for_another_audience_is_refused_in_one_line(entra_peer: Peer, tmp_path: Path) -> None:
    az = StandInAz(tmp_path / "az", mode="audience")
    plan = run_with_token(entra_peer, az, command="plan")
    assert plan.rc == 1 and "Traceback" not in plan.stderr
    error = plan.of_type("error")[0]
    assert error["message"] == "Azure SQL refused the Entra ID token: Login failed for user '<token-identified principal>'.", error
    assert "CREATE USER" in error["hint"] and error["key"] == "authentication"
    assert_no_token_in(az, plan.stderr, str(plan.lines))


def test_no_credential_is_one_line_naming_the_sources(entra_peer: Peer, tmp_path: Path) -> None:
    az = StandInAz(tmp_path / "az", mode="logged-out")
    run = run_with_token(entra_peer, az)
    assert run.rc == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot get an Entra ID token for Azure SQL" in lines[0] and "managed identity" in lines[0], run.stderr


def test_freetds_with_authentication_azure_is_one_line(entra_peer: Peer, tmp_path: Path) -> None:
    az = StandInAz(tmp_path / "az")
    plan = run_with_token(entra_peer, az, command="plan", driver="freetds")
    assert plan.rc == 1
    error = plan.of_type("error")[0]
    assert "FreeTDS cannot sign in with an Entra ID token" in error["message"] and "msodbcsql18" in error["hint"]
    assert az.issued() == []  # refused before asking for a token


def test_credentials_next_to_a_token_are_a_config_error(entra_peer: Peer, tmp_path: Path) -> None:
    az = StandInAz(tmp_path / "az")
    cfg = config(entra_peer, ["Persons"], authentication="azure", connection_string=token_cs(entra_peer.port) + ";UID=sa;PWD=x")
    plan = provider("plan", cfg, env=az_env(az))
    assert plan.rc == 1
    assert "connection_string holds PWD, UID" in plan.of_type("error")[0]["message"]
