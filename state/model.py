"""The state file (versioned, read strictly) and the checkpoint document.

State holds what a task's providers created; checkpoints are kept in a
separate document so frequent checkpoint writes never bump the serial.
Neither ever holds a secret: callers pass attributes through the Redactor.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from state.errors import StateError

STATE_VERSION = 1
CHECKPOINTS_VERSION = 1


@dataclass(frozen=True)
class Resource:
    role: str  # "input" or "output": which provider owns it
    provider: str
    type: str
    name: str
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.role, self.type, self.name)

    @property
    def address(self) -> str:
        return f'{self.role}.{self.type}["{self.name}"]'

    def for_provider(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "id": self.id, "attributes": self.attributes}


@dataclass(frozen=True)
class StateFile:
    task: str
    lineage: str
    serial: int = 0
    dstream_version: str = ""
    resources: tuple[Resource, ...] = ()
    streams: tuple[dict[str, Any], ...] = ()

    @classmethod
    def new(cls, task: str, dstream_version: str) -> StateFile:
        return cls(task=task, lineage=str(uuid.uuid4()), dstream_version=dstream_version)

    def owned_by(self, role: str) -> list[Resource]:
        return [r for r in self.resources if r.role == role]

    def put(self, resource: Resource) -> StateFile:
        kept = tuple(r for r in self.resources if r.key != resource.key)
        return replace(self, resources=tuple(sorted(kept + (resource,), key=lambda r: r.key)))

    def remove(self, key: tuple[str, str, str]) -> StateFile:
        return replace(self, resources=tuple(r for r in self.resources if r.key != key))

    def to_json(self) -> bytes:
        doc = {
            "version": STATE_VERSION,
            "serial": self.serial,
            "lineage": self.lineage,
            "dstream_version": self.dstream_version,
            "task": self.task,
            "streams": list(self.streams),
            "resources": [
                {"role": r.role, "provider": r.provider, "type": r.type, "name": r.name, "id": r.id, "attributes": r.attributes}
                for r in self.resources
            ],
        }
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> StateFile:
        """Parse strictly: `version` first; anything unexpected is unusable state."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise StateError(f"state at {where} is not valid JSON ({exc})", hint="restore it from a backup; dstream never overwrites unusable state") from None
        if not isinstance(doc, dict) or "version" not in doc:
            raise StateError(f"state at {where} has no version", hint="restore it from a backup")
        if doc["version"] != STATE_VERSION:
            raise StateError(f"state at {where} has version {doc['version']!r}; this dstream reads version {STATE_VERSION}", hint="use the dstream release that wrote it")
        try:
            resources = tuple(
                Resource(r["role"], r["provider"], r["type"], r["name"], r["id"], dict(r.get("attributes") or {}))
                for r in doc.get("resources", [])
            )
            return cls(
                task=str(doc["task"]),
                lineage=str(doc["lineage"]),
                serial=int(doc["serial"]),
                dstream_version=str(doc.get("dstream_version", "")),
                resources=resources,
                streams=tuple(doc.get("streams") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"state at {where} is unusable (bad or missing field {exc})", hint="restore it from a backup") from None


@dataclass(frozen=True)
class Checkpoints:
    """The newest acknowledged position per stream."""

    task: str
    positions: dict[str, Any] = field(default_factory=dict)
    updated: dict[str, str] = field(default_factory=dict)

    def advance(self, positions: dict[str, Any]) -> Checkpoints:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return Checkpoints(self.task, {**self.positions, **positions}, {**self.updated, **{s: now for s in positions}})

    def without(self, streams: Iterable[str]) -> Checkpoints:
        gone = set(streams)
        return Checkpoints(self.task, {s: p for s, p in self.positions.items() if s not in gone}, {s: t for s, t in self.updated.items() if s not in gone})

    def to_json(self) -> bytes:
        streams = {s: {"position": p, "updated_at": self.updated.get(s, "")} for s, p in self.positions.items()}
        doc = {"version": CHECKPOINTS_VERSION, "task": self.task, "streams": streams}
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Checkpoints:
        try:
            doc = json.loads(data)
            if doc.get("version") != CHECKPOINTS_VERSION:
                raise ValueError(f"version {doc.get('version')!r}")
            streams = doc["streams"]
            return cls(str(doc["task"]), {s: v["position"] for s, v in streams.items()}, {s: v.get("updated_at", "") for s, v in streams.items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"checkpoints at {where} are unusable ({exc})", hint="restore them from a backup, or delete them to start over") from None
