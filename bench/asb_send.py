"""Send throughput: the asb-queues provider vs a plain azure-servicebus batch-send loop, same AMQP peer.

    python bench/asb_send.py [--count 40000] [--queues 1,10,50]

Starts the two test peers (tests/emulators), creates the queues through the
provider's init (duplicate detection on, as by default), then:
- plain: one ServiceBusClient + sender, ServiceBusMessageBatch filled to the
  limit and sent, for the same change lines (body, message_id, properties);
- provider: `python -m providers.asb_queues` run with the lines on stdin, until
  its last checkpoint (process start, SDK import and sender opening included).
Prints messages/s for each and the ratio (target >= 0.9), then the provider
with the same number of changes spread over 1, 10 and 50 queues.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "emulators"))

from servicebus_peers import AzurePeers  # noqa: E402

LIMIT = 256 * 1024 - 1024  # the SDK under-counts a full batch by ~21 bytes; both sides keep the same headroom


def lines(tables: list[str], count: int, payload: int = 64) -> bytes:
    filler = "x" * payload
    out = []
    for i in range(1, count + 1):
        table = tables[i % len(tables)]
        out.append(json.dumps({"data": {"ID": i, "Name": f"name-{i}", "Filler": filler},
                               "metadata": {"TableName": table, "Schema": "dbo", "OperationType": "Insert", "LSN": f"{i:020x}", "Seq": 1},
                               "stream": table, "position": {"seq": i}}, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def envelope(peers: AzurePeers, command: str, tables: list[str], resources: list[dict] | None = None) -> str:
    return json.dumps({"protocol": 1, "command": command, "task": "bench", "role": "output", "config": peers.config(parallelism=16),
                       "streams": [{"name": t, "table": t, "schema": "dbo"} for t in tables], "resources": resources or [], "refresh": True})


def provider(peers: AzurePeers, stdin: bytes) -> tuple[subprocess.CompletedProcess[bytes], float]:
    env = {**os.environ, **peers.env(), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "providers.asb_queues"], input=stdin, capture_output=True, env=env, timeout=600)
    return result, time.perf_counter() - started


def init(peers: AzurePeers, tables: list[str]) -> list[dict]:
    result, _ = provider(peers, (envelope(peers, "init", tables) + "\n").encode())
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line)["resource"] for line in result.stdout.decode().splitlines() if '"type":"resource"' in line]


def run_provider(peers: AzurePeers, tables: list[str], count: int) -> float:
    resources = init(peers, tables)
    result, elapsed = provider(peers, (envelope(peers, "run", tables, resources) + "\n").encode() + lines(tables, count))
    assert result.returncode == 0, result.stderr.decode()
    return count / elapsed


def run_plain(peers: AzurePeers, count: int) -> float:
    init(peers, ["Plain"])
    started = time.perf_counter()
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    body = lines(["Plain"], count).splitlines()
    with ServiceBusClient.from_connection_string(peers.connection_string) as client, client.get_queue_sender("Plain_cdc_events") as sender:
        batch = sender.create_message_batch(max_size_in_bytes=LIMIT)
        for i, raw in enumerate(body, start=1):
            message = ServiceBusMessage(raw, message_id=f'Plain@{{"seq":{i}}}', content_type="application/json",
                                        application_properties={"table": "Plain", "schema": "dbo", "operation": "Insert", "lsn": f"{i:020x}", "stream": "Plain"})
            try:
                batch.add_message(message)
            except Exception:
                sender.send_messages(batch)
                batch = sender.create_message_batch(max_size_in_bytes=LIMIT)
                batch.add_message(message)
        sender.send_messages(batch)
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40000)
    parser.add_argument("--queues", default="1,10,50")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, AzurePeers(Path(tmp)) as peers:
        plain = run_plain(peers, args.count)
        single = run_provider(peers, ["One"], args.count)
        print(f"plain batch-send loop : {plain:9.0f} msg/s  ({args.count} changes, 1 queue)")
        print(f"asb-queues provider   : {single:9.0f} msg/s  ratio {single / plain:.2f} (target >= 0.90)")
        for n in [int(q) for q in args.queues.split(",")]:
            tables = [f"Q{n}x{i:02d}" for i in range(n)]
            rate = run_provider(peers, tables, args.count)
            print(f"provider, {n:3d} queue(s): {rate:9.0f} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
