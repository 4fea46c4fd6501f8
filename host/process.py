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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.protocol import PROTOCOL_VERSION, Envelope, Failure, ProtocolError, parse_reply

STDERR_TAIL = 20
WATCHDOG_TICK = 0.25  # seconds
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# What every provider gets of dstream's environment: nothing that could hold another
# provider's secret. Built-ins add what they need (providers.ENVIRONMENT); configs carry the rest.
BASE_ENVIRONMENT = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "LD_LIBRARY_PATH",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)


@dataclass(frozen=True)
class Timeouts:
    """How long dstream waits on a provider (seconds). The CLI reads them from DSTREAM_* variables."""

    hello: float = 30.0  # from start to the first line (hello); also to read its envelope
    reply: float = 300.0  # silence (no stdout or stderr line) allowed after hello
    stop_grace: float = 30.0  # from SIGTERM to SIGKILL when a run stops


DEFAULT_TIMEOUTS = Timeouts()


def provider_environment(names: tuple[str, ...], source: Mapping[str, str]) -> dict[str, str]:
    """The variables of `source` that `names` allow (a trailing * is a prefix)."""
    exact = {n for n in names if not n.endswith("*")}
    prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
    return {k: v for k, v in source.items() if k in exact or (prefixes and k.startswith(prefixes))}


class HostError(Failure):
    """A provider failed or broke the protocol. `stderr_tail` holds its last log lines."""

    def __init__(self, message: str, hint: str | None = None, key: str | None = None, stderr_tail: list[str] | None = None, line: bytes | None = None):
        super().__init__(message, hint, key)
        self.stderr_tail = stderr_tail or []
        self.line = line  # the offending stdout line: shown shortened only after redaction
        self.role: str | None = None  # set where the caller cannot tell which provider failed


@dataclass(frozen=True)
class ProviderProcess:
    """How to start one provider: argv, working directory, and a label for logs."""

    label: str  # e.g. "input:jsonl"
    argv: tuple[str, ...]
    cwd: Path
    environment: tuple[str, ...] = BASE_ENVIRONMENT  # the variables it may see
    keep_fds: tuple[int, ...] = ()  # held lock files: a provider outliving dstream keeps the lock
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    @classmethod
    def builtin(cls, label: str, module: str, cwd: Path, environment: tuple[str, ...] = (), keep_fds: tuple[int, ...] = (),
                timeouts: Timeouts = DEFAULT_TIMEOUTS) -> ProviderProcess:
        return cls(label, (sys.executable, "-m", module), cwd, BASE_ENVIRONMENT + environment, keep_fds, timeouts)

    @classmethod
    def external(cls, label: str, executable: Path, cwd: Path, keep_fds: tuple[int, ...] = (), timeouts: Timeouts = DEFAULT_TIMEOUTS) -> ProviderProcess:
        return cls(label, (str(executable),), cwd, BASE_ENVIRONMENT, keep_fds, timeouts)

    def start(self, stdin: Any, stdout: Any) -> subprocess.Popen[bytes]:
        env = provider_environment(self.environment, os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
        if logging.getLogger("dstream").isEnabledFor(logging.DEBUG):
            env["DSTREAM_DEBUG"] = "1"  # Python providers then show tracebacks
        try:
            return subprocess.Popen(
                self.argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd=self.cwd, env=env,
                start_new_session=True, preexec_fn=_die_with_parent, pass_fds=self.keep_fds,
            )
        except OSError as exc:
            raise HostError(f"cannot start it: {exc.strerror}") from None


def _die_with_parent() -> None:
    """Linux: SIGTERM the provider when dstream dies, so no provider outlives a killed run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class StderrRelay(threading.Thread):
    """Passes a provider's stderr lines to `sink` and keeps the last few for errors."""

    def __init__(self, stream: Any, sink: Callable[[str], None], on_line: Callable[[], None] = lambda: None):
        super().__init__(daemon=True)
        self.stream = stream
        self.sink = sink
        self.on_line = on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)

    def run(self) -> None:
        for raw in self.stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            self.on_line()
            self.sink(line)
        self.stream.close()


class Watchdog(threading.Thread):
    """Kills a provider that stays silent past its deadline; `expired` tells afterwards."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float):
        super().__init__(daemon=True)
        self.proc = proc
        self.timeout = timeout
        self.expired = False
        self._deadline = time.monotonic() + timeout
        self._done = threading.Event()

    def extend(self, timeout: float | None = None) -> None:
        """Push the deadline `timeout` (default: the current one) seconds from now."""
        if timeout is not None:
            self.timeout = timeout
        self._deadline = time.monotonic() + self.timeout

    def cancel(self) -> None:
        self._done.set()

    def run(self) -> None:
        # short naps, so that a deadline moved nearer (hello timeout -> reply timeout) is seen in time
        while not self._done.wait(min(WATCHDOG_TICK, max(0.0, self._deadline - time.monotonic()))):
            if time.monotonic() >= self._deadline:
                self.expired = True
                _kill(self.proc)
                return


def converse(process: ProviderProcess, envelope: Envelope, on_message: Callable[[dict[str, Any]], None], on_log: Callable[[str], None]) -> bool:
    """Send a lifecycle command and feed each reply line to `on_message`.

    Returns False when the provider is legacy (its first line is not hello, or
    it exits 0 without writing anything): it manages nothing. Raises HostError
    on failure, including a provider silent for longer than its timeout.
    """
    proc = process.start(subprocess.PIPE, subprocess.PIPE)
    watchdog = Watchdog(proc, process.timeouts.hello)
    relay = StderrRelay(proc.stderr, on_log, on_line=watchdog.extend)
    relay.start()
    watchdog.start()
    writer = threading.Thread(target=send_envelope, args=(proc, envelope), daemon=True)  # a provider may not read it
    writer.start()
    try:
        legacy = not _read_replies(process, proc, on_message, watchdog, relay)
    except BaseException:
        _kill(proc)
        raise
    finally:
        watchdog.cancel()
    code = proc.wait()
    relay.join(timeout=5)
    writer.join(timeout=5)
    if watchdog.expired:
        raise HostError(_silence(process, watchdog), hint=_SILENCE_HINT, stderr_tail=list(relay.tail))
    if legacy:
        return False
    if code != 0:
        raise HostError(f"exited with code {code}", stderr_tail=list(relay.tail))
    return True


_SILENCE_HINT = "raise DSTREAM_HELLO_TIMEOUT / DSTREAM_PROVIDER_TIMEOUT (seconds) if it is only slow"
STOPPED_ANSWERING = "stopped answering: nothing on stdout or stderr for {seconds:g}s; it was killed"
BROKE_PROTOCOL = "broke the protocol: stdout line {lineno} {problem}"
OTHER_PROTOCOL = "speaks provider protocol {theirs!r}; this dstream speaks {ours}"


def _silence(process: ProviderProcess, watchdog: Watchdog) -> str:
    return STOPPED_ANSWERING.format(seconds=watchdog.timeout)


def send_envelope(proc: subprocess.Popen[bytes], envelope: Envelope) -> None:
    """Write the command envelope as the provider's first stdin line, then close its stdin."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(envelope.to_json().encode() + b"\n")
        proc.stdin.close()
    except (BrokenPipeError, ValueError):
        pass  # it exited (or was killed) before reading; its exit code tells the rest


def _read_replies(process: ProviderProcess, proc: subprocess.Popen[bytes], on_message: Callable[[dict[str, Any]], None], watchdog: Watchdog, relay: StderrRelay) -> bool:
    """True for a protocol-v1 provider, False for a legacy one (which is then stopped).

    Every line after hello passes the contract's strict parser; the first one
    that does not is a protocol error naming the line."""
    assert proc.stdout is not None
    lineno = 0
    for lineno, raw in enumerate(proc.stdout, start=1):
        if lineno == 1 and not _says_hello(raw):
            _kill(proc)
            return False
        watchdog.extend(process.timeouts.reply)
        try:
            message = parse_reply(raw)
        except ProtocolError as exc:
            _kill(proc)
            raise HostError(BROKE_PROTOCOL.format(lineno=lineno, problem=exc), stderr_tail=list(relay.tail), line=raw) from None
        if lineno == 1:  # a hello (_says_hello): its version decides
            if message["protocol"] != PROTOCOL_VERSION:
                _kill(proc)
                raise HostError(OTHER_PROTOCOL.format(theirs=message["protocol"], ours=PROTOCOL_VERSION),
                                hint="use a provider release for protocol 1, or a dstream that speaks its protocol")
            continue
        if message["type"] == "hello":
            _kill(proc)
            raise HostError(f"broke the protocol: stdout line {lineno} is a second hello", stderr_tail=list(relay.tail))
        if message["type"] == "error":
            proc.wait()
            raise HostError(message["message"] or "failed", hint=message.get("hint"), key=message.get("key"), stderr_tail=list(relay.tail))
        on_message(message)
    # nothing at all: legacy when it exited cleanly (a timeout is reported by the caller)
    return lineno > 0 or proc.wait() != 0


def _says_hello(raw: bytes) -> bool:
    """Whether a first line is a hello at all (anything else marks a legacy provider)."""
    try:
        message = json.loads(raw)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "hello"


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal a provider and its children (it leads its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    signal_group(proc, signal.SIGKILL)
