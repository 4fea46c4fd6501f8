"""The helper Python providers use: the main loop, config fields, line reading and writing.

Standard library only, so any provider can import it cheaply. The wire
contract it implements is providers/protocol.py (and docs/protocol.md); this
module is one way to speak it, not the definition.
"""

from __future__ import annotations

import difflib
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from providers.protocol import LIFECYCLE_COMMANDS, ON_DEMAND_COMMANDS, Envelope, Failure, ProtocolError, dumps, error_message, hello

READ_CHUNK = 1 << 20  # bytes per os.read on stdin; lines may be longer


class CommandFailed(Failure):
    """A provider cannot do what it was asked; `serve` reports it as one `error` message."""


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
            raise CommandFailed(f"unknown config key '{key}'", hint=hint, key=key)
    config: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw or raw[f.name] is None:
            if f.required:
                raise CommandFailed(f"missing required config key '{f.name}'", hint=f.help or None, key=f.name)
            config[f.name] = f.default
            continue
        value = raw[f.name]
        if isinstance(value, bool) and f.kind in (int, float):
            raise CommandFailed(f"config key '{f.name}' must be a number, not {value!r}", key=f.name)
        if f.kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, f.kind):
            expected = f.kind.__name__ if isinstance(f.kind, type) else " or ".join(k.__name__ for k in f.kind)
            raise CommandFailed(f"config key '{f.name}' must be {expected}, not {type(value).__name__}", key=f.name)
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
        if envelope.command in LIFECYCLE_COMMANDS or envelope.command in ON_DEMAND_COMMANDS:
            writer.send(hello(name, version))
        config = parse_config(fields, envelope.config)
        ctx = Context(name, envelope, config, writer, rest)
        _install_sigterm(ctx)
        handler = handlers.get(envelope.command)
        if handler is not None:
            handler(ctx)
        writer.flush()
        return 0
    except (CommandFailed, ProtocolError) as exc:
        failure = exc if isinstance(exc, CommandFailed) else CommandFailed(str(exc))
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
        _report(name, None if data_pipe else writer, CommandFailed(f"internal error: {type(exc).__name__}: {exc}",
                                                                    hint="run dstream with --log-level debug for the traceback"))
        return 1


def _report(name: str, writer: Writer | None, failure: CommandFailed) -> None:
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
