"""asb-queues through dstream itself: plan, init, run --once, status, destroy with the generator input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from servicebus_peers import AzurePeers

PEER_CONFIG = """\
      subscription_id     = "{{ env "AZ_SUB" }}"
      resource_group      = "{{ env "AZ_RG" }}"
      namespace           = "{{ env "AZ_NS" }}"
      management_endpoint = "{{ env "AZ_ARM" }}"
      connection_string   = "{{ env "ASB_CONNECTION" }}"
"""

TASK = """
task "to-asb" {
  type = "providers"
  input {
    provider = "generator"
    config {
      count  = 600
      tables = ["Persons", "Orders", "Customers"]
    }
  }
  output {
    provider = "asb-queues"
    config {
""" + PEER_CONFIG + """      queue {
        max_delivery_count = 5
      }
    }
  }
}
"""


def dstream(tmp: Path, peers: AzurePeers, *args: str) -> subprocess.CompletedProcess[str]:
    config = peers.config()
    env = {**os.environ, **peers.env(), "AZ_SUB": config["subscription_id"], "AZ_RG": config["resource_group"], "AZ_NS": config["namespace"],
           "AZ_ARM": config["management_endpoint"], "ASB_CONNECTION": config["connection_string"]}
    return subprocess.run([sys.executable, str(ROOT / "dstream.py"), *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def test_lifecycle_and_run_through_dstream(tmp_path: Path, peers: AzurePeers) -> None:
    (tmp_path / "task.hcl").write_text(TASK)
    plan = dstream(tmp_path, peers, "plan", "task.hcl")
    assert plan.returncode == 0, plan.stderr
    assert "Persons_cdc_events" in plan.stdout
    init = dstream(tmp_path, peers, "init", "task.hcl")
    assert init.returncode == 0, init.stderr
    assert set(peers.queues()) == {"Persons_cdc_events", "Orders_cdc_events", "Customers_cdc_events"}
    assert all(q["maxDeliveryCount"] == 5 for q in peers.queues().values())
    run = dstream(tmp_path, peers, "run", "--once", "task.hcl")
    assert run.returncode == 0, run.stderr
    assert len(peers.receive("Persons_cdc_events", 200)) == 200
    again = dstream(tmp_path, peers, "run", "--once", "task.hcl")  # resumes after its checkpoints: nothing new
    assert again.returncode == 0, again.stderr
    assert peers.amqp_stats()["queues"]["Orders_cdc_events"]["accepted"] == 200
    status = dstream(tmp_path, peers, "status", "--json", "task.hcl")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    by_address = {r["address"]: r["status"] for r in document["resources"]}
    assert by_address['output.queue["Orders"]']["active_messages"] == 200
    key = "c2VjcmV0LWtleQ=="
    for result in (plan, init, run, status):
        assert key not in result.stdout + result.stderr
    destroy = dstream(tmp_path, peers, "destroy", "--auto-approve", "task.hcl")
    assert destroy.returncode == 0, destroy.stderr
    assert peers.queues() == {}


ON_DEMAND = """
task "on-demand" {
  input {
    provider = "jsonl"
    config { path = "changes.jsonl" }
  }
  output {
    provider = "asb-queues"
    config {
""" + PEER_CONFIG + """      create_queues_on_demand = true
    }
  }
}
"""


def change(table: str, i: int) -> str:
    return json.dumps({"data": {"ID": i}, "metadata": {"TableName": table, "Schema": "dbo", "OperationType": "Insert", "LSN": f"{i:020x}"}}) + "\n"


def test_queue_created_on_demand_during_run_is_recorded_in_state(tmp_path: Path, peers: AzurePeers) -> None:
    (tmp_path / "task.hcl").write_text(ON_DEMAND)
    (tmp_path / "changes.jsonl").write_text("".join(change("Persons", i) for i in range(1, 4)))
    init = dstream(tmp_path, peers, "init", "task.hcl")
    assert init.returncode == 0, init.stderr
    assert set(peers.queues()) == {"Persons_cdc_events"}
    with open(tmp_path / "changes.jsonl", "a") as handle:  # a table that appeared after init
        handle.write("".join(change("Refunds", i) for i in range(4, 6)))
    run = dstream(tmp_path, peers, "run", "--once", "task.hcl")
    assert run.returncode == 0, run.stderr
    assert set(peers.queues()) == {"Persons_cdc_events", "Refunds_cdc_events"}
    assert len(peers.receive("Refunds_cdc_events", 2)) == 2
    state = json.loads((tmp_path / ".dstream" / "on-demand.state.json").read_text())
    assert {r["name"] for r in state["resources"]} == {"Persons", "Refunds"}
    plan = dstream(tmp_path, peers, "plan", "--detailed-exitcode", "task.hcl")
    assert plan.returncode == 0, plan.stdout + plan.stderr  # the queue made on demand is owned, not "unmanaged"
    assert "No changes" in plan.stdout
