#!/usr/bin/env python3
"""HTTP requests the Azure Blob state backend makes, counted against its own Azurite.

Counts every HTTP request (retries included: the hook sits after the retry
policy) that AzureBlobBackend sends for

  cycle      take the state lock -> StateManager.read -> StateManager.write -> unlock,
             on a task without state (first) and on one with state (steady)
  read       one StateManager.read, which is all `plan --no-refresh` asks of the store
             besides its lock: it must be exactly one GET
  plan       the whole storage traffic of `plan --no-refresh` (lock, read, unlock), also for a
             task without state (its lock creates an empty blob; reading that is reported, not judged)

The client is built the way state/azure_blob.py builds it (same options, from a
connection string) plus a raw_request_hook; the backend object is
AzureBlobBackend itself. Azurite is started as a subprocess by
tests/emulators/azurite.py (needs `npm install` in the repository).

Usage: python bench/blob_requests.py [--json]
Exit: 0 ok, 1 a state read is not exactly one request, 2 benchmark error.
Standard library and the Azure SDK only; not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from state.azure_blob import DEFAULT_LEASE, AzureBlobBackend  # noqa: E402
from state.backend import STATE_LOCK, LockInfo, StateManager  # noqa: E402
from tests.emulators.azurite import Azurite  # noqa: E402

TASK = "bench"
PREFIX = "bench/"
VERSION = "bench"
# What state/azure_blob.azure_blob_backend passes to BlobServiceClient (keep in step with it).
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.5, "connection_timeout": 10, "read_timeout": 30}


class Requests:
    """A raw_request_hook that records "METHOD comp" of every request sent."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, pipeline_request: Any) -> None:
        request = pipeline_request.http_request
        query = dict(part.split("=", 1) for part in (request.url.split("?", 1)[1].split("&") if "?" in request.url else []) if "=" in part)
        self.seen.append(f"{request.method} {query.get('comp', 'blob')}")

    def measure(self, action: Callable[[], Any]) -> list[str]:
        start = len(self.seen)
        action()
        return self.seen[start:]


def backend(azurite: Azurite, container: str, hook: Requests, task: str = TASK) -> AzureBlobBackend:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string, raw_request_hook=hook, **CLIENT_OPTIONS)
    where = f"{azurite.endpoint}/{container}"
    return AzureBlobBackend(service.get_container_client(container), PREFIX, task, DEFAULT_LEASE, where)


def cycle(store: AzureBlobBackend, hook: Requests) -> dict[str, list[str]]:
    info = LockInfo.new("init", VERSION)
    manager = StateManager(store, TASK, VERSION)
    steps: dict[str, list[str]] = {}
    steps["lock"] = hook.measure(lambda: _must_lock(store, info))
    state = []
    steps["read"] = hook.measure(lambda: state.append(manager.read()))
    steps["write"] = hook.measure(lambda: manager.write(state[0]))
    steps["unlock"] = hook.measure(lambda: store.unlock(STATE_LOCK, info))
    return steps


def _must_lock(store: AzureBlobBackend, info: LockInfo) -> None:
    holder = store.try_lock(STATE_LOCK, info)
    if holder is not None:
        raise RuntimeError(f"state lock unexpectedly held: {holder.describe()}")


def plan_no_refresh(store: AzureBlobBackend, hook: Requests) -> dict[str, list[str]]:
    """What `dstream plan --no-refresh` does with the store: lock, read, unlock (no write)."""
    info = LockInfo.new("plan", VERSION)
    manager = StateManager(store, store.task, VERSION)
    return {"lock": hook.measure(lambda: _must_lock(store, info)), "read": hook.measure(manager.read),
            "unlock": hook.measure(lambda: store.unlock(STATE_LOCK, info))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the counts as one JSON document")
    args = parser.parse_args()
    try:
        from azure.storage.blob import BlobServiceClient

        with Azurite() as azurite:
            BlobServiceClient.from_connection_string(azurite.connection_string).create_container("bench")
            hook = Requests()
            store = backend(azurite, "bench", hook)
            results = {"cycle (first, no state yet)": cycle(store, hook), "cycle (steady, state exists)": cycle(store, hook)}
            results["plan --no-refresh"] = plan_no_refresh(store, hook)
            results["plan --no-refresh, task without state"] = plan_no_refresh(backend(azurite, "bench", hook, "fresh"), hook)
            read_alone = hook.measure(StateManager(store, TASK, VERSION).read)
    except Exception as exc:
        print(f"benchmark error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    summary = {name: {step: len(reqs) for step, reqs in steps.items()} | {"total": sum(len(r) for r in steps.values())} for name, steps in results.items()}
    summary["state read (StateManager.read)"] = {"total": len(read_alone)}
    if args.json:
        print(json.dumps({"counts": summary, "requests": results | {"state read": {"read": read_alone}}}, indent=2))
    else:
        for name, steps in results.items():
            print(f"{name}: {summary[name]['total']} requests")
            for step, reqs in steps.items():
                kinds = ", ".join(f"{n}x {k}" if n > 1 else k for k, n in Counter(reqs).items()) or "none"
                print(f"  {step:<7} {len(reqs)}  ({kinds})")
        print(f"state read (StateManager.read, as plan --no-refresh reads): {len(read_alone)} request(s) ({', '.join(read_alone)})")
    if len(read_alone) != 1 or not read_alone[0].startswith("GET"):
        print(f"FAIL: a state read must be exactly one GET, it was {len(read_alone)} request(s): {read_alone}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
