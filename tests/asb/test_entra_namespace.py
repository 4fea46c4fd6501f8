"""Namespace-API mode with the Azure credential: a task holding only `fully_qualified_namespace`.

`ServiceBusAdministrationClient(fqns, DefaultAzureCredential())` dials
https://<fqns> (port 443) with `Authorization: Bearer <jwt>` for
https://servicebus.azure.net/.default; EntraPeers(namespace_api_tls=True) serves
the namespace API there, checking each JWT as the AMQP peer checks put-token.
The last test drives plan/init/run --once/status/destroy through the built
zipapp with the CA only in SSL_CERT_FILE, and looks for every minted token in
what dstream printed and wrote.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from servicebus_tls import EntraPeers, scrubbed_environment

TASK = """
task "entra-ns" {
  input {
    provider = "generator"
    config {
      count  = 300
      tables = ["Persons", "Orders", "Customers"]
    }
  }
  output {
    provider = "asb-queues"
    config {
      fully_qualified_namespace = "{{ env "ASB_HOST" }}"
    }
  }
}
"""
QUEUES = {"Persons_cdc_events", "Orders_cdc_events", "Customers_cdc_events"}


@pytest.fixture
def entra(tmp_path: Path) -> Iterator[EntraPeers]:
    running = EntraPeers(tmp_path / "peers", namespace_api_tls=True)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def jwt(key: bytes, audience: str = "https://servicebus.azure.net", lifetime: int = 600) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"aud": audience, "nbf": now - 60, "exp": now + lifetime}).encode())
    return f"{head}.{body}.{b64(hmac.new(key, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"


def get_namespace_info(entra: EntraPeers, authorization: str) -> tuple[int, str]:
    request = urllib.request.Request(f"https://{entra.host}/$namespaceinfo?api-version=2021-05", headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(entra.ca)), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_admin_client_with_the_credential_manages_queues_on_443(entra: EntraPeers, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import DefaultAzureCredential
    from azure.servicebus.management import ServiceBusAdministrationClient

    for name, value in scrubbed_environment(entra.env(trust="requests")).items():
        monkeypatch.setenv(name, value)
    with DefaultAzureCredential() as credential, ServiceBusAdministrationClient(entra.host, credential, retry_total=0) as admin:
        admin.create_queue("Orders_cdc_events")
        assert [q.name for q in admin.list_queues()] == ["orders_cdc_events"]
        assert admin.get_namespace_properties().messaging_sku == "Standard"
    assert set(entra.queues()) == {"Orders_cdc_events"}  # the one model the ARM and AMQP peers share
    calls = entra.az_calls()
    assert calls and all(call["resource"].startswith("https://servicebus.azure.net") for call in calls)


@pytest.mark.parametrize("case", ["wrong key", "wrong audience", "expired", "not a jwt", "missing"])
def test_bearer_tokens_the_service_would_refuse_are_401(entra: EntraPeers, case: str) -> None:
    key = entra.jwt_key()
    header = {"wrong key": f"Bearer {jwt(b'another key')}", "wrong audience": f"Bearer {jwt(key, 'https://storage.azure.com')}",
              "expired": f"Bearer {jwt(key, lifetime=-5)}", "not a jwt": "Bearer opaque", "missing": ""}[case]
    status, body = get_namespace_info(entra, header)
    assert status == 401
    reason = {"wrong key": "InvalidSignature", "wrong audience": "InvalidAudience", "expired": "ExpiredToken", "not a jwt": "InvalidToken",
              "missing": "MissingToken"}[case]
    assert body.startswith("<Error><Code>401</Code><Detail>") and reason in body
    assert get_namespace_info(entra, f"Bearer {jwt(key)}")[0] == 200  # the same request with a good token passes


def test_plain_bytes_on_443_are_no_handshake(entra: EntraPeers) -> None:
    import socket

    with socket.create_connection((entra.host, 443), timeout=5) as sock:
        sock.sendall(b"AMQP\x00\x01\x00\x00")
        assert sock.recv(16) == b""  # dropped: 443 is TLS only, AMQP lives on 5671


def test_lifecycle_with_only_the_namespace_host_through_the_zipapp(tmp_path: Path, entra: EntraPeers, pyz: Path) -> None:
    work = tmp_path / "task"
    work.mkdir()
    (work / "task.hcl").write_text(TASK)
    env = scrubbed_environment({**entra.env(trust="ssl"), "SHIV_ROOT": str(pyz.parent / ".shiv"),
                                "ASB_HOST": entra.credential_namespace_config()["fully_qualified_namespace"]})

    def dstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(pyz), *args], cwd=work, env=env, capture_output=True, text=True, timeout=180)

    entra.reset_arm_requests()
    plan = dstream("plan", "--out", "saved.plan", "task.hcl")
    assert plan.returncode == 0, plan.stderr
    assert "Persons_cdc_events" in plan.stdout
    init = dstream("init", "task.hcl")
    assert init.returncode == 0, init.stderr
    assert set(entra.queues()) == QUEUES
    run = dstream("run", "--once", "task.hcl")
    assert run.returncode == 0, run.stderr
    stats = entra.amqp_stats()
    assert {q: s["accepted"] for q, s in stats["queues"].items()} == {q: 100 for q in QUEUES}
    assert stats["tls_connections"] >= 1 and stats["jwt_tokens"] >= 3 and stats.get("refused_tokens", 0) == 0
    assert len(entra.receive("Orders_cdc_events", 100)) == 100
    status = dstream("status", "--json", "task.hcl")
    assert status.returncode == 0, status.stderr
    by_address = {r["address"]: r["status"] for r in json.loads(status.stdout)["resources"]}
    assert by_address['output.queue["Persons"]']["active_messages"] == 100
    destroy = dstream("destroy", "--auto-approve", "task.hcl")
    assert destroy.returncode == 0, destroy.stderr
    assert entra.queues() == {}
    requests = entra.arm_requests()
    assert requests["namespace_api"].get("PUT queue", 0) == 3 and requests["namespace_api"].get("DELETE queue", 0) == 3
    assert requests["requests"] == 0  # Resource Manager was never asked

    tokens = {call["token"] for call in json.loads("[" + ",".join(entra.az_log.read_text().splitlines()) + "]")}
    assert tokens and all(t.count(".") == 2 for t in tokens)  # only Service Bus JWTs: no other resource was asked for
    secrets = tokens | {t.rsplit(".", 1)[-1] for t in tokens} | {entra.jwt_key().decode()}
    printed = "".join(r.stdout + r.stderr for r in (plan, init, run, status, destroy))
    written = "".join(p.read_text(errors="replace") for p in work.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret not in printed and secret not in written
