"""Queue (and stream) names are case-insensitive, as in Service Bus, and Resource Manager lists them lower-cased.

After `init` made `Orders_cdc_events`, the list answers `orders_cdc_events`: nothing
may read that as drift, a rename or a replacement (which deletes the messages).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Provider, state_after, streams
from servicebus_peers import AzurePeers
from test_dstream_e2e import PEER_CONFIG, change, dstream

TASK = """
task "mixed-case" {
  input {
    provider = "generator"
    config {
      count  = %(count)d
      tables = [%(tables)s]
    }
  }
  output {
    provider = "asb-queues"
    config {
""" + PEER_CONFIG + """    }
  }
}
"""


def write_task(tmp: Path, *tables: str, count: int = 300) -> None:
    (tmp / "task.hcl").write_text(TASK % {"count": count, "tables": ", ".join(json.dumps(t) for t in tables)})


def positioned(stream: str, i: int) -> dict[str, Any]:
    return {"stream": stream, "position": i, "data": {"ID": i}, "metadata": {"TableName": stream, "Schema": "dbo", "OperationType": "Insert"}}


def actions(reply: Any) -> dict[str, str]:
    return {c["resource"]["name"]: c["action"] for c in reply.of("change")}


# --- the peers ------------------------------------------------------------------------------


def test_arm_peer_lists_lower_cased_and_finds_any_casing(peers: AzurePeers) -> None:
    assert peers.put_queue("Orders_cdc_events")[0] == 200
    assert peers.listed_queue_names() == ["orders_cdc_events"]  # what Resource Manager answers
    got = peers.get_queue("ORDERS_cdc_events")
    assert got is not None and got["name"] == "ORDERS_cdc_events" and got["id"].endswith("/queues/ORDERS_cdc_events")
    assert peers.put_queue("orders_CDC_events", maxDeliveryCount=3)[0] == 200  # the same queue, updated
    assert list(peers.queues()) == ["Orders_cdc_events"] and peers.queues()["Orders_cdc_events"]["maxDeliveryCount"] == 3
    assert peers.delete_queue("ORDERS_CDC_EVENTS") == 200
    assert peers.queues() == {}


def test_amqp_peer_and_provider_with_a_mixed_case_namespace(tmp_path: Path) -> None:
    with AzurePeers(tmp_path / "peers", namespace="Dstream-NS") as peers:
        provider = Provider(peers, tmp_path)
        init = provider("init", streams=streams("Orders"))
        assert init.code == 0, init.stderr
        lines = [change("Orders", i) for i in range(1, 4)]
        run = provider("run", streams=streams("Orders"), resources=state_after([], init), lines=lines)
        assert run.code == 0, run.stderr
        assert len(peers.receive("ORDERS_CDC_EVENTS", 3)) == 3


# --- plan and init through dstream ------------------------------------------------------


def test_second_plan_and_init_change_nothing_for_mixed_case_tables(tmp_path: Path, peers: AzurePeers) -> None:
    write_task(tmp_path, "Persons", "Orders", "OrderLines")
    init = dstream(tmp_path, peers, "init", "task.hcl")
    assert init.returncode == 0, init.stderr
    assert set(peers.queues()) == {"Persons_cdc_events", "Orders_cdc_events", "OrderLines_cdc_events"}
    plan = dstream(tmp_path, peers, "plan", "--detailed-exitcode", "task.hcl")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout and "changed outside" not in plan.stdout
    peers.reset_arm_requests()
    again = dstream(tmp_path, peers, "init", "task.hcl")
    assert again.returncode == 0, again.stderr
    assert peers.arm_writes() == []  # no DELETE + PUT: the queues and their messages stay
    state = json.loads((tmp_path / ".dstream" / "mixed-case.state.json").read_text())
    assert {r["attributes"]["queue"] for r in state["resources"]} == {"Persons_cdc_events", "Orders_cdc_events", "OrderLines_cdc_events"}


def test_run_after_a_second_init_delivers_to_the_same_queue(tmp_path: Path, peers: AzurePeers) -> None:
    write_task(tmp_path, "Orders", count=50)
    assert dstream(tmp_path, peers, "init", "task.hcl").returncode == 0
    run = dstream(tmp_path, peers, "run", "--once", "task.hcl")
    assert run.returncode == 0, run.stderr
    again = dstream(tmp_path, peers, "init", "task.hcl")
    assert again.returncode == 0, again.stderr
    write_task(tmp_path, "Orders", count=80)  # 30 more changes
    run = dstream(tmp_path, peers, "run", "--once", "task.hcl")
    assert run.returncode == 0, run.stderr
    assert list(peers.queues()) == ["Orders_cdc_events"]
    assert len(peers.receive("orders_cdc_events", 80)) == 80  # nothing of the first run was lost


def test_two_streams_whose_queues_differ_only_in_case_are_one_error(tmp_path: Path, peers: AzurePeers) -> None:
    write_task(tmp_path, "Orders", "ORDERS")
    for verb in ("plan", "init"):
        result = dstream(tmp_path, peers, verb, "task.hcl")
        assert result.returncode == 5, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        assert "case-insensitive" in lines[0] and "'Orders'" in lines[0] and "'ORDERS'" in lines[0]
    assert peers.queues() == {}


# --- adoption, renamed streams, status, on demand (the provider as a process) ----------------


def test_adopting_a_queue_listed_in_another_case_keeps_the_configured_spelling(provider: Provider, peers: AzurePeers) -> None:
    assert peers.put_queue("ORDERS_CDC_EVENTS", requiresDuplicateDetection=True, duplicateDetectionHistoryTimeWindow="PT1H")[0] == 200
    refused = provider("plan", streams=streams("Orders"))
    assert refused.code != 0 and "Orders_cdc_events" in refused.error["message"] and "adopt_existing" in refused.error["message"] + str(refused.error)
    config = peers.config(adopt_existing=True)
    plan = provider("plan", config, streams("Orders"))
    assert plan.code == 0, plan.stderr
    assert actions(plan) == {"Orders": "adopt"}
    assert plan.of("change")[0]["after"]["queue"] == "Orders_cdc_events"
    peers.reset_arm_requests()
    init = provider("init", config, streams("Orders"))
    assert init.code == 0, init.stderr
    assert peers.arm_writes() == []  # adopted as it is
    state = state_after([], init)
    assert state[0]["attributes"]["queue"] == "Orders_cdc_events"
    again = provider("plan", config, streams("Orders"), state)
    assert again.code == 0 and again.of("change") == [] and again.of("drift") == [], again.messages


def test_a_stream_whose_name_changed_case_keeps_its_queue(provider: Provider, peers: AzurePeers) -> None:
    state = state_after([], provider("init", streams=streams("Orders")))
    for config in (peers.config(), peers.config(adopt_existing=True)):  # never delete + adopt the same queue
        plan = provider("plan", config, streams("orders"), state)
        assert plan.code == 0, plan.stderr
        assert plan.of("change") == [] and plan.of("drift") == [], plan.messages


def test_a_template_changing_only_the_case_is_no_replacement(provider: Provider, peers: AzurePeers) -> None:
    state = state_after([], provider("init", streams=streams("Orders")))
    plan = provider("plan", peers.config(queue_name="{table}_CDC_EVENTS"), streams("Orders"), state)
    assert plan.code == 0, plan.stderr
    assert plan.of("change") == [] and plan.of("drift") == [], plan.messages


def test_status_finds_mixed_case_queues(provider: Provider, peers: AzurePeers) -> None:
    state = state_after([], provider("init", streams=streams("Orders")))
    status = provider("status", streams=streams("Orders"), resources=state)
    assert status.code == 0, status.stderr
    assert [s["status"]["status"] for s in status.of("status")] == ["Active"]


def test_run_maps_a_stream_to_its_queue_whatever_the_case(provider: Provider, peers: AzurePeers) -> None:
    state = state_after([], provider("init", streams=streams("Orders")))
    config = peers.config(create_queues_on_demand=True)
    run = provider("run", config, streams("orders"), state, lines=[positioned("orders", i) for i in range(1, 3)])
    assert run.code == 0, run.stderr
    assert run.resources() == [] and list(peers.queues()) == ["Orders_cdc_events"]
    assert run.of("checkpoint")[-1] == {"type": "checkpoint", "stream": "orders", "position": 2}  # the input's stream name
    assert len(peers.receive("Orders_cdc_events", 2)) == 2


def test_queue_made_on_demand_adopts_a_queue_listed_in_another_case(provider: Provider, peers: AzurePeers) -> None:
    assert peers.put_queue("refunds_cdc_events", requiresDuplicateDetection=True, duplicateDetectionHistoryTimeWindow="PT1H")[0] == 200
    config = peers.config(create_queues_on_demand=True, adopt_existing=True)
    peers.reset_arm_requests()
    run = provider("run", config, lines=[change("Refunds", 1)])
    assert run.code == 0, run.stderr
    assert peers.arm_writes() == []
    made = run.resources()
    assert len(made) == 1 and made[0]["resource"]["attributes"]["queue"] == "Refunds_cdc_events"
    assert len(peers.receive("Refunds_cdc_events", 1)) == 1


def test_amqp_peer_empties_a_queue_deleted_and_made_again(provider: Provider, peers: AzurePeers) -> None:
    state = state_after([], provider("init", streams=streams("Orders")))
    assert provider("run", streams=streams("Orders"), resources=state, lines=[change("Orders", 1)]).code == 0
    assert peers.delete_queue("Orders_cdc_events") == 200 and peers.put_queue("Orders_cdc_events")[0] == 200  # at once: a replacement
    assert peers.receive("Orders_cdc_events", 0, timeout=2) == []
