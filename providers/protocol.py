"""dstream provider protocol v1, the wire contract: the envelope, every message, the strict parsers.

Standard library only. dstream's host and the Python provider helper
(providers/helper.py) both use it; docs/protocol.md says the same in words.

A provider is a process. dstream writes one command envelope as the first
stdin line; the provider answers with JSON lines on stdout and logs on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
LIFECYCLE_COMMANDS = ("validate", "plan", "init", "status", "destroy")
# asked only of an input, only by `dstream snapshot`; answered like a lifecycle command (hello first)
ON_DEMAND_COMMANDS = ("snapshot",)
COMMANDS = (*LIFECYCLE_COMMANDS, "run", *ON_DEMAND_COMMANDS)


class Failure(Exception):
    """The one shape of every failure in dstream and its providers: what happened, what to do
    (`hint`) and, where a config value is at fault, its `key`. dstream's errors (state/errors.py),
    the host's (host/process.py) and a provider's (helper.CommandFailed) all derive from it."""

    def __init__(self, message: str, hint: str | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.key = key


class ProtocolError(Exception):
    """A peer broke the protocol (malformed line, unknown message)."""


# --- the command envelope -------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """The first stdin line. A bare config object (the original's format) is `run`."""

    command: str
    config: dict[str, Any]
    protocol: int = PROTOCOL_VERSION
    task: str = ""
    role: str = ""
    streams: tuple[dict[str, Any], ...] = ()
    resources: tuple[dict[str, Any], ...] = ()
    checkpoints: dict[str, Any] = field(default_factory=dict)
    changes: tuple[dict[str, Any], ...] | None = None
    refresh: bool = True
    once: bool = False
    target: str = ""  # snapshot only: the table named by `dstream snapshot --table`

    @classmethod
    def parse(cls, line: bytes | str) -> Envelope:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ProtocolError(f"stdin line 1 is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ProtocolError("stdin line 1 must be a JSON object")
        if "command" not in obj:
            return cls(command="run", config=obj)
        command = obj["command"]
        if command not in COMMANDS:
            raise ProtocolError(f"unknown command {command!r} (expected one of {', '.join(COMMANDS)})")
        changes = obj.get("changes")
        protocol = obj.get("protocol", PROTOCOL_VERSION)
        if isinstance(protocol, bool) or not isinstance(protocol, int) or protocol > PROTOCOL_VERSION:
            raise ProtocolError(f"envelope speaks protocol {protocol!r}; this provider speaks {PROTOCOL_VERSION}")
        if not isinstance(obj.get("config") or {}, dict):
            raise ProtocolError("envelope field 'config' must be an object")
        return cls(
            command=command,
            config=obj.get("config") or {},
            protocol=protocol,
            task=obj.get("task", ""),
            role=obj.get("role", ""),
            streams=tuple(obj.get("streams") or ()),
            resources=tuple(obj.get("resources") or ()),
            checkpoints=dict(obj.get("checkpoints") or {}),
            changes=None if changes is None else tuple(changes),
            refresh=bool(obj.get("refresh", True)),
            once=bool(obj.get("once", False)),
            target=str(obj.get("target") or ""),
        )

    def to_json(self) -> str:
        obj: dict[str, Any] = {
            "protocol": self.protocol,
            "command": self.command,
            "task": self.task,
            "role": self.role,
            "config": self.config,
            "streams": list(self.streams),
            "resources": list(self.resources),
            "checkpoints": self.checkpoints,
            "refresh": self.refresh,
            "once": self.once,
        }
        if self.changes is not None:
            obj["changes"] = list(self.changes)
        if self.target:
            obj["target"] = self.target
        return json.dumps(obj, separators=(",", ":"))


# --- messages a provider writes --------------------------------------------


def hello(provider: str, version: str) -> dict[str, Any]:
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "provider": provider, "version": version}


def streams_message(streams: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "streams", "streams": streams}


def change_message(change: dict[str, Any]) -> dict[str, Any]:
    return {"type": "change", **change}


def drift_message(drift: dict[str, Any]) -> dict[str, Any]:
    return {"type": "drift", **drift}


def resource_message(action: str, resource: dict[str, Any]) -> dict[str, Any]:
    """An applied change: action is created, updated or deleted."""
    return {"type": "resource", "action": action, "resource": resource}


def status_message(resource: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {"type": "status", "resource": resource, "status": status}


def checkpoint_message(stream: str, position: Any) -> dict[str, Any]:
    return {"type": "checkpoint", "stream": stream, "position": position}


def position_message(stream: str, position: Any) -> dict[str, Any]:
    return {"type": "position", "stream": stream, "position": position}


def error_message(message: str, hint: str | None = None, key: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"type": "error", "message": message}
    if hint:
        obj["hint"] = hint
    if key:
        obj["key"] = key
    return obj


def warning_message(message: str) -> dict[str, Any]:
    return {"type": "warning", "message": message}


# --- the strict parser: what dstream accepts from a provider ----------------------

CHANGE_ACTIONS = ("create", "update", "replace", "delete", "adopt")
RESOURCE_ACTIONS = ("created", "updated", "deleted")
LIFECYCLE_REPLY_TYPES = ("hello", "streams", "change", "drift", "resource", "status", "checkpoint", "warning", "error")
RUN_REPLY_TYPES = ("checkpoint", "resource", "warning", "error")  # what an output writes during run


def _name_ref(value: Any) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str) or not isinstance(value.get("name"), str) or not value["name"]:
        return "resource must be an object with a type and a name"
    return ""


def _attrs(*values: Any) -> str:
    return "" if all(v is None or isinstance(v, dict) for v in values) else "before/after/attributes must be objects or null"


def _text_fields(message: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> str:
    for key in required:
        if not isinstance(message.get(key), str):
            return f"{key} must be a string"
    for key in optional:
        if message.get(key) is not None and not isinstance(message[key], str):
            return f"{key} must be a string"
    return ""


def _streams_problem(m: dict[str, Any]) -> str:
    streams = m.get("streams")
    ok = isinstance(streams, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"] for s in streams)
    return "" if ok else "streams must be a list of objects with a name"


def _change_problem(m: dict[str, Any]) -> str:
    if m.get("action") not in CHANGE_ACTIONS:
        return f"action must be one of {', '.join(CHANGE_ACTIONS)}, not {m.get('action')!r}"
    paths = m.get("replace_paths") or []
    if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
        return "replace_paths must be a list of attribute names"
    return _name_ref(m.get("resource")) or _attrs(m.get("before"), m.get("after"))


def _resource_problem(m: dict[str, Any]) -> str:
    if m.get("action") not in RESOURCE_ACTIONS:
        return f"action must be one of {', '.join(RESOURCE_ACTIONS)}, not {m.get('action')!r}"
    return _name_ref(m.get("resource")) or _attrs(m["resource"].get("attributes"))


def _checkpoint_problem(m: dict[str, Any]) -> str:
    if not isinstance(m.get("stream"), str) or not m["stream"]:
        return "stream must be a non-empty string"
    return "" if m.get("position") is not None else f"stream {m['stream']!r} has no position (null is not a position)"


SHAPES: dict[str, Callable[[dict[str, Any]], str]] = {
    "hello": lambda m: "" if isinstance(m.get("protocol"), int) and not isinstance(m.get("protocol"), bool) else "protocol must be an integer",
    "streams": _streams_problem,
    "change": _change_problem,
    "drift": lambda m: _name_ref(m.get("resource")) or _attrs(m.get("before"), m.get("after")),
    "resource": _resource_problem,
    "status": lambda m: _name_ref(m.get("resource")) or _attrs(m.get("status")),
    "checkpoint": _checkpoint_problem,
    "position": _checkpoint_problem,
    "warning": lambda m: _text_fields(m, ("message",)),
    "error": lambda m: _text_fields(m, ("message",), ("hint", "key")),
}


def parse_reply(raw: bytes | str, allowed: tuple[str, ...] = LIFECYCLE_REPLY_TYPES) -> dict[str, Any]:
    """One line a provider wrote on stdout, checked against its message's shape (docs/protocol.md).

    Raises ProtocolError saying what is wrong: not a JSON object, a type not in
    `allowed`, or a field its type requires missing or of the wrong kind."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise ProtocolError("is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("is not a JSON object")
    kind = message.get("type")
    if kind not in allowed:
        raise ProtocolError(f"has unknown message type {kind!r}")
    problem = SHAPES[kind](message)
    if problem:
        raise ProtocolError(f"is a malformed {kind} message ({problem})")
    return message


def dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# --- reading data lines (output providers) ----------------------------------


@dataclass(frozen=True)
class DataLine:
    """One line an input wrote: a change (`data` set) or a position-only update."""

    lineno: int
    raw: bytes
    stream: str | None
    position: Any
    is_change: bool
    envelope: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # the parsed change (raw says the same)


def parse_data_line(raw: bytes, lineno: int) -> DataLine:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"input line {lineno} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"input line {lineno} is not a JSON object")
    kind = obj.get("type")
    if kind == "position":
        return DataLine(lineno, raw, obj.get("stream"), obj.get("position"), False)
    if kind is not None:
        if kind in ("hello", "warning"):
            return DataLine(lineno, raw, None, None, False)
        raise ProtocolError(f"input line {lineno} has unknown message type {kind!r}")
    if "data" not in obj and "metadata" not in obj:
        raise ProtocolError(f"input line {lineno} is neither a change envelope nor a position")
    stream = obj.get("stream") or (obj.get("metadata") or {}).get("TableName")
    if not stream:
        raise ProtocolError(f"input line {lineno} names no stream (no 'stream' and no metadata.TableName)")
    return DataLine(lineno, raw, str(stream), obj.get("position"), True, obj)


def position_key(position: Any) -> str:
    """A canonical text form of a position, for logs and comparisons of equality."""
    return json.dumps(position, sort_keys=True, separators=(",", ":"))
