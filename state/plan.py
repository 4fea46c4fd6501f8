"""Plans are data: changes and drift with reasons, saved and loaded as JSON.

Rendering lives in render.py; this module never formats for humans.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from state.errors import StalePlanError, StateError
from state.model import StateFile

PLAN_FORMAT = "1"
ACTIONS = ("create", "update", "replace", "delete", "adopt")


@dataclass(frozen=True)
class Change:
    role: str
    provider: str
    type: str
    name: str
    action: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    replace_paths: tuple[str, ...] = ()
    reason: str = ""

    @property
    def address(self) -> str:
        return f'{self.role}.{self.type}["{self.name}"]'

    def for_provider(self) -> dict[str, Any]:
        return {"action": self.action, "resource": {"type": self.type, "name": self.name}, "before": self.before, "after": self.after, "replace_paths": list(self.replace_paths)}

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "role": self.role, "provider": self.provider, **self.for_provider(), "reason": self.reason}


@dataclass(frozen=True)
class Drift:
    role: str
    provider: str
    type: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None  # None: deleted outside dstream

    @property
    def address(self) -> str:
        return f'{self.role}.{self.type}["{self.name}"]'

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "role": self.role, "provider": self.provider, "resource": {"type": self.type, "name": self.name},
                "before": self.before, "after": self.after}


@dataclass(frozen=True)
class Plan:
    task: str
    lineage: str  # "" when planned before any state existed
    serial: int
    config_digest: str
    refreshed: bool
    streams: tuple[dict[str, Any], ...] = ()
    changes: tuple[Change, ...] = ()
    drift: tuple[Drift, ...] = ()
    legacy: tuple[str, ...] = ()  # roles whose provider manages nothing (no protocol v1)
    warnings: tuple[str, ...] = field(default=())

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def summary(self) -> dict[str, int]:
        """Terraform's counts: a replacement is one add and one destroy."""
        count = {a: sum(1 for c in self.changes if c.action == a) for a in ACTIONS}
        return {
            "add": count["create"] + count["replace"],
            "change": count["update"],
            "destroy": count["delete"] + count["replace"],
            "adopt": count["adopt"],
        }

    def for_role(self, role: str) -> list[Change]:
        return [c for c in self.changes if c.role == role]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT,
            "task": self.task,
            "state": {"lineage": self.lineage, "serial": self.serial},
            "config_digest": self.config_digest,
            "refreshed": self.refreshed,
            "streams": list(self.streams),
            "resource_changes": [c.as_dict() for c in self.changes],
            "resource_drift": [d.as_dict() for d in self.drift],
            "legacy_providers": list(self.legacy),
            "warnings": list(self.warnings),
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> Plan:
        try:
            if doc["format_version"] != PLAN_FORMAT:
                raise ValueError(f"format {doc['format_version']!r}")
            return cls(
                task=doc["task"], lineage=doc["state"]["lineage"], serial=int(doc["state"]["serial"]),
                config_digest=doc["config_digest"], refreshed=bool(doc["refreshed"]),
                streams=tuple(doc["streams"]),
                changes=tuple(_change(c) for c in doc["resource_changes"]),
                drift=tuple(Drift(d["role"], d["provider"], d["resource"]["type"], d["resource"]["name"], d["before"], d["after"]) for d in doc["resource_drift"]),
                legacy=tuple(doc.get("legacy_providers", ())),
                warnings=tuple(doc.get("warnings", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{where} is not a dstream plan ({exc})") from None

    def check_fresh(self, task: str, state: StateFile, config_digest: str) -> None:
        """A saved plan applies only to the state and config it was made from."""
        if self.task != task:
            raise StalePlanError(f"saved plan is for task {self.task!r}, not {task!r}")
        if self.lineage == "" and state.serial != 0:
            raise StalePlanError("saved plan is stale: state was created since the plan was made", hint="run dstream plan again")
        if self.lineage and self.lineage != state.lineage:
            raise StalePlanError("saved plan is stale: the state was replaced since the plan was made (lineage changed)", hint="run dstream plan again")
        if self.serial != state.serial:
            raise StalePlanError(f"saved plan is stale: state serial moved from {self.serial} to {state.serial}", hint="run dstream plan again")
        if self.config_digest != config_digest:
            raise StalePlanError("saved plan is stale: the task's configuration changed since the plan was made", hint="run dstream plan again")


def _change(c: dict[str, Any]) -> Change:
    return Change(c["role"], c["provider"], c["resource"]["type"], c["resource"]["name"], c["action"], c.get("before"), c.get("after"),
                  tuple(c.get("replace_paths") or ()), c.get("reason", ""))


def change_from_message(role: str, provider: str, message: dict[str, Any]) -> Change:
    action = message.get("action")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return _change({**message, "role": role, "provider": provider})


def drift_from_message(role: str, provider: str, message: dict[str, Any]) -> Drift:
    return Drift(role, provider, message["resource"]["type"], message["resource"]["name"], message.get("before"), message.get("after"))


def config_digest(redacted_configs: dict[str, Any]) -> str:
    """A digest of the task's configuration (secrets already masked)."""
    return hashlib.sha256(json.dumps(redacted_configs, sort_keys=True).encode()).hexdigest()
