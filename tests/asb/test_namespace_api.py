"""asb-queues managed through the namespace's own management API: nothing but a connection string.

The provider runs as a real process with azure-servicebus' ServiceBusAdministrationClient
against the namespace-API peer (servicebus_admin.py, HTTPS on the port the connection
string names, AMQP forwarded on the same port), which shares one model with the
Resource Manager peer: a queue made through one API is seen by the other.
"""

from __future__ import annotations

import math
from typing import Any

from conftest import Provider, state_after, streams
from servicebus_peers import AzurePeers


def actions(reply: Any) -> dict[str, str]:
    return {c["resource"]["name"]: c["action"] for c in reply.of("change")}


def applied(provider: Provider, names: tuple[str, ...], config: dict[str, Any], resources: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    reply = provider("init", config, streams(*names), resources or [])
    assert reply.code == 0, reply.stderr + str(reply.messages)
    return state_after(resources or [], reply)


def test_plan_and_init_with_only_a_connection_string(provider: Provider, peers: AzurePeers) -> None:
    config = peers.namespace_config()
    peers.reset_arm_requests()
    plan = provider("plan", config, streams("Persons", "Orders"))
    assert plan.code == 0, plan.stderr + str(plan.messages)
    assert actions(plan) == {"Persons": "create", "Orders": "create"}
    after = {c["resource"]["name"]: c["after"] for c in plan.of("change")}
    assert after["Persons"]["requires_duplicate_detection"] is True and after["Persons"]["default_message_time_to_live"] == "infinite"
    assert peers.namespace_api_requests() == {"total": 2, "GET namespaceinfo": 1, "GET queues": 1}
    assert peers.arm_requests()["requests"] == 0  # no Resource Manager at all
    state = applied(provider, ("Persons", "Orders"), config)
    assert set(peers.queues()) == {"Persons_cdc_events", "Orders_cdc_events"}
    assert peers.queues()["Persons_cdc_events"]["requiresDuplicateDetection"] is True
    assert {r["id"] for r in state} == {f"https://127.0.0.1:{peers.amqp_port}/Persons_cdc_events", f"https://127.0.0.1:{peers.amqp_port}/Orders_cdc_events"}
    again = provider("plan", config, streams("Persons", "Orders"), state)
    assert again.code == 0 and again.of("change") == [] and again.of("drift") == [], again.messages


def test_update_replace_delete_and_drift_as_in_resource_manager_mode(provider: Provider, peers: AzurePeers) -> None:
    config = peers.namespace_config(queue={"duplicate_detection_history_time_window": "3600s", "lock_duration": "PT60S"})
    state = applied(provider, ("Persons", "Orders", "Gone"), config)
    assert provider("plan", config, streams("Persons", "Orders", "Gone"), state).of("change") == []  # durations compared as values
    changed = peers.namespace_config(queue={"max_delivery_count": 3, "lock_duration": "2m", "enable_partitioning": False})
    assert peers.delete_queue("Orders_cdc_events") == 200  # outside dstream
    plan = provider("plan", changed, streams("Persons", "Orders"), state)
    assert actions(plan) == {"Persons": "update", "Orders": "create", "Gone": "delete"}
    assert {d["resource"]["name"]: d["after"] for d in plan.of("drift")} == {"Orders": None}
    state = applied(provider, ("Persons", "Orders"), changed, state)
    assert peers.queues()["Persons_cdc_events"]["maxDeliveryCount"] == 3 and peers.queues()["Persons_cdc_events"]["lockDuration"] == "PT2M"
    assert set(peers.queues()) == {"Persons_cdc_events", "Orders_cdc_events"}
    replaced = peers.namespace_config(queue={"max_delivery_count": 3, "lock_duration": "2m", "enable_partitioning": True})
    plan = provider("plan", replaced, streams("Persons", "Orders"), state)
    assert {c["action"] for c in plan.of("change")} == {"replace"} and all("lost" in c["reason"] for c in plan.of("change"))
    assert any("REPLACED" in w["message"] for w in plan.of("warning"))
    state = applied(provider, ("Persons", "Orders"), replaced, state)
    assert all(q["enablePartitioning"] is True for q in peers.queues().values())
    destroy = provider("destroy", replaced, streams("Persons", "Orders"), state)
    assert destroy.code == 0 and peers.queues() == {}


def test_existing_queue_refused_unless_adopted_and_names_ignore_case(provider: Provider, peers: AzurePeers) -> None:
    assert peers.put_queue("PERSONS_cdc_events", requiresDuplicateDetection=True, duplicateDetectionHistoryTimeWindow="PT1H")[0] == 200
    refused = provider("plan", peers.namespace_config(), streams("Persons"))
    assert refused.code == 1 and "not managed by this task" in refused.error["message"] and refused.error["key"] == "adopt_existing"
    config = peers.namespace_config(adopt_existing=True)
    peers.reset_arm_requests()
    state = applied(provider, ("Persons",), config)
    assert peers.arm_writes() == [] and state[0]["attributes"]["queue"] == "Persons_cdc_events"
    assert provider("plan", config, streams("persons"), state).of("change") == []


def test_basic_tier_from_the_namespace_properties(tmp_path: Any) -> None:
    with AzurePeers(tmp_path / "basic", sku="Basic") as peers:
        provider = Provider(peers, tmp_path)
        plan = provider("plan", peers.namespace_config(), streams("Persons"))
        assert plan.code == 0, plan.stderr
        assert plan.of("change")[0]["after"]["tier"] == "Basic" and plan.of("change")[0]["after"]["requires_duplicate_detection"] is False
        refused = provider("init", peers.namespace_config(queue={"requires_session": True}, session_id="table"), streams("Persons"))
        assert refused.code == 1 and "Basic tier" in refused.error["message"] and peers.queues() == {}
        state = applied(provider, ("Persons",), peers.namespace_config())
        assert provider("plan", peers.namespace_config(), streams("Persons"), state).of("change") == []


def test_a_plan_of_many_tables_reads_the_namespace_once_and_pages_the_feed(provider: Provider, peers: AzurePeers) -> None:
    names = tuple(f"Table{i:03d}" for i in range(230))
    config = peers.namespace_config(parallelism=16)
    state = applied(provider, names, config)
    peers.reset_arm_requests()
    plan = provider("plan", config, streams(*names), state)
    assert plan.code == 0 and plan.of("change") == []
    assert peers.namespace_api_requests() == {"total": 1 + math.ceil(230 / 100), "GET namespaceinfo": 1, "GET queues": 3}  # never a GET per queue
    peers.reset_arm_requests()
    status = provider("status", config, streams(*names[:2]), state[:2])
    assert [s["status"]["status"] for s in status.of("status")] == ["Active", "Active"]
    # the queue feed (each queue's status) and the runtime feed (its counts), 3 pages each; never a GET per queue
    assert peers.namespace_api_requests() == {"total": 6, "GET queues": 6}


def test_status_counts_messages(provider: Provider, peers: AzurePeers) -> None:
    config = peers.namespace_config()
    state = applied(provider, ("Persons", "Orders"), config)
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    with ServiceBusClient.from_connection_string(peers.connection_string) as client, client.get_queue_sender("Persons_cdc_events") as sender:
        sender.send_messages([ServiceBusMessage("a", message_id="1"), ServiceBusMessage("b", message_id="2")])
    peers.amqp_stats()
    peers.delete_queue("Orders_cdc_events")
    status = {m["resource"]["name"]: m["status"] for m in provider("status", config, streams("Persons", "Orders"), state).of("status")}
    assert status["Persons"]["active_messages"] == 2 and status["Persons"]["status"] == "Active"
    assert status["Orders"] == {"status": "missing"}


def test_switching_modes_on_one_namespace_is_no_replacement(provider: Provider, peers: AzurePeers) -> None:
    arm_state = applied(provider, ("Persons", "Orders"), peers.config())
    peers.reset_arm_requests()
    plan = provider("plan", peers.namespace_config(), streams("Persons", "Orders"), arm_state)
    assert plan.code == 0 and plan.of("change") == [] and plan.of("drift") == [], plan.messages
    init = provider("init", peers.namespace_config(), streams("Persons", "Orders"), arm_state)
    assert init.code == 0 and peers.arm_writes() == []
    ns_state = applied(provider, ("Refunds",), peers.namespace_config())
    peers.reset_arm_requests()
    back = provider("plan", peers.config(), streams("Refunds"), ns_state)
    assert back.code == 0 and back.of("change") == [] and back.of("drift") == [], back.messages
    assert provider("init", peers.config(), streams("Refunds"), ns_state).code == 0 and peers.arm_writes() == []


def test_a_send_only_key_is_refused_for_the_lifecycle_in_one_line(provider: Provider, peers: AzurePeers) -> None:
    config = {"connection_string": peers.send_connection_string}
    for verb in ("plan", "init"):
        reply = provider(verb, config, streams("Persons"))
        assert reply.code == 1, reply.stderr
        message = reply.error["message"]
        assert "Manage" in message and "sender" in message and "<Error>" not in message and "Traceback" not in reply.stderr
        assert "send_connection_string" in reply.error.get("hint", "")
    assert peers.queues() == {}


def test_run_sends_with_the_send_only_key(provider: Provider, peers: AzurePeers) -> None:
    state = applied(provider, ("Orders",), peers.namespace_config())
    config = peers.namespace_config(send_connection_string=peers.send_connection_string)
    lines = [{"stream": "Orders", "position": i, "data": {"ID": i}, "metadata": {"TableName": "Orders", "OperationType": "Insert"}} for i in range(1, 4)]
    run = provider("run", config, streams("Orders"), state, lines=lines)
    assert run.code == 0, run.stderr
    assert len(peers.receive("Orders_cdc_events", 3)) == 3


def test_a_config_without_any_mode_is_one_error_naming_the_three(provider: Provider, peers: AzurePeers) -> None:
    for config in ({}, {"subscription_id": "s", "namespace": "n"}):
        reply = provider("plan", config, streams("Persons"))
        assert reply.code == 1
        assert "connection_string" in reply.error["message"] + reply.error.get("hint", "")
    validate = provider("validate", {"connection_string": peers.connection_string}, streams("Persons"))
    assert validate.code == 0, validate.messages


NS_TASK = """
task "ns-mixed" {
  input {
    provider = "generator"
    config {
      count  = 30
      tables = ["Persons", "OrderLines"]
    }
  }
  output {
    provider = "asb-queues"
    config {
      connection_string = "{{ env "ASB_CONNECTION" }}"
    }
  }
}
"""


def test_mixed_case_tables_plan_nothing_after_init_through_dstream(tmp_path: Any, peers: AzurePeers) -> None:
    import os
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "task.hcl").write_text(NS_TASK)
    env = {**os.environ, **peers.env(), "ASB_CONNECTION": peers.connection_string}

    def dstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "dstream.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    init = dstream("init", "task.hcl")
    assert init.returncode == 0, init.stdout + init.stderr
    assert peers.listed_queue_names() == ["orderlines_cdc_events", "persons_cdc_events"]  # the feed lists them lower-cased too
    plan = dstream("plan", "--detailed-exitcode", "task.hcl")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    send_only = {**env, "ASB_CONNECTION": peers.send_connection_string}
    refused = subprocess.run([sys.executable, str(ROOT / "dstream.py"), "plan", "task.hcl"], cwd=tmp_path, env=send_only, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("Error: ") and "Manage" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr and "<Error>" not in refused.stderr and "c2VuZC1vbmx5" not in refused.stderr


def test_the_peer_verifies_the_signature(peers: AzurePeers) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.servicebus.management import ServiceBusAdministrationClient

    forged = peers.connection_string_for(("k", "d3Jvbmcta2V5"))
    with ServiceBusAdministrationClient.from_connection_string(forged, retry_total=0, connection_verify=str(peers.ca)) as client:
        try:
            client.get_namespace_properties()
            raise AssertionError("a forged signature was accepted")
        except ClientAuthenticationError as exc:
            assert "InvalidSignature" in str(exc)
    with ServiceBusAdministrationClient.from_connection_string(peers.connection_string, retry_total=0, connection_verify=str(peers.ca)) as client:
        assert client.get_namespace_properties().messaging_sku == "Standard"
