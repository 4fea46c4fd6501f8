"""The whole lifecycle through the built zipapp with a task that holds no secret: DefaultAzureCredential over TLS.

Resource Manager mode: plan, init, run --once, status, destroy, with the stand-in
`az` on PATH, the CA in SSL_CERT_FILE only (the setting azure-servicebus ignores
on its own), and Service Bus reached at fully_qualified_namespace:5671 over TLS.
Every token the stand-in az handed out is then looked for, and never found, in
what the commands printed and in every file dstream wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servicebus_tls import EntraPeers, scrubbed_environment

TASK = """
task "entra" {
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
      subscription_id           = "{{ env "AZ_SUB" }}"
      resource_group            = "{{ env "AZ_RG" }}"
      namespace                 = "{{ env "AZ_NS" }}"
      management_endpoint       = "{{ env "AZ_ARM" }}"
      fully_qualified_namespace = "{{ env "ASB_HOST" }}"
    }
  }
}
"""
QUEUES = {"Persons_cdc_events", "Orders_cdc_events", "Customers_cdc_events"}


@pytest.fixture
def entra(tmp_path: Path) -> Iterator[EntraPeers]:
    with EntraPeers(tmp_path / "peers") as running:
        yield running


def test_lifecycle_with_the_credential_and_no_secret_through_the_zipapp(tmp_path: Path, entra: EntraPeers, pyz: Path) -> None:
    work = tmp_path / "task"
    work.mkdir()
    (work / "task.hcl").write_text(TASK)
    config = entra.config()
    env = scrubbed_environment({**entra.env(trust="ssl"), "SHIV_ROOT": str(pyz.parent / ".shiv"), "AZ_SUB": config["subscription_id"],
                                "AZ_RG": config["resource_group"], "AZ_NS": config["namespace"], "AZ_ARM": config["management_endpoint"],
                                "ASB_HOST": config["fully_qualified_namespace"]})

    def dstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(pyz), *args], cwd=work, env=env, capture_output=True, text=True, timeout=180)

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
    assert stats["tls_connections"] >= 3 and stats["jwt_tokens"] >= 3 and stats.get("refused_tokens", 0) == 0
    assert len(entra.receive("Orders_cdc_events", 100)) == 100
    status = dstream("status", "--json", "task.hcl")
    assert status.returncode == 0, status.stderr
    by_address = {r["address"]: r["status"] for r in json.loads(status.stdout)["resources"]}
    assert by_address['output.queue["Persons"]']["active_messages"] == 100
    destroy = dstream("destroy", "--auto-approve", "task.hcl")
    assert destroy.returncode == 0, destroy.stderr
    assert entra.queues() == {}

    tokens = {call["token"] for call in json.loads("[" + ",".join(entra.az_log.read_text().splitlines()) + "]")}
    assert any(t.count(".") == 2 for t in tokens)  # Service Bus JWTs were minted (and the ARM peer's token)
    secrets = tokens | {t.rsplit(".", 1)[-1] for t in tokens if t.count(".") == 2} | {entra.jwt_key().decode()}
    printed = "".join(r.stdout + r.stderr for r in (plan, init, run, status, destroy))
    written = "".join(p.read_text(errors="replace") for p in work.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret not in printed and secret not in written
