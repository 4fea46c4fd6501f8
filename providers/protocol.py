"""dstream provider protocol v1: the helper Python providers use.

Standard library only, so any provider can import it cheaply. The contract is
docs/protocol.md; this module is one implementation of it, not the definition.

A provider is a process. dstream writes one command envelope as the first
stdin line; the provider answers with JSON lines on stdout and logs on stderr.
"""

from __future__ import annotations

import difflib
import json
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
COMMANDS = ("validate", "plan", "init", "status", "destroy", "run")
LIFECYCLE_COMMANDS = ("validate", "plan", "init", "status", "destroy")
READ_CHUNK = 1 << 20  # bytes per os.read on stdin; lines may be longer


class ProtocolError(Exception):
    """A peer broke the protocol (malformed line, unknown message)."""


class ProviderFailure(Exception):
    """A provider cannot do what it was asked; reported as an error message."""

    def __init__(self, message: str, hint: str | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.key = key


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


class Writer:
    """Writes protocol lines to stdout. Lifecycle replies are flushed per line."""

    def __init__(self, stream: Any = None):
        self._out = stream if stream is not None else sys.stdout.buffer

    def send(self, obj: Mapping[str, Any], flush: bool = True) -> None:
        self._out.write(dumps(obj))
        if flush:
            self._out.flush()

    def raw(self, data: bytes) -> None:
        self._out.write(data)

    def flush(self) -> None:
        self._out.flush()


def write_all(fd: int, data: bytes) -> None:
    """Write every byte, whatever signals interrupt (a buffered write can lose a partial block)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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


class LineReader:
    """Reads newline-terminated lines from a file descriptor in large chunks.

    `batches()` yields the complete lines of each read, so a consumer can make
    them durable and acknowledge once per batch. No line-length limit.
    """

    def __init__(self, fd: int, first_lineno: int = 1, prefix: bytes = b""):
        self._fd = fd
        self._lineno = first_lineno
        self._rest = prefix

    def more_ready(self) -> bool:
        """True when another read would not block."""
        ready, _, _ = select.select([self._fd], [], [], 0)
        return bool(ready)

    def batches(self) -> Iterator[list[tuple[int, bytes]]]:
        data = self._rest
        if b"\n" in data:  # complete lines that came with the envelope go first, without waiting
            head, _, data = data.rpartition(b"\n")
            batch = self._split(head.split(b"\n"))
            if batch:
                yield batch
        while True:
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except InterruptedError:
                continue
            parts = (data + chunk).split(b"\n")
            data = parts.pop() if chunk else b""
            if not chunk and parts[-1:] == [b""]:
                parts.pop()
            batch = self._split(parts)
            if batch:
                yield batch
            if not chunk:
                return

    def _split(self, parts: list[bytes]) -> list[tuple[int, bytes]]:
        """Number the lines; blank ones are skipped but counted."""
        batch = []
        for part in parts:
            if part.strip():
                batch.append((self._lineno, part))
            self._lineno += 1
        return batch


def read_envelope_line(fd: int = 0) -> tuple[bytes, bytes]:
    """Read the first stdin line unbuffered; returns (line, bytes read past it)."""
    buf = b""
    while b"\n" not in buf:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    if not line.strip():
        raise ProtocolError("no command envelope on stdin (the first line must be a JSON object)")
    return line, rest


# --- configuration ----------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    kind: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    help: str = ""


def parse_config(fields: list[Field], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check a config against its fields; unknown keys get a did-you-mean hint."""
    known = {f.name: f for f in fields}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}"
            raise ProviderFailure(f"unknown config key '{key}'", hint=hint, key=key)
    config: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw or raw[f.name] is None:
            if f.required:
                raise ProviderFailure(f"missing required config key '{f.name}'", hint=f.help or None, key=f.name)
            config[f.name] = f.default
            continue
        value = raw[f.name]
        if isinstance(value, bool) and f.kind in (int, float):
            raise ProviderFailure(f"config key '{f.name}' must be a number, not {value!r}", key=f.name)
        if f.kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, f.kind):
            expected = f.kind.__name__ if isinstance(f.kind, type) else " or ".join(k.__name__ for k in f.kind)
            raise ProviderFailure(f"config key '{f.name}' must be {expected}, not {type(value).__name__}", key=f.name)
        config[f.name] = value
    return config


# --- the provider main loop -------------------------------------------------

Handler = Callable[["Context"], None]


class Context:
    """What a command handler gets: the envelope, parsed config, a writer, a stop flag."""

    def __init__(self, name: str, envelope: Envelope, config: dict[str, Any], writer: Writer, stdin_rest: bytes):
        self.name = name
        self.envelope = envelope
        self.config = config
        self.writer = writer
        self.stdin_rest = stdin_rest
        self.stopping = False

    def send(self, obj: Mapping[str, Any]) -> None:
        self.writer.send(obj)

    def log(self, message: str) -> None:
        """To stderr; run by hand the line names the provider (dstream adds its own label)."""
        if self.envelope.role:
            sys.stderr.write(f"{message}\n")
            sys.stderr.flush()
        else:
            log(self.name, message)


def log(name: str, message: str) -> None:
    sys.stderr.write(f"{name}: {message}\n")
    sys.stderr.flush()


def serve(name: str, version: str, fields: list[Field], handlers: Mapping[str, Handler], role: str = "output") -> int:
    """Run one command from stdin and return the process exit code.

    Lifecycle commands are answered with `hello` first; commands without a
    handler answer with nothing else (the provider manages nothing for them).
    Failures become one line on stderr, exit 1, and an `error` line on stdout
    unless this is an input's run (its stdout is the data pipe).
    """
    writer = Writer()
    ctx: Context | None = None
    envelope: Envelope | None = None
    try:
        line, rest = read_envelope_line()
        envelope = Envelope.parse(line)
        if envelope.command in LIFECYCLE_COMMANDS:
            writer.send(hello(name, version))
        config = parse_config(fields, envelope.config)
        ctx = Context(name, envelope, config, writer, rest)
        _install_sigterm(ctx)
        handler = handlers.get(envelope.command)
        if handler is not None:
            handler(ctx)
        writer.flush()
        return 0
    except (ProviderFailure, ProtocolError) as exc:
        failure = exc if isinstance(exc, ProviderFailure) else ProviderFailure(str(exc))
        data_pipe = role == "input" and (envelope is None or envelope.command == "run")
        _report(name, None if data_pipe else writer, failure)
        return 1
    except BrokenPipeError:
        log(name, "stdout closed by the reader; stopping")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("DSTREAM_DEBUG"):
            traceback.print_exc()
        data_pipe = role == "input" and (envelope is None or envelope.command == "run")
        _report(name, None if data_pipe else writer, ProviderFailure(f"internal error: {type(exc).__name__}: {exc}",
                                                                    hint="run dstream with --log-level debug for the traceback"))
        return 1


def _report(name: str, writer: Writer | None, failure: ProviderFailure) -> None:
    """The failure goes once: as an `error` line where stdout is ours, else on stderr."""
    if writer is not None:
        try:
            writer.send(error_message(failure.message, failure.hint, failure.key))
            return
        except (BrokenPipeError, ValueError):
            pass
    log(name, "error: " + failure.message + (f" ({failure.hint})" if failure.hint else ""))


def _install_sigterm(ctx: Context) -> None:
    """SIGTERM asks for a clean stop: the handler finishes its unit of work and returns."""

    def on_term(signum: int, frame: Any) -> None:
        ctx.stopping = True

    signal.signal(signal.SIGTERM, on_term)


def position_key(position: Any) -> str:
    """A canonical text form of a position, for logs and comparisons of equality."""
    return json.dumps(position, sort_keys=True, separators=(",", ":"))
