"""asb-queues without a connection string: DefaultAzureCredential, AMQPS on 5671, trust as users configure it.

The peers (tests/emulators/servicebus_tls.py) serve AMQPS on a loopback address
of their own and check each put-token as Service Bus does (a jwt for
https://servicebus.azure.net, signed, not expired); the stand-in `az` on PATH is
what azure-identity's real AzureCliCredential runs. The CA reaches the product
only through REQUESTS_CA_BUNDLE or SSL_CERT_FILE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Reply, streams
from servicebus_tls import EntraPeers, scrubbed_environment

TIMEOUT = 120
TABLES = ("Persons", "Orders")


@pytest.fixture
def entra(tmp_path: Path) -> Iterator[EntraPeers]:
    with EntraPeers(tmp_path / "peers") as running:
        yield running


def provider(peers: EntraPeers, command: str, trust: str = "requests", resources: list[dict[str, Any]] | None = None,
             lines: list[str] | None = None, config: dict[str, Any] | None = None, timeout: float = TIMEOUT) -> Reply:
    envelope = {"protocol": 1, "command": command, "task": "t", "role": "output", "config": config or peers.config(),
                "streams": streams(*TABLES), "resources": resources or [], "checkpoints": {}, "refresh": True, "once": True}
    stdin = json.dumps(envelope) + "\n" + "".join(line + "\n" for line in lines or [])
    env = scrubbed_environment({**peers.env(trust=trust), "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-m", "providers.asb_queues"], input=stdin.encode(), capture_output=True, env=env,
                            cwd=peers.dir, timeout=timeout)
    out = result.stdout.decode()
    return Reply(result.returncode, [json.loads(line) for line in out.splitlines() if line.strip()], result.stderr.decode(), out)


def change(table: str, i: int) -> str:
    return json.dumps({"data": {"ID": i}, "metadata": {"TableName": table, "Schema": "dbo", "OperationType": "Insert", "LSN": f"{i:020x}"},
                       "stream": table, "position": {"seq": i}})


def initialised(peers: EntraPeers, trust: str = "requests") -> list[dict[str, Any]]:
    init = provider(peers, "init", trust=trust)
    assert init.code == 0, init.stderr + init.stdout
    return [{k: m["resource"][k] for k in ("type", "name", "id", "attributes")} for m in init.resources()]


def test_config_holds_no_secret(entra: EntraPeers) -> None:
    config = entra.config()
    assert "connection_string" not in config and config["fully_qualified_namespace"] == entra.host
    assert not any(part in json.dumps(config) for part in ("SharedAccessKey", entra.jwt_key().decode()))


@pytest.mark.parametrize("trust", ["requests", "ssl"])
def test_init_and_run_over_tls_with_the_credential(entra: EntraPeers, trust: str) -> None:
    """REQUESTS_CA_BUNDLE or SSL_CERT_FILE alone: Resource Manager (HTTPS) and AMQPS both trust the CA."""
    resources = initialised(entra, trust)
    assert {r["name"] for r in resources} == set(TABLES)
    lines = [change(TABLES[i % 2], i) for i in range(1, 41)]
    run = provider(entra, "run", trust=trust, resources=resources, lines=lines)
    assert run.code == 0, run.stderr + run.stdout
    assert run.of("checkpoint")[-1]["position"] in ({"seq": 40}, {"seq": 39})
    stats = entra.amqp_stats()
    assert stats["queues"]["Persons_cdc_events"]["accepted"] == 20 and stats["queues"]["Orders_cdc_events"]["accepted"] == 20
    assert stats["tls_connections"] >= 2  # one connection per queue's sender, each over TLS on 5671
    assert stats["jwt_tokens"] >= 2 and stats.get("refused_tokens", 0) == 0 and stats.get("refused_links", 0) == 0
    assert [call["resource"] for call in entra.az_calls()][0] == "https://servicebus.azure.net/"
    assert [json.loads(str(m))["data"]["ID"] for m in entra.receive("Orders_cdc_events", 20)] == \
        list(range(1, 41, 2))  # odd IDs went to Orders, in order


def test_untrusted_server_certificate_is_one_line_naming_the_fix(entra: EntraPeers) -> None:
    resources = initialised(entra)
    run = provider(entra, "run", trust="none", resources=resources, lines=[change("Persons", 1)])
    assert run.code != 0
    assert run.error is not None
    assert "TLS certificate is not trusted" in run.error["message"]
    assert "REQUESTS_CA_BUNDLE" in run.error["hint"] and "SSL_CERT_FILE" in run.error["hint"]
    assert "Traceback" not in run.stderr
    assert entra.amqp_stats().get("jwt_tokens", 0) == 0  # no token was sent to a server it could not trust


def test_missing_ca_bundle_file_is_a_clear_error(entra: EntraPeers) -> None:
    resources = initialised(entra)
    envelope = {"protocol": 1, "command": "run", "task": "t", "role": "output", "config": entra.config(), "streams": streams(*TABLES),
                "resources": resources, "checkpoints": {}, "refresh": True, "once": True}
    env = scrubbed_environment({**entra.env(trust="none"), "SSL_CERT_FILE": str(entra.dir / "nowhere.pem"), "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-m", "providers.asb_queues"], input=(json.dumps(envelope) + "\n" + change("Persons", 1) + "\n").encode(),
                            capture_output=True, env=env, timeout=TIMEOUT)
    error = [json.loads(line) for line in result.stdout.decode().splitlines() if '"error"' in line][-1]
    assert result.returncode != 0 and "SSL_CERT_FILE names" in error["message"] and "nowhere.pem" in error["message"]


def test_expired_token_is_refused_in_one_line(entra: EntraPeers) -> None:
    resources = initialised(entra)
    entra.set_token_lifetime(-30)  # the stand-in az now hands out tokens that expired half a minute ago
    run = provider(entra, "run", resources=resources, lines=[change("Persons", 1)], config=entra.config(send_timeout=10))
    assert run.code != 0 and run.error is not None
    assert "Service Bus refused the credentials" in run.error["message"] and "ExpiredToken" in run.error["message"], run.error
    assert "Data Sender" in run.error["hint"]
    assert "Traceback" not in run.stderr
    stats = entra.amqp_stats()
    assert stats["refused_tokens"] >= 1
    assert stats.get("queues", {}).get("Persons_cdc_events", {}).get("accepted", 0) == 0
    assert not run.of("checkpoint")


def jwt(key: bytes, **claims: Any) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(hmac.new(key, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"


class StaticToken:
    """A TokenCredential handing out one fixed token (unit of the peer's check, through the real SDK)."""

    def __init__(self, token: str, expires_on: int):
        self.token, self.expires_on = token, expires_on

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, self.expires_on)


@pytest.mark.parametrize(("audience", "key_ok", "accepted"), [
    ("https://servicebus.azure.net/", True, True),
    ("https://servicebus.azure.net", True, True),
    ("https://management.azure.com/", True, False),  # a token for another service
    ("https://servicebus.azure.net/", False, False),  # forged: signed with another key
])
def test_peer_checks_audience_and_signature_of_entra_tokens(entra: EntraPeers, audience: str, key_ok: bool, accepted: bool) -> None:
    from azure.servicebus import ServiceBusClient, ServiceBusMessage
    from azure.servicebus.exceptions import ServiceBusAuthenticationError

    initialised(entra)
    now = int(time.time())
    key = entra.jwt_key() if key_ok else b"not-the-key"
    credential = StaticToken(jwt(key, aud=audience, nbf=now - 10, exp=now + 600), now + 600)

    def send() -> None:
        client = ServiceBusClient(entra.host, credential, connection_verify=str(entra.ca), retry_total=0)  # type: ignore[arg-type]
        with client, client.get_queue_sender("Persons_cdc_events") as sender:
            sender.send_messages(ServiceBusMessage("x", message_id="m1"))

    if accepted:
        send()
    else:
        with pytest.raises(ServiceBusAuthenticationError):
            send()
    stats = entra.amqp_stats()
    assert stats.get("queues", {}).get("Persons_cdc_events", {}).get("accepted", 0) == (1 if accepted else 0)
    assert stats.get("refused_tokens", 0) == (0 if accepted else 1)


LIFETIME = 20  # seconds; the SDK renews a token when a tenth of its life is left (pyamqp cbs.py: refresh_window = 10%)


def test_run_keeps_sending_across_token_refreshes_and_an_idle_expiry(entra: EntraPeers) -> None:
    """A run longer than its tokens live: steady sends across refreshes, then an idle gap past expiry (the peer drops
    the links, as Service Bus does), then more sends. Every change arrives once, in order, and is acknowledged."""
    resources = initialised(entra)
    entra.set_token_lifetime(LIFETIME)
    envelope = {"protocol": 1, "command": "run", "task": "t", "role": "output", "config": entra.config(), "streams": streams(*TABLES),
                "resources": resources, "checkpoints": {}, "refresh": True, "once": False}
    env = scrubbed_environment({**entra.env(), "PYTHONPATH": str(ROOT)})
    process = subprocess.Popen([sys.executable, "-m", "providers.asb_queues"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, cwd=entra.dir)
    assert process.stdin is not None
    sent = 0

    def send_for(seconds: float) -> None:
        nonlocal sent
        assert process.stdin is not None
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            sent += 1
            process.stdin.write((change(TABLES[sent % 2], sent) + "\n").encode())
            process.stdin.flush()
            time.sleep(0.1)

    try:
        process.stdin.write((json.dumps(envelope) + "\n").encode())
        send_for(2.2 * LIFETIME)  # two refreshes while sending
        time.sleep(LIFETIME + 8)  # idle past expiry: the peer detaches the links
        expired_while_idle = entra.amqp_stats().get("expired_links", 0)
        send_for(8)
        out, err = process.communicate(timeout=TIMEOUT)  # closes stdin: the input ended
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()[-3000:]
    checkpoints = [json.loads(line) for line in out.decode().splitlines() if '"checkpoint"' in line]
    last = {c["stream"]: c["position"]["seq"] for c in checkpoints}
    assert last == {TABLES[sent % 2]: sent, TABLES[(sent - 1) % 2]: sent - 1}
    stats = entra.amqp_stats()
    assert sum(q["accepted"] for q in stats["queues"].values()) == sent  # none lost, none stored twice
    assert expired_while_idle >= 1  # the idle senders' links were dropped at expiry ...
    assert stats.get("refused_tokens", 0) == 0  # ... and no expired token was ever put
    assert len(entra.az_calls()) >= 6  # fresh tokens: initial + two refreshes, per queue's connection
    for table in TABLES:
        ids = [json.loads(str(m))["data"]["ID"] for m in entra.receive(f"{table}_cdc_events", sent // 2)]
        assert ids == [i for i in range(1, sent + 1) if TABLES[i % 2] == table]
