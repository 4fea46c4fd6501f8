"""Helpers for the Azure Blob backend tests: task files on a container, the CLI with the credential in its
environment (never in argv), a lock holder in another process, and the no-leak check on every output."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.cli._support import describe, start, write_task
from tests.emulators.azurite import ACCOUNT_KEY, Azurite

LEASE = 15  # seconds: the shortest lease Blob Storage grants, so expiry tests stay short
PREFIX = "t/"
HOLDER_SCRIPT = Path(__file__).resolve().parent / "lock_holder.py"
SECRET_FORMS = (ACCOUNT_KEY, quote(ACCOUNT_KEY, safe=""), ACCOUNT_KEY.replace("/", "\\/"))


def assert_no_secret(text: str | bytes, where: str) -> None:
    """The AccountKey of the connection string, in any form it might be escaped to, is not in `text`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for form in SECRET_FORMS:
        # the message goes to test logs: show where, never the key itself
        assert form not in text, "the storage account key appears in " + _redact(where)


def _redact(text: str) -> str:
    for form in SECRET_FORMS:
        text = text.replace(form, "<AccountKey>")
    return text


def backend_block(container: str, prefix: str = PREFIX, lease: int = LEASE) -> str:
    return (f'\nbackend "azureblob" {{\n  container = "{container}"\n  prefix = "{prefix}"\n  lease_duration = {lease}\n'
            f'  connection_string = "{{{{ env \\"STATE_CONN\\" }}}}"\n}}\n')


@dataclass
class BlobTasks:
    """Task files whose state lives in `container` on `azurite`, and the CLI to run them."""

    azurite: Azurite
    container: Any  # azure.storage.blob.ContainerClient
    dstream: Callable[..., subprocess.CompletedProcess[str]]
    pyz: Path
    tmp_path: Path
    logs: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.container.container_name)

    @property
    def env(self) -> dict[str, str]:
        return {"STATE_CONN": self.azurite.connection_string, "DSTREAM_OUT": "out"}

    # --- task files

    def write(self, directory: Path, task: str, input_block: str, output_block: str, container: str | None = None) -> Path:
        path = write_task(directory, task, input_block, output_block)
        return self.use_blob(path, container)

    def use_blob(self, path: Path, container: str | None = None) -> Path:
        """Append the azureblob backend block to an existing task file."""
        path.write_text(path.read_text() + backend_block(container or self.name))
        return path

    # --- the CLI

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert not any(ACCOUNT_KEY in a for a in args), "the credential must never be on the command line"
        result = self.dstream(*args, cwd=cwd, env=self.env, timeout=timeout)
        assert_no_secret(result.stdout, f"stdout of dstream {' '.join(args)}\n{describe(result)}")
        assert_no_secret(result.stderr, f"stderr of dstream {' '.join(args)}\n{describe(result)}")
        return result

    def start(self, *args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        """dstream ARGS in the background, stdout and stderr into `log` (checked for leaks at teardown)."""
        self.logs.append(log)
        return start(self.pyz, *args, cwd=cwd, env=self.env, log=log)

    def check_logs(self) -> None:
        for log in self.logs:
            if log.exists():
                assert_no_secret(log.read_bytes(), f"the log of a background dstream ({log})")

    # --- the container

    def names(self) -> list[str]:
        return sorted(b.name for b in self.container.list_blobs())

    def blob(self, name: str) -> Any:
        return self.container.get_blob_client(name)

    def data(self, name: str) -> bytes:
        return bytes(self.blob(name).download_blob().readall())

    def state(self, task: str, prefix: str = PREFIX) -> dict[str, Any]:
        return json.loads(self.data(f"{prefix}{task}.state.json"))

    def checkpoints(self, task: str, prefix: str = PREFIX) -> dict[str, Any]:
        doc = json.loads(self.data(f"{prefix}{task}.checkpoints.json"))
        return {name: entry["position"] for name, entry in doc["streams"].items()}

    # --- another process holding a lock

    @contextmanager
    def holding(self, task: str, lock: str = "state", who: str = "alice@build-host (pid 4242)", lock_id: str | None = None,
                container: str | None = None) -> Iterator[LockHolder]:
        holder = LockHolder.start(self, task, lock, who, lock_id or str(uuid.uuid4()), container or self.name)
        try:
            yield holder
        finally:
            holder.close()


class LockHolder:
    """tests/blob/lock_holder.py in a subprocess: it has taken `lock` of `task` when start() returns."""

    def __init__(self, process: subprocess.Popen[str], lock_id: str, who: str):
        self.process = process
        self.id = lock_id
        self.who = who
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.locked = self.next_event()
        assert self.locked.get("event") == "locked", f"the lock holder did not get the lock: {self.locked}"

    @classmethod
    def start(cls, tasks: BlobTasks, task: str, lock: str, who: str, lock_id: str, container: str) -> LockHolder:
        env = {**_base_env(), "STATE_CONN": tasks.azurite.connection_string}
        process = subprocess.Popen([sys.executable, str(HOLDER_SCRIPT), container, PREFIX, task, lock, lock_id, who, str(LEASE)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        return cls(process, lock_id, who)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the lock holder said nothing within {timeout}s") from None
        assert event is not None, f"the lock holder exited (code {self.process.wait()}): {''.join(self.stderr)}"
        return event

    def send(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.next_event()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        assert_no_secret("".join(self.stderr), "the lock holder's stderr")


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "STATE_CONN"}
