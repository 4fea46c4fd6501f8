"""Send throughput: the asb-queues provider vs a plain azure-servicebus batch-send loop, same AMQP peer.

    python bench/asb_send.py [--count 40000] [--repeat 7] [--queues 1,10,50] [--queue-repeat 3] [--tls] [--no-fail]

Starts the two test peers (tests/emulators). Each timed run gets a fresh queue
(deleted and created again through the provider's init, duplicate detection on
as by default, not timed), so every run stores all its changes. The two sides:
- plain: a child process with one ServiceBusClient + sender, ServiceBusMessageBatch
  filled to the limit and sent, for the same change lines (body, message_id, properties);
- provider: `python -m providers.asb_queues` run with the lines on stdin, until
  its last checkpoint.
Both are timed the same way, from process start to exit (interpreter, SDK import
and sender opening included). The sides alternate (plain, provider, provider,
plain, ...) for --repeat runs each; the medians count, and the ratio of the
medians (provider msgs/s / plain msgs/s) has a target of >= 0.9. Then the
provider with the same number of changes spread over 1, 10 and 50 queues
(median of --queue-repeat runs each). Every run must leave exactly --count
messages accepted by the peer.
With --tls both sides sign in as users do in production: no connection string,
DefaultAzureCredential (the stand-in `az` of tests/emulators/servicebus_tls.py
minting Entra JWTs), AMQPS on <loopback host>:5671 with the CA in
REQUESTS_CA_BUNDLE; the plain loop gets it as `connection_verify`, the provider
through its own transport settings.
Exit: 0 ok, 1 ratio below target (unless --no-fail), 2 benchmark error.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _measure import alternating, rate_ratio, timing_summary
from _pyz import BenchError

if TYPE_CHECKING:
    from servicebus_peers import AzurePeers

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 256 * 1024 - 1024  # the SDK under-counts a full batch by ~21 bytes; both sides keep the same headroom
TARGET = 0.9  # provider msgs/s divided by plain msgs/s must be at least this
PLAIN = "Plain"  # the plain loop's table (queue Plain_cdc_events)
SINGLE = "One"  # the provider's table in the comparison


def lines(tables: list[str], count: int, payload: int = 64) -> bytes:
    filler = "x" * payload
    out = []
    for i in range(1, count + 1):
        table = tables[i % len(tables)]
        out.append(json.dumps({"data": {"ID": i, "Name": f"name-{i}", "Filler": filler},
                               "metadata": {"TableName": table, "Schema": "dbo", "OperationType": "Insert", "LSN": f"{i:020x}", "Seq": 1},
                               "stream": table, "position": {"seq": i}}, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def queue_name(table: str) -> str:
    return f"{table}_cdc_events"


def envelope(peers: AzurePeers, command: str, tables: list[str], resources: list[dict] | None = None) -> str:
    return json.dumps({"protocol": 1, "command": command, "task": "bench", "role": "output", "config": peers.config(parallelism=16),
                       "streams": [{"name": t, "table": t, "schema": "dbo"} for t in tables], "resources": resources or [], "refresh": True})


def timed(argv: list[str], stdin: bytes, env: dict[str, str], what: str) -> float:
    """Run to completion; returns its wall time. A non-zero exit is a benchmark error."""
    started = time.perf_counter()
    result = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-10:]
        raise BenchError(f"{what} exited with code {result.returncode}:\n  " + "\n  ".join(tail))
    return elapsed


def provider_env(peers: AzurePeers) -> dict[str, str]:
    return {**os.environ, **peers.env(), "PYTHONPATH": str(ROOT)}


def fresh_queues(peers: AzurePeers, tables: list[str]) -> list[dict]:
    """Delete the tables' queues (their stored messages go with them) and create them again through init."""
    for table in tables:
        peers.delete_queue(queue_name(table))
    result = subprocess.run([sys.executable, "-m", "providers.asb_queues"], input=(envelope(peers, "init", tables) + "\n").encode(),
                            capture_output=True, env=provider_env(peers), timeout=600)
    if result.returncode != 0:
        raise BenchError(f"provider init exited with code {result.returncode}: {result.stderr.decode('utf-8', 'replace').strip()[-2000:]}")
    return [json.loads(line)["resource"] for line in result.stdout.decode().splitlines() if '"type":"resource"' in line]


def check_accepted(peers: AzurePeers, tables: list[str], count: int, what: str) -> None:
    """The peer stored exactly `count` messages in the run's queues: nothing lost, nothing dropped as a duplicate."""
    stats = {name.lower(): q for name, q in peers.amqp_stats().get("queues", {}).items()}
    accepted = sum(int(stats.get(queue_name(t).lower(), {}).get("accepted", 0)) for t in tables)
    if accepted != count:
        raise BenchError(f"{what}: the peer accepted {accepted} messages, expected {count}")


def run_provider(peers: AzurePeers, tables: list[str], count: int) -> float:
    """One timed provider run into fresh queues; returns its wall time."""
    resources = fresh_queues(peers, tables)
    stdin = (envelope(peers, "run", tables, resources) + "\n").encode() + lines(tables, count)
    elapsed = timed([sys.executable, "-m", "providers.asb_queues"], stdin, provider_env(peers), "provider run")
    check_accepted(peers, tables, count, f"provider run ({len(tables)} queue(s))")
    return elapsed


def plain_target(peers: AzurePeers) -> dict[str, str]:
    """How the plain loop reaches Service Bus: the connection string, or (TLS peers) the host and the CA for the credential."""
    host = getattr(peers, "host", None)
    if host is not None:
        return {"host": host, "ca": str(peers.ca)}
    return {"connection_string": peers.connection_string}


def run_plain(peers: AzurePeers, count: int) -> float:
    """One timed plain loop (a child process, like the provider) into a fresh queue; returns its wall time."""
    fresh_queues(peers, [PLAIN])
    argv = [sys.executable, str(Path(__file__).resolve()), "--plain-loop", queue_name(PLAIN), "--count", str(count)]
    # the connection string goes on stdin, as the provider gets its config: never in argv
    elapsed = timed(argv, json.dumps(plain_target(peers)).encode(), {**os.environ, **peers.env()}, "plain loop")
    check_accepted(peers, [PLAIN], count, "plain loop")
    return elapsed


def plain_client(target: dict[str, str]) -> Any:
    from azure.servicebus import ServiceBusClient

    if "connection_string" in target:
        return ServiceBusClient.from_connection_string(target["connection_string"])
    from azure.identity import DefaultAzureCredential

    return ServiceBusClient(target["host"], DefaultAzureCredential(), connection_verify=target["ca"])


def plain_loop(target: dict[str, str], queue: str, count: int) -> None:
    """The floor: batches filled to the limit and sent, one sender, the same messages the provider makes."""
    from azure.servicebus import ServiceBusMessage

    body = lines([PLAIN], count).splitlines()
    with plain_client(target) as client, client.get_queue_sender(queue) as sender:
        batch = sender.create_message_batch(max_size_in_bytes=LIMIT)
        for i, raw in enumerate(body, start=1):
            message = ServiceBusMessage(raw, message_id=f'{PLAIN}@{{"seq":{i}}}', content_type="application/json",
                                        application_properties={"table": PLAIN, "schema": "dbo", "operation": "Insert", "lsn": f"{i:020x}", "stream": PLAIN})
            try:
                batch.add_message(message)
            except Exception:
                sender.send_messages(batch)
                batch = sender.create_message_batch(max_size_in_bytes=LIMIT)
                batch.add_message(message)
        sender.send_messages(batch)


def compare(peers: AzurePeers, count: int, repeat: int, progress: bool = False) -> dict[str, Any]:
    """Alternate the plain loop and the provider (one queue) for `repeat` runs each; medians and their ratio."""
    times: dict[str, list[float]] = {"plain": [], "provider": []}
    for rnd, side in alternating(("plain", "provider"), repeat):
        elapsed = run_plain(peers, count) if side == "plain" else run_provider(peers, [SINGLE], count)
        times[side].append(elapsed)
        if progress:
            print(f"  run {rnd + 1}/{repeat} {side:<8} {elapsed:7.3f} s", file=sys.stderr)
    return {"plain": timing_summary(times["plain"], count), "provider": timing_summary(times["provider"], count),
            "ratio": rate_ratio(times["provider"], times["plain"])}


def spread(peers: AzurePeers, queues: int, count: int, repeat: int) -> float:
    """The provider's msgs/s at the median of `repeat` runs, the changes spread over `queues` queues."""
    tables = [f"Q{queues}x{i:02d}" for i in range(queues)]
    return count / statistics.median(run_provider(peers, tables, count) for _ in range(repeat))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40000, help="changes per run (default 40000)")
    parser.add_argument("--repeat", type=int, default=7, help="alternating runs of each side; medians are compared (default 7)")
    parser.add_argument("--queues", default="1,10,50", help="queue counts for the provider's spread runs (default 1,10,50)")
    parser.add_argument("--queue-repeat", type=int, default=3, help="runs per queue count; the median counts (default 3)")
    parser.add_argument("--target", type=float, default=TARGET, help=f"minimum provider/plain ratio (default {TARGET})")
    parser.add_argument("--tls", action="store_true", help="both sides over AMQPS with DefaultAzureCredential (no connection string)")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when the ratio misses the target")
    parser.add_argument("--plain-loop", metavar="QUEUE", help=argparse.SUPPRESS)  # the child process of the plain side
    return parser


def print_comparison(report: dict[str, Any], count: int, repeat: int, target: float, tls: bool = False) -> None:
    how = "AMQPS + DefaultAzureCredential" if tls else "plain AMQP + connection string"
    print(f"asb_send: {count} changes into 1 queue over {how}, median of {repeat} alternating runs each "
          f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    print(f"{'':<22}{'median s':>10}{'min s':>9}{'max s':>9}{'msgs/s':>10}")
    for name, key in (("plain batch-send loop", "plain"), ("asb-queues provider", "provider")):
        s = report[key]
        print(f"{name:<22}{s['median_s']:>10.3f}{s['min_s']:>9.3f}{s['max_s']:>9.3f}{s['msgs_per_s']:>10,.0f}")
    verdict = "ok" if report["ratio"] >= target else "MISSED"
    print(f"ratio provider/plain {report['ratio']:.3f} (target >= {target}): {verdict}")


def main() -> int:
    args = build_parser().parse_args()
    if args.plain_loop:
        plain_loop(json.loads(sys.stdin.readline()), args.plain_loop, args.count)
        return 0
    if min(args.count, args.repeat, args.queue_repeat) < 1:
        build_parser().error("--count, --repeat and --queue-repeat must be at least 1")
    sys.path.insert(0, str(ROOT / "tests" / "emulators"))
    from servicebus_peers import AzurePeers
    from servicebus_tls import EntraPeers

    try:
        with tempfile.TemporaryDirectory() as tmp, (EntraPeers if args.tls else AzurePeers)(Path(tmp)) as peers:
            report = compare(peers, args.count, args.repeat, progress=True)
            print_comparison(report, args.count, args.repeat, args.target, args.tls)
            for n in [int(q) for q in args.queues.split(",")]:
                rate = spread(peers, n, args.count, args.queue_repeat)
                print(f"provider, {n:3d} queue(s): {rate:9,.0f} msgs/s (median of {args.queue_repeat})")
    except (BenchError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"asb_send benchmark error: {exc}", file=sys.stderr)
        return 2
    return 0 if report["ratio"] >= args.target or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
