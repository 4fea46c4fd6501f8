"""Holds a dstream lock on the Azure Blob backend from a separate process (a stand-in for another dstream).

Usage: python lock_holder.py CONTAINER PREFIX TASK LOCK_NAME LOCK_ID WHO LEASE_DURATION
How it signs in (connection_string or account_url) comes from $HOLDER_BACKEND (JSON), never from argv. Takes the lock with
AzureBlobBackend.try_lock (so its renewal thread runs), reads the state if it holds
the state lock, and prints one JSON line per event on stdout. Commands on stdin, one
a line: "write" (StateManager.write of the state it read), "unlock". At EOF it
unlocks and exits; SIGKILL it to play a holder that died.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from state.azure_blob import azure_blob_backend  # noqa: E402
from state.backend import STATE_LOCK, LockInfo, StateManager  # noqa: E402
from state.errors import DstreamError  # noqa: E402

VERSION = "0.1.0"


def say(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def main() -> int:
    container, prefix, task, name, lock_id, who, duration = sys.argv[1:8]
    settings = {"container": container, "prefix": prefix, "lease_duration": int(duration), **json.loads(os.environ["HOLDER_BACKEND"])}
    backend = azure_blob_backend(settings, task)
    info = LockInfo(lock_id, "init", who, VERSION, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    holder = backend.locker.try_lock(name, info)
    if holder is not None:
        say("refused", holder=holder.as_dict())
        return 1
    manager = StateManager(backend.store, task, VERSION)
    state = manager.read() if name == STATE_LOCK else None
    say("locked", pid=os.getpid(), serial=state.serial if state else None, exists=manager.exists)
    for line in sys.stdin:
        command = line.strip()
        if command == "write" and state is not None:
            try:
                state = manager.write(state)
            except DstreamError as exc:
                say("error", kind=type(exc).__name__, message=str(exc))
            else:
                say("wrote", serial=state.serial)
        elif command == "unlock":
            backend.locker.unlock(name, info)
            say("unlocked")
        else:
            say("unknown", command=command)
    backend.locker.unlock(name, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
