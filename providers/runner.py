"""The run: input stdout joined to output stdin by one OS pipe; dstream only hears acks.

dstream is not in the data path. It writes the output's envelope into the
pipe before the input starts, then reads the output's stdout for checkpoint
lines ("acks"), which it hands to `on_acks` at most every `interval` seconds
and once more at the end. Knows nothing of state.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from providers.host import HostError, ProviderProcess, StderrRelay, send_envelope, signal_group
from providers.protocol import Envelope

STOP_GRACE = 30.0  # seconds an input gets to stop after SIGTERM before SIGKILL


@dataclass
class RunResult:
    input_code: int = 0
    output_code: int = 0
    stopped: bool = False  # stopped on request (signal), not by the providers
    failure: HostError | None = None
    persist_error: Exception | None = None  # acks that could not be persisted; the run was stopped
    acked: int = 0  # checkpoint lines received
    input_tail: list[str] = field(default_factory=list)
    output_tail: list[str] = field(default_factory=list)


class Pipeline:
    def __init__(self, source: ProviderProcess, sink: ProviderProcess, on_log: Callable[[str, str], None]):
        self.source = source
        self.sink = sink
        self.on_log = on_log
        self._stop = threading.Event()
        self._input: subprocess.Popen[bytes] | None = None
        self._on_resource: Callable[[dict[str, Any]], None] | None = None

    def stop(self) -> None:
        """Ask for a clean stop: SIGTERM the input; the output drains and acks. Signal-safe."""
        self._stop.set()
        if self._input is not None and self._input.poll() is None:
            signal_group(self._input, signal.SIGTERM)

    def run(self, input_envelope: Envelope, output_envelope: Envelope, on_acks: Callable[[dict[str, Any]], None], interval: float = 1.0,
            on_resource: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
        """Stream until the input stops. `on_resource` gets the output's `resource` messages
        (e.g. a queue created on demand), in order with its acks."""
        self._on_resource = on_resource
        result = RunResult()
        read_end, write_end = os.pipe()
        try:
            output = self.sink.start(read_end, subprocess.PIPE)
            os.write(write_end, output_envelope.to_json().encode() + b"\n")
            self._input = self.source.start(subprocess.PIPE, write_end)
        finally:
            os.close(read_end)
            os.close(write_end)
        relays = [StderrRelay(self._input.stderr, lambda line: self.on_log(self.source.label, line)),
                  StderrRelay(output.stderr, lambda line: self.on_log(self.sink.label, line))]
        for relay in relays:
            relay.start()
        send_envelope(self._input, input_envelope)
        if self._stop.is_set():
            self.stop()
        acks: queue.Queue[tuple[int, dict[str, Any] | None | bytes]] = queue.Queue()
        threading.Thread(target=_read_acks, args=(output, acks), daemon=True).start()
        self._collect(output, acks, on_acks, interval, result)
        result.output_code = output.wait()
        if result.output_code != 0 and self._input.poll() is None:
            signal_group(self._input, signal.SIGTERM)
        result.input_code = _wait(self._input)
        for relay in relays:
            relay.join(timeout=5)
        result.input_tail, result.output_tail = list(relays[0].tail), list(relays[1].tail)
        result.stopped = self._stop.is_set()
        return result

    def _collect(self, output: subprocess.Popen[bytes], acks: queue.Queue[Any], on_acks: Callable[[dict[str, Any]], None], interval: float, result: RunResult) -> None:
        pending: dict[str, Any] = {}
        flushed = time.monotonic()
        while True:
            try:
                lineno, message = acks.get(timeout=interval)
            except queue.Empty:
                lineno, message = 0, {}
            if message is None:  # EOF
                break
            if isinstance(message, bytes):
                if result.failure is None:
                    result.failure = HostError(f"provider {self.sink.label} wrote a malformed line {lineno} on stdout: {message[:80]!r}")
                signal_group(output, signal.SIGTERM)
                self.stop()
            elif message.get("type") == "checkpoint" and "stream" in message:
                pending[str(message["stream"])] = message.get("position")
                result.acked += 1
            elif message.get("type") == "resource" and self._on_resource is not None:
                self._deliver(self._on_resource, message, result)
            elif message.get("type") == "error" and result.failure is None:
                result.failure = HostError(str(message.get("message")), hint=message.get("hint"), key=message.get("key"))
            if pending and time.monotonic() - flushed >= interval:
                self._persist(on_acks, pending, result)
                pending, flushed = {}, time.monotonic()
        if pending:
            self._persist(on_acks, pending, result)

    def _persist(self, on_acks: Callable[[dict[str, Any]], None], acked: dict[str, Any], result: RunResult) -> None:
        """Hand acks over; if that fails, stop the run (data already delivered is redelivered next time)."""
        self._deliver(on_acks, acked, result)

    def _deliver(self, callback: Callable[[dict[str, Any]], None], value: dict[str, Any], result: RunResult) -> None:
        if result.persist_error is not None:
            return
        try:
            callback(value)
        except Exception as exc:
            result.persist_error = exc
            self.stop()


def _read_acks(output: subprocess.Popen[bytes], sink: queue.Queue[Any]) -> None:
    assert output.stdout is not None
    lineno = 0
    for lineno, raw in enumerate(output.stdout, start=1):
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        sink.put((lineno, message if isinstance(message, dict) else bytes(raw.strip())))
    sink.put((lineno + 1, None))


def _wait(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        return proc.wait()
