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
