"""Helpers for the Azure Blob backend tests: task files on a container, the CLI with the credential in its
environment (never in argv), a lock holder in another process, and the no-leak check on every output.

Every test runs twice, once per `Auth`: "key" (a connection string with the account key, plain HTTP) and
"oauth" (`account_url` over HTTPS, DefaultAzureCredential through a stand-in `az`, the test CA trusted only
through REQUESTS_CA_BUNDLE or SSL_CERT_FILE)."""

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
from tests.emulators.entra import StandInAz

LEASE = 15  # seconds: the shortest lease Blob Storage grants, so expiry tests stay short
PREFIX = "t/"
HOLDER_SCRIPT = Path(__file__).resolve().parent / "lock_holder.py"
SECRET_FORMS = (ACCOUNT_KEY, quote(ACCOUNT_KEY, safe=""), ACCOUNT_KEY.replace("/", "\\/"))


def _forms(secret: str) -> tuple[str, ...]:
    return (secret, quote(secret, safe=""), secret.replace("/", "\\/"))


def assert_no_secret(text: str | bytes, where: str, tokens: tuple[str, ...] = ()) -> None:
    """The AccountKey of the connection string and each of `tokens` (bearer tokens handed out), in any form
    they might be escaped to, are not in `text`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for form in SECRET_FORMS:
        # the message goes to test logs: show where, never the key itself
        assert form not in text, "the storage account key appears in " + _redact(where, tokens)
    for token in tokens:
        for part in {token, *token.split(".")[1:]}:  # its payload or signature alone is as bad (the header is not secret)
            for form in _forms(part):
                assert form not in text, "a bearer token appears in " + _redact(where, tokens)


def _redact(text: str, tokens: tuple[str, ...] = ()) -> str:
    for form in SECRET_FORMS:
        text = text.replace(form, "<AccountKey>")
    for token in tokens:
        for part in {token, *token.split(".")[1:]}:
            text = text.replace(part, "<token>")
    return text


@dataclass
class Auth:
    """How dstream signs in to `azurite`: "key" (STATE_CONN holds a connection string) or "oauth" (account_url,
    DefaultAzureCredential limited to the Azure CLI by AZURE_TOKEN_CREDENTIALS, the stand-in `az` on PATH)."""

    mode: str
    azurite: Azurite
    az: StandInAz | None = None
    ca_variable: str = "REQUESTS_CA_BUNDLE"

    def on(self, server: Azurite) -> Auth:
        return Auth(self.mode, server, self.az, self.ca_variable)

    def env(self) -> dict[str, str]:
        if self.mode == "key":
            return {"STATE_CONN": self.azurite.connection_string}
        assert self.az is not None and self.azurite.tls is not None
        other = "SSL_CERT_FILE" if self.ca_variable == "REQUESTS_CA_BUNDLE" else "REQUESTS_CA_BUNDLE"
        return {"PATH": f"{self.az.bin}{os.pathsep}{os.environ.get('PATH', '')}", "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
                self.ca_variable: str(self.azurite.tls.ca), other: "", "STATE_CONN": ""}

    def setting(self) -> str:
        if self.mode == "key":
            return 'connection_string = "{{ env \\"STATE_CONN\\" }}"'
        return f'account_url = "{self.azurite.endpoint}"'

    def settings(self) -> dict[str, str]:
        """The same, as backend settings for azure_blob_backend() in this process."""
        if self.mode == "key":
            return {"connection_string": self.azurite.connection_string}
        return {"account_url": self.azurite.endpoint}

    def tokens(self) -> tuple[str, ...]:
        return tuple(self.az.tokens()) if self.az else ()


def backend_block(container: str, auth: Auth, prefix: str = PREFIX, lease: int = LEASE) -> str:
    return (f'\nbackend "azureblob" {{\n  container = "{container}"\n  prefix = "{prefix}"\n  lease_duration = {lease}\n'
            f'  {auth.setting()}\n}}\n')


@dataclass
class BlobTasks:
    """Task files whose state lives in `container` on `azurite`, and the CLI to run them."""

    azurite: Azurite
    container: Any  # azure.storage.blob.ContainerClient
    dstream: Callable[..., subprocess.CompletedProcess[str]]
    pyz: Path
    tmp_path: Path
    auth: Auth
    logs: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.container.container_name)

    @property
    def env(self) -> dict[str, str]:
        return {**self.auth.env(), "DSTREAM_OUT": "out"}

    def assert_no_secret(self, text: str | bytes, where: str) -> None:
        assert_no_secret(text, where, self.auth.tokens())

    # --- task files

    def write(self, directory: Path, task: str, input_block: str, output_block: str, container: str | None = None) -> Path:
        path = write_task(directory, task, input_block, output_block)
        return self.use_blob(path, container)

    def use_blob(self, path: Path, container: str | None = None) -> Path:
        """Append the azureblob backend block to an existing task file."""
        path.write_text(path.read_text() + backend_block(container or self.name, self.auth))
        return path

    # --- the CLI

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert not any(ACCOUNT_KEY in a for a in args), "the credential must never be on the command line"
        result = self.dstream(*args, cwd=cwd, env=self.env, timeout=timeout)
        self.assert_no_secret(result.stdout, f"stdout of dstream {' '.join(args)}\n{describe(result)}")
        self.assert_no_secret(result.stderr, f"stderr of dstream {' '.join(args)}\n{describe(result)}")
        return result

    def start(self, *args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        """dstream ARGS in the background, stdout and stderr into `log` (checked for leaks at teardown)."""
        self.logs.append(log)
        return start(self.pyz, *args, cwd=cwd, env=self.env, log=log)

    def check_logs(self) -> None:
        for log in self.logs:
            if log.exists():
                self.assert_no_secret(log.read_bytes(), f"the log of a background dstream ({log})")

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
        self.tokens: Callable[[], tuple[str, ...]] = tuple
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.locked = self.next_event()
        assert self.locked.get("event") == "locked", f"the lock holder did not get the lock: {self.locked}"

    @classmethod
    def start(cls, tasks: BlobTasks, task: str, lock: str, who: str, lock_id: str, container: str) -> LockHolder:
        """The holder signs in as dstream does (the same Auth): settings travel in $HOLDER_BACKEND, never argv."""
        env = {**_base_env(), **tasks.auth.env(), "HOLDER_BACKEND": json.dumps(tasks.auth.settings())}
        process = subprocess.Popen([sys.executable, str(HOLDER_SCRIPT), container, PREFIX, task, lock, lock_id, who, str(LEASE)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        holder = cls(process, lock_id, who)
        holder.tokens = tasks.auth.tokens
        return holder

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
        assert_no_secret("".join(self.stderr), "the lock holder's stderr", self.tokens())


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("STATE_CONN", "HOLDER_BACKEND")}
