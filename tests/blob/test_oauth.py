"""Blob state signed in with DefaultAzureCredential over HTTPS: what only the credential path has.

The whole tests/blob suite already runs with `auth` "oauth" (lifecycle, locking, fencing, secrets). Here: a run
that outlives several tokens, a credential that yields none or the wrong one, and trust as users configure it
(REQUESTS_CA_BUNDLE, else SSL_CERT_FILE, and nothing else).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import certifi
import pytest
import requests

from tests.cli._support import copy_provider, error_line, external, files_output, generator_input, ok, wait_for
from tests.emulators.azurite import Azurite
from tests.emulators.entra import StandInAz

from ._blob import LEASE, PREFIX, Auth, BlobTasks

pytestmark = pytest.mark.parametrize("auth_mode", ["oauth"], indirect=True)

TOKEN_LIFETIME = 20  # seconds: under azure-core's 300 s refresh window, so the SDK asks for a new token on every request
RUN_FOR = 50  # seconds: two and a half token lifetimes


def with_auth(blob: BlobTasks, auth: Auth) -> BlobTasks:
    return BlobTasks(blob.azurite, blob.container, blob.dstream, blob.pyz, blob.tmp_path, auth)


def raw_get(azurite: Azurite, path: str, token: str) -> requests.Response:
    """A request with a given bearer token, outside any SDK: what does Azurite make of the token itself?"""
    assert azurite.tls is not None
    return requests.get(f"{azurite.endpoint}/{path}", headers={"Authorization": f"Bearer {token}", "x-ms-version": "2025-11-05"},
                        verify=str(azurite.tls.ca), timeout=10)


def test_a_long_run_renews_its_leases_across_token_lifetimes(blob: BlobTasks, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The stand-in az hands out tokens that live 20 s and Azurite refuses them once expired; a run of 50 s keeps
    its run lease (a second run is refused at the end), keeps writing checkpoints after the first tokens have
    expired, and stops cleanly with exactly what it wrote checkpointed."""
    az = StandInAz(tmp_path_factory.mktemp("az-short"), lifetime=TOKEN_LIFETIME)
    tasks = with_auth(blob, Auth("oauth", blob.azurite, az))
    work = tasks.tmp_path
    copy_provider("slow_input.sh", work)
    tasks.write(work, "t", external("./slow_input.sh"), files_output())
    ok(tasks.cli("init", "task.hcl", cwd=work))
    issued_before_run = len(az.issued())

    run = tasks.start("run", "task.hcl", cwd=work, log=work / "run.log")
    progress: list[tuple[float, int]] = []
    try:
        wait_for(lambda: f"{PREFIX}t.checkpoints.json" in tasks.names(), 30, "the run to persist a checkpoint")
        started = time.time()
        while time.time() - started < RUN_FOR:
            assert run.poll() is None, (work / "run.log").read_text()
            progress.append((time.time(), tasks.checkpoints("t")["Slow"]["seq"]))
            time.sleep(2)
        assert tasks.blob(f"{PREFIX}t.run.lock").get_blob_properties().lease.state == "leased"
        second = tasks.cli("run", "--lock-timeout", "0s", "task.hcl", cwd=work, timeout=30)
        error_line(second, 4, "task is already running", f"(pid {run.pid})")
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=60)
    log = (work / "run.log").read_text()
    assert code == 0, log

    tokens = az.issued()[issued_before_run:]
    first_expiry = min(entry["exp"] for entry in tokens)
    assert len({entry["exp"] for entry in tokens}) >= 3, f"only {len(tokens)} token(s) fetched during the run"
    assert {entry["aud"] for entry in tokens} == {"https://storage.azure.com"}
    later = [seq for at, seq in progress if at > first_expiry + 2]
    assert len(later) >= 5 and later == sorted(later) and later[-1] > later[0], f"checkpoints stalled once the first token expired: {progress}"
    expired = raw_get(blob.azurite, f"{blob.name}?restype=container", tokens[0]["token"])
    assert expired.status_code == 403 and "AuthenticationFailed" in expired.text, "Azurite must refuse an expired token"

    written = [int(s) for s in re.findall(r'"seq":(\d+)', (work / "out" / "Slow_cdc_events.jsonl").read_text())]
    assert written == list(range(1, len(written) + 1)), "no change lost or written twice"
    assert tasks.checkpoints("t") == {"Slow": {"seq": written[-1]}}, "a clean stop checkpoints exactly what was written"
    assert tasks.blob(f"{PREFIX}t.run.lock").get_blob_properties().lease.state != "leased", "the run released its lease"
    tasks.check_logs()


def test_a_credential_that_stops_giving_tokens_stops_the_run(blob: BlobTasks, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`az` signed out mid-run (tokens live 20 s, so the SDK asks again at once): the run can no longer renew its
    lease, so it stops before the lease could expire (15 s), with one line naming the cause; what it checkpointed
    was written; the next command after signing in again finds everything intact."""
    az = StandInAz(tmp_path_factory.mktemp("az-revoked"), lifetime=TOKEN_LIFETIME)
    tasks = with_auth(blob, Auth("oauth", blob.azurite, az))
    work = tasks.tmp_path
    copy_provider("slow_input.sh", work)
    tasks.write(work, "t", external("./slow_input.sh"), files_output())
    ok(tasks.cli("init", "task.hcl", cwd=work))
    run = tasks.start("run", "task.hcl", cwd=work, log=work / "run.log")
    try:
        wait_for(lambda: f"{PREFIX}t.checkpoints.json" in tasks.names(), 30, "the run to persist a checkpoint")
        az.set_mode("logged-out")
        signed_out = time.monotonic()
        code = run.wait(timeout=60)
        took = time.monotonic() - signed_out
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=30)
    result = subprocess.CompletedProcess(run.args, code, "", (work / "run.log").read_text())
    line = error_line(result, 1)
    assert "no Azure credential for" in line or "no token from DefaultAzureCredential" in line, line
    assert took < LEASE, f"the run went on {took:.0f}s without a token, past its {LEASE}s lease"
    az.set_mode("ok")
    written = [int(s) for s in re.findall(r'"seq":(\d+)', (work / "out" / "Slow_cdc_events.jsonl").read_text())]
    assert written == list(range(1, len(written) + 1))
    assert 0 < tasks.checkpoints("t")["Slow"]["seq"] <= written[-1], "checkpoints are never ahead of the output"
    assert "No changes." in ok(tasks.cli("plan", "--lock-timeout", "30s", "task.hcl", cwd=work)).stdout
    tasks.check_logs()


def test_azurite_checks_what_entra_tokens_carry(blob: BlobTasks, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The peer is as strict as the claims it checks: a fresh token for storage passes; an expired one, one for
    another audience and one that is not a JWT do not."""
    fresh = StandInAz(tmp_path_factory.mktemp("az-fresh"), lifetime=2)
    import json

    def mint(az: StandInAz) -> str:
        out = subprocess.run([str(az.bin / "az"), "account", "get-access-token", "--output", "json", "--resource", "https://storage.azure.com"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return str(json.loads(out)["accessToken"])

    path = f"{blob.name}?restype=container"
    assert raw_get(blob.azurite, path, mint(fresh)).status_code == 200
    short = mint(fresh)
    time.sleep(3.1)
    assert raw_get(blob.azurite, path, short).status_code == 403
    fresh.set_mode("audience")
    assert raw_get(blob.azurite, path, mint(fresh)).status_code == 403
    assert raw_get(blob.azurite, path, "not-a-jwt").status_code == 403


@pytest.mark.parametrize("mode", ["logged-out", "absent"])
def test_no_credential_is_one_line(blob: BlobTasks, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mode: str) -> None:
    """`az` not signed in, or no credential source at all: one line naming how to sign in, exit 1, nothing written."""
    if mode == "absent":
        nowhere = tmp_path_factory.mktemp("no-az")  # a PATH without az: the CLI credential is unavailable
        az = StandInAz(nowhere)
        auth = Auth("oauth", blob.azurite, az)
        env_override: dict[str, Any] = {"PATH": "/usr/bin:/bin"}
    else:
        az = StandInAz(tmp_path_factory.mktemp("az-out"), mode="logged-out")
        auth = Auth("oauth", blob.azurite, az)
        env_override = {}
    tasks = with_auth(blob, auth)
    tasks.write(tmp_path, "t", generator_input(3), files_output())
    for verb in ("plan", "init", "status"):
        result = tasks.dstream(verb, "task.hcl", cwd=tmp_path, env={**tasks.env, **env_override}, timeout=60)
        error_line(result, 1, "no Azure credential for", blob.name, "az login", "managed identity")
    assert tasks.names() == [] and not (tmp_path / "out").exists()


def test_a_token_for_another_audience_is_denied(blob: BlobTasks, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    az = StandInAz(tmp_path_factory.mktemp("az-aud"), mode="audience")
    tasks = with_auth(blob, Auth("oauth", blob.azurite, az))
    tasks.write(tmp_path, "t", generator_input(3), files_output())
    error_line(tasks.cli("init", "task.hcl"), 1, "was denied (AuthenticationFailed)", "Storage Blob Data Contributor")
    assert tasks.names() == [] and not (tmp_path / "out").exists()


def test_ssl_cert_file_alone_is_trusted(blob: BlobTasks, auth: Auth, tmp_path: Path) -> None:
    """requests ignores SSL_CERT_FILE by itself; dstream passes it on, so it works alone."""
    tasks = with_auth(blob, Auth("oauth", blob.azurite, auth.az, ca_variable="SSL_CERT_FILE"))
    assert tasks.env["REQUESTS_CA_BUNDLE"] == "" and tasks.env["SSL_CERT_FILE"]
    tasks.write(tmp_path, "t", generator_input(3), files_output())
    ok(tasks.cli("init", "task.hcl"))
    ok(tasks.cli("run", "--once", "task.hcl"))
    assert tasks.checkpoints("t")


@pytest.mark.parametrize("case", ["no CA", "REQUESTS_CA_BUNDLE first"])
def test_an_untrusted_certificate_is_one_line(blob: BlobTasks, auth: Auth, tmp_path: Path, case: str) -> None:
    """Without the test CA (only certifi's roots), or with REQUESTS_CA_BUNDLE naming another bundle while
    SSL_CERT_FILE names the right one (REQUESTS_CA_BUNDLE wins, as in requests): one line naming both variables."""
    tasks = with_auth(blob, auth)
    assert blob.azurite.tls is not None
    env = {**tasks.env, "REQUESTS_CA_BUNDLE": "", "SSL_CERT_FILE": ""}
    if case == "REQUESTS_CA_BUNDLE first":
        env.update(REQUESTS_CA_BUNDLE=certifi.where(), SSL_CERT_FILE=str(blob.azurite.tls.ca))
    tasks.write(tmp_path, "t", generator_input(3), files_output())
    result = tasks.dstream("plan", "task.hcl", cwd=tmp_path, env=env, timeout=60)
    error_line(result, 1, "the TLS certificate of", "is not trusted", "REQUESTS_CA_BUNDLE or SSL_CERT_FILE")


def test_a_missing_ca_bundle_is_a_usage_error(blob: BlobTasks, auth: Auth, tmp_path: Path) -> None:
    tasks = with_auth(blob, auth)
    tasks.write(tmp_path, "t", generator_input(3), files_output())
    result = tasks.dstream("plan", "task.hcl", cwd=tmp_path, env={**tasks.env, "REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem")}, timeout=60)
    error_line(result, 3, "REQUESTS_CA_BUNDLE names", "missing.pem", "which is not a file")


def test_account_url_must_be_https(blob: BlobTasks, tmp_path: Path) -> None:
    """azure-core would refuse to send a bearer token over HTTP mid-command; dstream says so before starting."""
    task = tmp_path / "task.hcl"
    blob.write(tmp_path, "t", generator_input(3), files_output())
    task.write_text(task.read_text().replace("https://", "http://"))
    error_line(blob.cli("plan", "task.hcl"), 3, "account_url must start with https://")
