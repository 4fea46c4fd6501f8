"""Management requests and wall time of asb-queues `plan` for 10, 100 and 500 tables, in both modes.

    python bench/asb_plan.py [--tables 10,100,500] [--page-size 100] [--modes resource-manager,namespace-api]

Modes: Resource Manager (subscription_id + resource_group + namespace) and the
namespace's own management API (only a connection string; its feed pages by 100).

For each size: the queues are created through the provider's init, then a
`plan` (a real provider process) is timed and the Resource Manager peer's
request counter read. Target: requests = 1 namespace GET + the pages of one
queue list (a Terraform-style plan makes one GET per queue).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "emulators"))

from servicebus_peers import AzurePeers  # noqa: E402


def call(peers: AzurePeers, command: str, tables: list[str], resources: list[dict], mode: str) -> tuple[list[dict], float]:
    config = peers.config(parallelism=16) if mode == "resource-manager" else peers.namespace_config(parallelism=16)
    envelope = {"protocol": 1, "command": command, "task": "bench", "role": "output", "config": config,
                "streams": [{"name": t, "table": t, "schema": "dbo"} for t in tables], "resources": resources, "refresh": True}
    env = {**os.environ, **peers.env(), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "providers.asb_queues"], input=(json.dumps(envelope) + "\n").encode(), capture_output=True, env=env, timeout=600)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()], elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default="10,100,500")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--modes", default="resource-manager,namespace-api")
    args = parser.parse_args()
    print(f"{'mode':>16} {'tables':>6} {'requests':>9} {'target':>7} {'plan wall s':>12} {'init wall s':>12}")
    for mode in args.modes.split(","):
        page = args.page_size if mode == "resource-manager" else 100  # the admin client always asks $top=100
        for n in [int(x) for x in args.tables.split(",")]:
            with tempfile.TemporaryDirectory() as tmp, AzurePeers(Path(tmp), page_size=args.page_size) as peers:
                tables = [f"Table{i:04d}" for i in range(n)]
                replies, init_s = call(peers, "init", tables, [], mode)
                resources = [m["resource"] for m in replies if m.get("type") == "resource"]
                peers.reset_arm_requests()
                replies, plan_s = call(peers, "plan", tables, resources, mode)
                assert not [m for m in replies if m.get("type") == "change"], "plan after init must be empty"
                stats = peers.arm_requests()
                requests = stats["requests"] if mode == "resource-manager" else stats["namespace_api"].get("total", 0)
                target = 1 + max(1, math.ceil(n / page))
                print(f"{mode:>16} {n:>6} {requests:>9} {target:>7} {plan_s:>12.2f} {init_s:>12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
