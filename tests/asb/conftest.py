"""Fixtures for the asb-queues tests: both Azure peers per test, and the provider as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "emulators"))

from servicebus_peers import AzurePeers  # noqa: E402

TIMEOUT = 90  # the SDKs hang rather than fail against a broken peer


@dataclass
class Reply:
    code: int
    messages: list[dict[str, Any]]
    stderr: str
    stdout: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of("error")
        return errors[-1] if errors else None

    def resources(self) -> list[dict[str, Any]]:
        return self.of("resource")


def streams(*tables: str, schema: str = "dbo") -> list[dict[str, Any]]:
    return [{"name": t, "table": t, "schema": schema} for t in tables]


def state_after(resources: list[dict[str, Any]], reply: Reply) -> list[dict[str, Any]]:
    """What dstream's state would hold after applying the reply's resource messages in order."""
    current = {(r["type"], r["name"]): r for r in resources}
    for message in reply.resources():
        res = message["resource"]
        key = (res["type"], res["name"])
        if message["action"] == "deleted":
            current.pop(key, None)
        else:
            current[key] = {"type": res["type"], "name": res["name"], "id": res["id"], "attributes": res["attributes"]}
    return list(current.values())


class Provider:
    def __init__(self, peers: AzurePeers, cwd: Path):
        self.peers = peers
        self.cwd = cwd

    def __call__(self, command: str, config: dict[str, Any] | None = None, streams: list[dict[str, Any]] | None = None,
                 resources: list[dict[str, Any]] | None = None, refresh: bool = True, changes: list[dict[str, Any]] | None = None,
                 lines: list[Any] | None = None, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Reply:
        envelope: dict[str, Any] = {"protocol": 1, "command": command, "task": "t", "role": "output",
                                    "config": self.peers.config() if config is None else config, "streams": streams or [],
                                    "resources": resources or [], "checkpoints": {}, "refresh": refresh, "once": True}
        if changes is not None:
            envelope["changes"] = changes
        stdin = json.dumps(envelope) + "\n" + "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines or [])
        full_env = {**os.environ, **self.peers.env(), "PYTHONPATH": str(ROOT), **(env or {})}
        result = subprocess.run([sys.executable, "-m", "providers.asb_queues"], input=stdin.encode(), capture_output=True, cwd=self.cwd,
                                env=full_env, timeout=timeout)
        out = result.stdout.decode()
        messages = [json.loads(line) for line in out.splitlines() if line.strip()]
        return Reply(result.returncode, messages, result.stderr.decode(), out)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[AzurePeers]:
    with AzurePeers(tmp_path / "peers") as running:
        yield running


@pytest.fixture
def provider(peers: AzurePeers, tmp_path: Path) -> Provider:
    return Provider(peers, tmp_path)
