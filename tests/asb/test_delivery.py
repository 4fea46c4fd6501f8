"""asb-queues run: order, ids, throttling, lost connections, oversized changes, unknown streams, checkpoints."""

from __future__ import annotations

from typing import Any

from conftest import Provider, Reply, state_after, streams
from servicebus_peers import AzurePeers


def change(table: str, seq: int, filler: str = "", position: bool = True) -> dict[str, Any]:
    line: dict[str, Any] = {"data": {"ID": seq, "Name": f"n{seq}", "Filler": filler},
                            "metadata": {"TableName": table, "Schema": "dbo", "OperationType": "Insert", "LSN": f"{seq:020x}"}, "stream": table}
    if position:
        line["position"] = {"seq": seq}
    return line


def setup(provider: Provider, tables: tuple[str, ...], config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    reply = provider("init", config, streams(*tables))
    assert reply.code == 0, reply.stderr
    return state_after([], reply)


def checkpoints(reply: Reply) -> dict[str, list[int]]:
    result: dict[str, list[int]] = {}
    for message in reply.of("checkpoint"):
        result.setdefault(message["stream"], []).append(message["position"]["seq"])
    return result


def ids(received: list[Any]) -> list[str]:
    return [str(m.message_id) for m in received]


def test_order_ids_properties_and_effectively_once_on_resend(provider: Provider, peers: AzurePeers) -> None:
    tables = ("Persons", "Orders")
    state = setup(provider, tables)
    lines = [change(tables[i % 2], i, "x" * 200) for i in range(1, 3001)]
    run = provider("run", streams=streams(*tables), resources=state, lines=lines)
    assert run.code == 0, run.stderr
    acked = checkpoints(run)
    assert acked["Persons"][-1] == 3000 and acked["Orders"][-1] == 2999  # change i goes to tables[i % 2]
    assert all(a < b for a, b in zip(acked["Persons"], acked["Persons"][1:], strict=False))
    stats = peers.amqp_stats()
    assert stats["transfers"] < 100  # batched, not one transfer per change
    again = provider("run", streams=streams(*tables), resources=state, lines=lines[1000:])  # a restart resending from an old checkpoint
    assert again.code == 0, again.stderr
    persons = peers.receive("Persons_cdc_events", 1500)
    assert ids(persons) == [f'Persons@{{"seq":{i}}}' for i in range(2, 3001, 2)]  # in order, each once
    first = persons[0]
    assert first.content_type == "application/json"
    assert first.application_properties[b"table"] == b"Persons" and first.application_properties[b"operation"] == b"Insert"
    assert first.application_properties[b"lsn"] == f"{2:020x}".encode() and first.application_properties[b"schema"] == b"dbo"
    assert b'"Name": "n2"' in b"".join(first.body)  # the change line itself
    assert len(peers.receive("Orders_cdc_events", 1500)) == 1500
    assert peers.amqp_stats()["queues"]["Persons_cdc_events"]["duplicates"] == 1000


def test_server_busy_is_retried_never_dropped(provider: Provider, peers: AzurePeers) -> None:
    state = setup(provider, ("Persons",))
    peers.amqp_control(server_busy=6)
    run = provider("run", streams=streams("Persons"), resources=state, lines=[change("Persons", i) for i in range(1, 501)])
    assert run.code == 0, run.stderr
    assert checkpoints(run)["Persons"][-1] == 500
    assert peers.amqp_stats()["server_busy"] == 6
    assert ids(peers.receive("Persons_cdc_events", 500)) == [f'Persons@{{"seq":{i}}}' for i in range(1, 501)]


def test_connection_dropped_mid_batch_resends_without_duplicates(provider: Provider, peers: AzurePeers) -> None:
    state = setup(provider, ("Persons",), peers.config(max_batch_bytes=20_000))
    peers.amqp_control(drop=2)  # stored, then the connection closes before the acknowledgement
    run = provider("run", peers.config(max_batch_bytes=20_000), streams("Persons"), state, lines=[change("Persons", i, "y" * 100) for i in range(1, 801)])
    assert run.code == 0, run.stderr
    stats = peers.amqp_stats()
    assert stats["drops"] == 2 and stats["queues"]["Persons_cdc_events"]["duplicates"] > 0
    assert ids(peers.receive("Persons_cdc_events", 800)) == [f'Persons@{{"seq":{i}}}' for i in range(1, 801)]


def test_oversized_change_is_a_clear_error_and_earlier_changes_are_acknowledged(provider: Provider, peers: AzurePeers) -> None:
    state = setup(provider, ("Persons",))
    lines = [change("Persons", 1), change("Persons", 2), change("Persons", 3, "z" * 300_000), change("Persons", 4)]
    run = provider("run", streams=streams("Persons"), resources=state, lines=lines)
    assert run.code == 1
    message = run.error["message"]
    assert "Persons" in message and '{"seq":3}' in message and "not truncated" in message
    assert checkpoints(run)["Persons"][-1] == 2
    assert ids(peers.receive("Persons_cdc_events", 2)) == ['Persons@{"seq":1}', 'Persons@{"seq":2}']


def test_unknown_stream_fails_unless_queues_are_created_on_demand(provider: Provider, peers: AzurePeers) -> None:
    state = setup(provider, ("Persons",))
    lines = [change("Persons", 1), change("Orders", 2), change("Persons", 3)]
    run = provider("run", streams=streams("Persons"), resources=state, lines=lines)
    assert run.code == 1 and "no queue for stream 'Orders'" in run.error["message"] and "dstream init" in run.error["hint"]
    assert checkpoints(run) == {"Persons": [1]}
    on_demand = provider("run", peers.config(create_queues_on_demand=True), streams("Persons"), state, lines=lines)
    assert on_demand.code == 0, on_demand.stderr
    created = on_demand.of("resource")
    assert [(m["action"], m["resource"]["name"]) for m in created] == [("created", "Orders")]
    assert created[0]["resource"]["attributes"]["requires_duplicate_detection"] is True
    assert ids(peers.receive("Orders_cdc_events", 1)) == ['Orders@{"seq":2}']


def test_checkpoint_never_ahead_of_accepted_messages(provider: Provider, peers: AzurePeers) -> None:
    config = peers.config(max_batch_bytes=4_000, send_timeout=2)
    state = setup(provider, ("Persons", "Orders"), config)
    peers.amqp_control(busy_after=5)  # five batches get through, then Service Bus refuses everything
    lines = [change(("Persons", "Orders")[i % 2], i, "w" * 150) for i in range(1, 401)]
    run = provider("run", config, streams("Persons", "Orders"), state, lines=lines)
    assert run.code == 1 and "did not accept" in run.error["message"]
    peers.amqp_control()
    stored = {t: [int(m.message_id.split(":")[1].rstrip("}")) for m in peers.receive(f"{t}_cdc_events", 1)] for t in ("Persons", "Orders")}
    acked = checkpoints(run)
    assert sum(len(v) for v in stored.values()) < 400
    for table, seqs in acked.items():
        assert seqs[-1] in stored[table]  # the acknowledged change arrived...
        expected = [i for i in range(1, seqs[-1] + 1) if ("Persons", "Orders")[i % 2] == table]
        assert stored[table][:len(expected)] == expected  # ...with every earlier one, in order


def test_position_only_lines_and_changes_without_position(provider: Provider, peers: AzurePeers) -> None:
    state = setup(provider, ("Persons", "Orders"))
    lines = [change("Persons", 1), {"type": "position", "stream": "Persons", "position": {"seq": 5}},
             {"type": "position", "stream": "Orders", "position": {"seq": 6}}, change("Persons", 7, position=False)]
    run = provider("run", streams=streams("Persons", "Orders"), resources=state, lines=lines)
    assert run.code == 0, run.stderr
    assert checkpoints(run) == {"Persons": [5], "Orders": [6]} or checkpoints(run) == {"Orders": [6], "Persons": [5]}
    received = peers.receive("Persons_cdc_events", 2)
    assert len(received) == 2 and received[1].message_id.startswith("Persons@")  # deterministic from LSN when there is no position


def test_sessions_by_table_and_by_primary_key(provider: Provider, peers: AzurePeers) -> None:
    config = peers.config(session_id="primary_key", primary_keys={"Persons": ["ID"]}, queue={"requires_session": True})
    state = setup(provider, ("Persons",), config)
    assert peers.queues()["Persons_cdc_events"]["requiresSession"] is True
    run = provider("run", config, streams("Persons"), state, lines=[change("Persons", 1), change("Persons", 2)])
    assert run.code == 0, run.stderr
    assert [m.session_id for m in peers.receive("Persons_cdc_events", 2)] == ["1", "2"]
    missing = provider("plan", peers.config(queue={"requires_session": True}), streams("Persons"))
    assert missing.code == 1 and missing.error["key"] == "session_id"
