"""asb-queues plan/init/destroy/status against the Resource Manager peer, the provider as a real process."""

from __future__ import annotations

import time
from typing import Any

from conftest import Provider, state_after, streams
from servicebus_peers import AzurePeers


def actions(reply: Any) -> dict[str, str]:
    return {c["resource"]["name"]: c["action"] for c in reply.of("change")}


def applied(provider: Provider, names: tuple[str, ...], config: dict[str, Any] | None = None, resources: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    reply = provider("init", config, streams(*names), resources or [])
    assert reply.code == 0, reply.stderr
    return state_after(resources or [], reply)


def test_plan_creates_then_init_converges_with_one_get_and_one_list(provider: Provider, peers: AzurePeers) -> None:
    peers.reset_arm_requests()
    plan = provider("plan", streams=streams("Persons", "Orders"))
    assert plan.code == 0, plan.stderr
    assert actions(plan) == {"Persons": "create", "Orders": "create"}
    after = {c["resource"]["name"]: c["after"] for c in plan.of("change")}
    assert after["Persons"]["queue"] == "Persons_cdc_events"
    assert after["Persons"]["requires_duplicate_detection"] is True  # on by default on Standard
    assert after["Persons"]["default_message_time_to_live"] == "infinite"
    assert peers.arm_requests()["by_kind"] == {"total": 2, "GET namespace": 1, "GET queues": 1}
    assert peers.queues() == {}  # a plan changes nothing
    state = applied(provider, ("Persons", "Orders"))
    assert set(peers.queues()) == {"Persons_cdc_events", "Orders_cdc_events"}
    assert peers.queues()["Persons_cdc_events"]["requiresDuplicateDetection"] is True
    assert {r["id"].rsplit("/", 1)[-1] for r in state} == {"Persons_cdc_events", "Orders_cdc_events"}
    again = provider("plan", streams=streams("Persons", "Orders"), resources=state)
    assert again.code == 0 and again.of("change") == [] and again.of("drift") == [], again.messages


def test_update_in_place_and_durations_compared_as_values(provider: Provider, peers: AzurePeers) -> None:
    config = peers.config(queue=[{"duplicate_detection_history_time_window": "3600s", "lock_duration": "PT60S"}])  # hcl2 gives blocks as lists
    state = applied(provider, ("Persons",), config)
    assert peers.queues()["Persons_cdc_events"]["duplicateDetectionHistoryTimeWindow"] == "PT1H"  # Azure normalises
    assert provider("plan", config, streams("Persons"), state).of("change") == []
    changed = peers.config(queue={"duplicate_detection_history_time_window": "PT1H", "max_delivery_count": 3, "lock_duration": "2m"})
    plan = provider("plan", changed, streams("Persons"), state)
    assert actions(plan) == {"Persons": "update"}
    change = plan.of("change")[0]
    assert change["before"]["max_delivery_count"] == 10 and change["after"]["max_delivery_count"] == 3
    state = applied(provider, ("Persons",), changed, state)
    assert peers.queues()["Persons_cdc_events"]["maxDeliveryCount"] == 3
    assert peers.queues()["Persons_cdc_events"]["lockDuration"] == "PT2M"
    assert provider("plan", changed, streams("Persons"), state).of("change") == []


def test_immutable_change_is_a_loud_replacement(provider: Provider, peers: AzurePeers) -> None:
    state = applied(provider, ("Persons",))
    config = peers.config(queue={"enable_partitioning": True})
    plan = provider("plan", config, streams("Persons"), state)
    change = plan.of("change")[0]
    assert change["action"] == "replace" and change["replace_paths"] == ["enable_partitioning"]
    assert "lost" in change["reason"]
    assert any("REPLACED" in w["message"] for w in plan.of("warning"))
    init = provider("init", config, streams("Persons"), state, changes=[{k: v for k, v in change.items() if k != "type"}])
    assert init.code == 0, init.stderr
    assert [m["action"] for m in init.resources()] == ["deleted", "created"]
    assert peers.queues()["Persons_cdc_events"]["enablePartitioning"] is True


def test_delete_only_what_state_owns(provider: Provider, peers: AzurePeers) -> None:
    assert peers.put_queue("Foreign_queue")[0] == 200
    state = applied(provider, ("Persons", "Orders"))
    plan = provider("plan", streams=streams("Persons"), resources=state)
    assert actions(plan) == {"Orders": "delete"}
    state = applied(provider, ("Persons",), resources=state)
    assert set(peers.queues()) == {"Persons_cdc_events", "Foreign_queue"}
    destroy = provider("destroy", streams=streams("Persons"), resources=state)
    assert destroy.code == 0, destroy.stderr
    assert [m["resource"]["name"] for m in destroy.resources()] == ["Persons"]
    assert set(peers.queues()) == {"Foreign_queue"}


def test_drift_when_deleted_or_changed_outside(provider: Provider, peers: AzurePeers) -> None:
    state = applied(provider, ("Persons", "Orders"))
    assert peers.delete_queue("Orders_cdc_events") == 200
    assert peers.put_queue("Persons_cdc_events", requiresDuplicateDetection=True, duplicateDetectionHistoryTimeWindow="PT1H", maxDeliveryCount=99)[0] == 200
    plan = provider("plan", streams=streams("Persons", "Orders"), resources=state)
    drift = {d["resource"]["name"]: d for d in plan.of("drift")}
    assert drift["Orders"]["after"] is None
    assert drift["Persons"]["after"]["max_delivery_count"] == 99
    assert actions(plan) == {"Orders": "create", "Persons": "update"}
    state = applied(provider, ("Persons", "Orders"), resources=state)
    assert peers.queues()["Persons_cdc_events"]["maxDeliveryCount"] == 10
    assert provider("plan", streams=streams("Persons", "Orders"), resources=state).of("change") == []


def test_existing_queue_is_refused_unless_adopted(provider: Provider, peers: AzurePeers) -> None:
    peers.put_queue("persons_CDC_events", requiresDuplicateDetection=True)  # case-insensitive: the same queue
    plan = provider("plan", streams=streams("Persons"))
    assert plan.code == 1 and "not managed by this task" in plan.error["message"] and plan.error["key"] == "adopt_existing"
    init = provider("init", streams=streams("Persons"))
    assert init.code == 1 and init.resources() == []
    adopted = provider("plan", peers.config(adopt_existing=True), streams("Persons"))
    assert actions(adopted) == {"Persons": "adopt"}
    init = provider("init", peers.config(adopt_existing=True), streams("Persons"))
    assert init.code == 0 and init.resources()[0]["resource"]["attributes"]["queue"] == "Persons_cdc_events"  # the configured spelling
    assert set(peers.queues()) == {"persons_CDC_events"}  # untouched


def test_basic_tier_limits_checked_up_front(tmp_path: Any) -> None:
    with AzurePeers(tmp_path / "basic", sku="Basic") as peers:
        provider = Provider(peers, tmp_path)
        plan = provider("plan", streams=streams("Persons"))
        assert plan.code == 0, plan.stderr
        after = plan.of("change")[0]["after"]
        assert after["requires_duplicate_detection"] is False and after["tier"] == "Basic"
        peers.reset_arm_requests()
        refused = provider("init", peers.config(queue={"requires_session": True}, session_id="table"), streams("Persons"))
        assert refused.code == 1 and "Basic tier" in refused.error["message"] and refused.error["key"] == "queue"
        assert "PUT queue" not in peers.arm_requests()["by_kind"]
        state = applied(provider, ("Persons",))
        assert peers.queues()["Persons_cdc_events"]["requiresDuplicateDetection"] is False
        assert provider("plan", streams=streams("Persons"), resources=state).of("change") == []


def test_name_rules_and_case_insensitive_collisions_before_any_call(provider: Provider, peers: AzurePeers) -> None:
    peers.reset_arm_requests()
    clash = provider("plan", streams=streams("Persons", "PERSONS"))
    assert clash.code == 1 and "case-insensitive" in clash.error["message"] and clash.error["key"] == "queue_name"
    bad = provider("plan", peers.config(queue_name="-{table}"), streams("Persons"))
    assert bad.code == 1 and "naming rules" in bad.error["message"]
    unknown = provider("plan", peers.config(queue={"max_delivery_cont": 3}), streams("Persons"))
    assert unknown.code == 1 and "max_delivery_count" in unknown.error.get("hint", "")
    assert "PUT queue" not in peers.arm_requests()["by_kind"]
    assert peers.queues() == {}


def test_no_refresh_makes_no_external_call(provider: Provider, peers: AzurePeers) -> None:
    state = applied(provider, ("Persons",))
    peers.reset_arm_requests()
    dead = peers.config(management_endpoint="https://127.0.0.1:9")  # nothing listens there
    plan = provider("plan", dead, streams("Persons", "Orders"), state, refresh=False)
    assert plan.code == 0, plan.stderr
    assert actions(plan) == {"Orders": "create"}
    assert peers.arm_requests()["requests"] == 0


def test_failure_mid_init_leaves_state_true_and_reinit_converges(provider: Provider, peers: AzurePeers) -> None:
    names = tuple(f"T{i:02d}" for i in range(10))
    peers.arm_faults(max_queues=6)
    first = provider("init", peers.config(parallelism=3), streams(*names))
    assert first.code == 1 and "QuotaExceeded" in first.error["message"]
    state = state_after([], first)
    assert len(state) == 6 == len(peers.queues())  # every queue that exists is in state, nothing else
    assert {r["attributes"]["queue"] for r in state} == set(peers.queues())
    peers.arm_faults()
    plan = provider("plan", streams=streams(*names), resources=state)
    assert list(actions(plan).values()).count("create") == 4 and len(actions(plan)) == 4
    state = applied(provider, names, resources=state)
    assert len(state) == 10 == len(peers.queues())


def test_many_tables_planned_with_one_get_and_the_pages_of_one_list(tmp_path: Any) -> None:
    with AzurePeers(tmp_path / "many", page_size=30) as peers:
        provider = Provider(peers, tmp_path)
        names = tuple(f"Table{i:03d}" for i in range(100))
        state = applied(provider, names, peers.config(parallelism=16))
        assert len(peers.queues()) == 100
        peers.reset_arm_requests()
        plan = provider("plan", streams=streams(*names), resources=state)
        assert plan.code == 0 and plan.of("change") == []
        assert peers.arm_requests()["by_kind"] == {"total": 5, "GET namespace": 1, "GET queues": 4}  # 1 + ceil(100 / 30)


def test_throttled_init_honours_retry_after(provider: Provider, peers: AzurePeers) -> None:
    peers.arm_faults(throttle=2, retry_after=1)
    started = time.monotonic()
    state = applied(provider, ("Persons",))
    assert time.monotonic() - started >= 1.5
    assert len(state) == 1 and peers.arm_requests()["by_kind"]["throttled"] == 2


def test_status_reports_counts_per_queue(provider: Provider, peers: AzurePeers) -> None:
    state = applied(provider, ("Persons", "Orders"))
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    with ServiceBusClient.from_connection_string(peers.connection_string) as client, client.get_queue_sender("Persons_cdc_events") as sender:
        sender.send_messages([ServiceBusMessage("a", message_id="1"), ServiceBusMessage("b", message_id="2")])
    peers.amqp_stats()
    peers.delete_queue("Orders_cdc_events")
    status = {m["resource"]["name"]: m["status"] for m in provider("status", streams=streams("Persons", "Orders"), resources=state).of("status")}
    assert status["Persons"]["status"] == "Active" and status["Persons"]["active_messages"] == 2
    assert status["Persons"]["dead_letter_messages"] == 0 and status["Persons"]["scheduled_messages"] == 0
    assert status["Orders"] == {"status": "missing"}


def test_secrets_stay_out_of_replies(provider: Provider, peers: AzurePeers) -> None:
    key = "c2VjcmV0LWtleQ=="
    reply = provider("plan", streams=streams("Persons", "Persons"))  # an error path
    assert reply.code == 1
    state = applied(provider, ("Persons",))
    status = provider("status", streams=streams("Persons"), resources=state)
    for text in (reply.stdout, reply.stderr, status.stdout, status.stderr, str(state)):
        assert key not in text and "peer-token" not in text
