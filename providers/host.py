"""Starting provider processes and holding a lifecycle conversation with one.

Knows processes and JSON lines, nothing of state: replies go to a callback.
Providers start in their own session (a terminal's Ctrl-C reaches dstream
only, which then stops them in order) and get SIGTERM if dstream dies.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.protocol import Envelope

HELLO_TIMEOUT = float(os.environ.get("DSTREAM_HELLO_TIMEOUT", "30"))
STDERR_TAIL = 20
REPLY_TYPES = frozenset({"hello", "streams", "change", "drift", "resource", "status", "checkpoint", "warning", "error"})
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class HostError(Exception):
    """A provider failed or broke the protocol. `stderr_tail` holds its last log lines."""

    def __init__(self, message: str, hint: str | None = None, key: str | None = None, stderr_tail: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.key = key
        self.stderr_tail = stderr_tail or []


@dataclass(frozen=True)
class ProviderProcess:
    """How to start one provider: argv, working directory, and a label for logs."""

    label: str  # e.g. "input:jsonl"
    argv: tuple[str, ...]
    cwd: Path

    @classmethod
    def builtin(cls, label: str, module: str, cwd: Path) -> ProviderProcess:
        return cls(label, (sys.executable, "-m", module), cwd)

    @classmethod
    def external(cls, label: str, executable: Path, cwd: Path) -> ProviderProcess:
        return cls(label, (str(executable),), cwd)

    def start(self, stdin: Any, stdout: Any) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        if logging.getLogger("dstream").isEnabledFor(logging.DEBUG):
            env["DSTREAM_DEBUG"] = "1"  # Python providers then show tracebacks
        try:
            return subprocess.Popen(
                self.argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd=self.cwd, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise HostError(f"cannot start provider {self.label}: {exc.strerror}") from None


def _die_with_parent() -> None:
    """Linux: SIGTERM the provider when dstream dies, so no provider outlives a killed run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class StderrRelay(threading.Thread):
    """Passes a provider's stderr lines to `sink` and keeps the last few for errors."""

    def __init__(self, stream: Any, sink: Callable[[str], None]):
        super().__init__(daemon=True)
        self.stream = stream
        self.sink = sink
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)

    def run(self) -> None:
        for raw in self.stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            self.sink(line)
        self.stream.close()


def converse(process: ProviderProcess, envelope: Envelope, on_message: Callable[[dict[str, Any]], None], on_log: Callable[[str], None]) -> bool:
    """Send a lifecycle command and feed each reply line to `on_message`.

    Returns False when the provider is legacy (its first line is not hello, or
    it exits 0 without one): it manages nothing. Raises HostError on failure.
    """
    proc = process.start(subprocess.PIPE, subprocess.PIPE)
    relay = StderrRelay(proc.stderr, on_log)
    relay.start()
    timer = threading.Timer(HELLO_TIMEOUT, _kill, (proc,))
    try:
        send_envelope(proc, envelope)
        timer.start()
        legacy = not _read_replies(process, proc, on_message, timer, relay)
    except BaseException:
        _kill(proc)
        raise
    finally:
        timer.cancel()
    code = proc.wait()
    relay.join(timeout=5)
    if legacy:
        return False
    if code != 0:
        raise HostError(f"provider {process.label} exited with code {code}", stderr_tail=list(relay.tail))
    return True


def send_envelope(proc: subprocess.Popen[bytes], envelope: Envelope) -> None:
    """Write the command envelope as the provider's first stdin line, then close its stdin."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(envelope.to_json().encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it exited before reading; its exit code tells the rest


def _read_replies(process: ProviderProcess, proc: subprocess.Popen[bytes], on_message: Callable[[dict[str, Any]], None], timer: threading.Timer, relay: StderrRelay) -> bool:
    """True for a protocol-v1 provider, False for a legacy one (which is then stopped)."""
    assert proc.stdout is not None
    lineno = 0
    for lineno, raw in enumerate(proc.stdout, start=1):
        message = _parse_reply(raw)
        if lineno == 1:
            timer.cancel()
            if message is None or message.get("type") != "hello":
                _kill(proc)
                return False
            continue
        if message is None:
            _kill(proc)
            raise HostError(f"provider {process.label} wrote a malformed line {lineno} on stdout: {_snippet(raw)}", stderr_tail=list(relay.tail))
        if message["type"] == "error":
            proc.wait()
            raise HostError(str(message.get("message", "failed")), hint=message.get("hint"), key=message.get("key"), stderr_tail=list(relay.tail))
        on_message(message)
    # no line at all: legacy when it exited cleanly or hung until the hello timeout
    return lineno > 0 or proc.wait() not in (0, -signal.SIGKILL)


def _parse_reply(raw: bytes) -> dict[str, Any] | None:
    """A known protocol message, or None for anything else."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") not in REPLY_TYPES:
        return None
    return message


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return text if len(text) <= 80 else text[:77] + "..."


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal a provider and its children (it leads its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    signal_group(proc, signal.SIGKILL)
