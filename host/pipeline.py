"""The run: input stdout joined to output stdin by one OS pipe; dstream only hears acks.

dstream is not in the data path. It writes the output's envelope into the
pipe before the input starts, then reads the output's stdout for checkpoint
lines ("acks"), which it hands to `on_acks` at most every `interval` seconds
and once more at the end. Every line the output writes is checked against the
protocol: an invalid ack stops the run and is never persisted. Knows nothing
of state.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host.process import BROKE_PROTOCOL, HostError, ProviderProcess, StderrRelay, send_envelope, signal_group
from providers.protocol import RUN_REPLY_TYPES, Envelope, ProtocolError, parse_reply

UNKNOWN_STREAM = "acknowledges unknown stream {stream!r}"


@dataclass
class Exit:
    """How and when a provider process ended."""

    code: int = 0
    at: float = float("inf")  # monotonic time of exit


@dataclass
class RunResult:
    input: Exit = field(default_factory=Exit)
    output: Exit = field(default_factory=Exit)
    stopped: bool = False  # stopped on request (signal), not by the providers
    stop_at: float = float("inf")  # when dstream first asked the input to stop
    failure: HostError | None = None  # the output broke the protocol or reported an error
    persist_error: Exception | None = None  # acks that could not be persisted; the run was stopped
    acked: int = 0  # checkpoint lines received
    input_tail: list[str] = field(default_factory=list)
    output_tail: list[str] = field(default_factory=list)

    @property
    def input_code(self) -> int:
        return self.input.code

    @property
    def output_failed(self) -> bool:
        return self.failure is not None or self.output.code != 0

    @property
    def input_failed(self) -> bool:
        """It ended badly before dstream asked it to stop (after that, a signal's exit code is ours)."""
        return self.input.code != 0 and self.input.at < self.stop_at

    def culprit(self) -> str | None:
        """Which provider the run's failure belongs to: the one that failed first."""
        if self.input_failed and (not self.output_failed or self.input.at <= self.output.at):
            return "input"
        return "output" if self.output_failed else None

    @property
    def output_code(self) -> int:
        return self.output.code


class Pipeline:
    def __init__(self, source: ProviderProcess, sink: ProviderProcess, on_log: Callable[[str, str], None]):
        self.source = source
        self.sink = sink
        self.on_log = on_log
        self._stop = threading.Event()
        self._stop_at = float("inf")
        self._input: subprocess.Popen[bytes] | None = None
        self._on_resource: Callable[[dict[str, Any]], None] | None = None
        self._streams: set[str] = set()

    def stop(self) -> None:
        """Ask for a clean stop: SIGTERM the input (SIGKILL after the grace); the output drains and acks. Signal-safe."""
        first = not self._stop.is_set()
        if first:
            self._stop_at = time.monotonic()
        self._stop.set()
        if self._input is not None and self._input.poll() is None:
            signal_group(self._input, signal.SIGTERM)
            if first:
                threading.Thread(target=_kill_after, args=(self._input, self.source.timeouts.stop_grace), daemon=True).start()

    def run(self, input_envelope: Envelope, output_envelope: Envelope, on_acks: Callable[[dict[str, Any]], None], interval: float = 1.0,
            on_resource: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
        """Stream until the input stops. `on_resource` gets the output's `resource` messages
        (e.g. a queue created on demand), in order with its acks."""
        self._on_resource = on_resource
        self._streams = {str(s.get("name")) for s in output_envelope.streams}
        result = RunResult()
        read_end, write_end = os.pipe()
        role = "output"
        try:
            output = self.sink.start(read_end, subprocess.PIPE)
            _write_first_line(output, write_end, output_envelope, self.sink.timeouts.hello)
            role = "input"
            self._input = self.source.start(subprocess.PIPE, write_end)
        except HostError as exc:
            exc.role = role
            raise
        finally:
            os.close(read_end)
            os.close(write_end)
        relays = [StderrRelay(self._input.stderr, lambda line: self.on_log(self.source.label, line)),
                  StderrRelay(output.stderr, lambda line: self.on_log(self.sink.label, line))]
        for relay in relays:
            relay.start()
        input_exit = _watch(self._input, result.input)
        threading.Thread(target=send_envelope, args=(self._input, input_envelope), daemon=True).start()
        if self._stop.is_set():
            self.stop()
        output_exit = _watch(output, result.output)
        acks: queue.Queue[tuple[int, dict[str, Any] | None | bytes]] = queue.Queue()
        threading.Thread(target=_read_acks, args=(output, acks), daemon=True).start()
        self._collect(output, acks, on_acks, interval, result)
        output_exit.join()
        if result.output.code != 0:
            self.stop()
        input_exit.join(self.source.timeouts.stop_grace)
        if input_exit.is_alive():  # it closed its stdout but does not exit
            signal_group(self._input, signal.SIGKILL)
            input_exit.join()
        for relay in relays:
            relay.join(timeout=5)
        result.input_tail, result.output_tail = list(relays[0].tail), list(relays[1].tail)
        result.stopped, result.stop_at = self._stop.is_set(), self._stop_at
        return result

    def _collect(self, output: subprocess.Popen[bytes], acks: queue.Queue[Any], on_acks: Callable[[dict[str, Any]], None], interval: float, result: RunResult) -> None:
        pending: dict[str, Any] = {}
        flushed = time.monotonic()
        while True:
            try:
                lineno, raw = acks.get(timeout=interval)
            except queue.Empty:
                lineno, raw = 0, b""
            if raw is None:  # EOF
                break
            message, problem = self._check(raw) if raw else (None, "")
            if problem or (message is not None and message["type"] == "error"):
                self._persist(on_acks, pending, result)  # what it acknowledged before this line holds
                pending = {}
            if problem:
                self._fail(output, result, HostError(BROKE_PROTOCOL.format(lineno=lineno, problem=problem), line=raw))
            elif message is None:
                pass
            elif message["type"] == "checkpoint":
                pending[message["stream"]] = message["position"]
                result.acked += 1
            elif message["type"] == "resource" and self._on_resource is not None:
                self._deliver(self._on_resource, message, result)
            elif message["type"] == "error":
                self._fail(output, result, HostError(message["message"], hint=message.get("hint"), key=message.get("key")))
            elif message["type"] == "warning":
                self.on_log(self.sink.label, f"warning: {message['message']}")
            if pending and time.monotonic() - flushed >= interval:
                self._persist(on_acks, pending, result)
                pending, flushed = {}, time.monotonic()
        if pending:
            self._persist(on_acks, pending, result)

    def _check(self, raw: bytes) -> tuple[dict[str, Any] | None, str]:
        """The output's line and what is wrong with it, or "" (docs/protocol.md, "Invalid acks")."""
        try:
            message = parse_reply(raw, RUN_REPLY_TYPES)
        except ProtocolError as exc:
            return None, str(exc)
        if message["type"] == "checkpoint" and message["stream"] not in self._streams:
            return None, UNKNOWN_STREAM.format(stream=message["stream"])
        if message["type"] == "resource":
            self._streams.add(message["resource"]["name"])  # made on demand for a new stream: its acks follow
        return message, ""

    def _fail(self, output: subprocess.Popen[bytes], result: RunResult, failure: HostError) -> None:
        """The output is not to be trusted any more: stop both, persist nothing after this line."""
        if result.failure is None:
            result.failure = failure
        signal_group(output, signal.SIGTERM)
        self.stop()

    def _persist(self, on_acks: Callable[[dict[str, Any]], None], acked: dict[str, Any], result: RunResult) -> None:
        """Hand acks over; if that fails, stop the run (data already delivered is redelivered next time)."""
        self._deliver(on_acks, acked, result)

    def _deliver(self, callback: Callable[[dict[str, Any]], None], value: dict[str, Any], result: RunResult) -> None:
        if result.persist_error is not None or result.failure is not None or not value:
            return  # nothing after a failure is trusted
        try:
            callback(value)
        except Exception as exc:
            result.persist_error = exc
            self.stop()


def _write_first_line(output: subprocess.Popen[bytes], write_end: int, envelope: Envelope, timeout: float) -> None:
    """The output's envelope goes into the pipe before the input starts; an output that does not read it is killed."""
    data = envelope.to_json().encode() + b"\n"
    done = threading.Event()

    def write() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
        except OSError:
            pass
        done.set()

    threading.Thread(target=write, daemon=True).start()
    if not done.wait(timeout):
        signal_group(output, signal.SIGKILL)
        done.wait(5)
        raise HostError(f"did not read its envelope within {timeout:g}s; it was killed",
                        hint="raise DSTREAM_HELLO_TIMEOUT (seconds) if it is only slow")


def _watch(proc: subprocess.Popen[bytes], into: Exit) -> threading.Thread:
    """Record when a provider exits (to tell which one failed first)."""

    def wait() -> None:
        code = proc.wait()
        into.code, into.at = code, time.monotonic()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def _kill_after(proc: subprocess.Popen[bytes], grace: float) -> None:
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)


def _read_acks(output: subprocess.Popen[bytes], sink: queue.Queue[Any]) -> None:
    assert output.stdout is not None
    lineno = 0
    for lineno, raw in enumerate(output.stdout, start=1):
        if raw.strip():  # blank lines are ignored (docs/protocol.md)
            sink.put((lineno, bytes(raw)))
    sink.put((lineno + 1, None))
