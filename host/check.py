"""The provider conformance kit: protocol v1's rules (docs/protocol.md) run against one provider.

Each rule starts the provider the way dstream does (host.process: own process
group, allowlisted environment, config on stdin only), plays one scripted
conversation with it and judges what came back. `check(subject)` returns one
Result per rule: PASS, FAIL or SKIP (a rule that cannot run here; never a pass).
Knows processes and the protocol, nothing of state files or the CLI.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.process import ProviderProcess, signal_group
from providers.protocol import LIFECYCLE_COMMANDS, LIFECYCLE_REPLY_TYPES, RUN_REPLY_TYPES, SHAPES, Envelope, ProtocolError, parse_reply

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
TASK = "dstream-check"
STREAMS = ({"name": "CheckA", "table": "CheckA", "schema": "dbo"}, {"name": "CheckB", "table": "CheckB", "schema": "dbo"})
COMMAND_TIMEOUT = 20.0  # seconds a lifecycle command or a `once` run may take
FIRST_LINE_TIMEOUT = 10.0  # seconds a following input has to write its first line
STOP_WITHIN = 5.0  # seconds from SIGTERM to exit
SETTLE = 0.5  # seconds an input that is about to end by itself gets before SIGTERM
UNKNOWN_KEY = "dstream_check_unknown_key"
UNKNOWN_COMMAND = "dstream-check-unknown-command"
UNKNOWN_TABLE = "dbo.DstreamCheckNoSuchTable"
NEEDS_SERVER = "needs a server: give --config"
LEGACY = "legacy provider (its first line is not hello): it manages nothing"
REPLIES_AFTER_HELLO = tuple(t for t in LIFECYCLE_REPLY_TYPES if t != "hello")
CREDENTIAL_PART = re.compile(r"(?:pwd|password|sharedaccesskey|accountkey|sharedaccesssignature)\s*=\s*([^;]+)", re.I)


@dataclass(frozen=True)
class Result:
    rule: str
    outcome: str  # PASS, FAIL or SKIP
    reason: str


@dataclass(frozen=True)
class Subject:
    """The provider under test, how to start it and the configs to test it with."""

    name: str  # a built-in's name or the executable's path, for the report
    process: ProviderProcess
    role: str  # input or output
    config: dict[str, Any]
    follow_config: dict[str, Any] | None = None  # for the SIGTERM run of an input that must keep going
    builtin: bool = False  # built-ins declare their fields, so unknown keys must be refused
    secret_key: str | None = None  # a config key whose value is secret
    needs_server: bool = False  # rules that reach a server are skipped
    secret_needles: tuple[str, ...] = ()  # secret values that must never be echoed


# --- one conversation with one process ----------------------------------------------


@dataclass
class Exchange:
    """What one provider process did: exit code (None: killed at the deadline), stdout, stderr."""

    code: int | None
    stdout: bytes
    stderr: str
    seconds: float = 0.0

    def lines(self) -> list[tuple[int, bytes]]:
        """Non-blank stdout lines with their line numbers."""
        return [(n, raw) for n, raw in enumerate(self.stdout.split(b"\n"), start=1) if raw.strip()]

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace") + self.stderr

    def ended(self) -> str:
        return "was killed at the deadline" if self.code is None else f"exited {self.code}"


class Conversation:
    """A started provider: stdin written in a thread, stdout and stderr collected in threads."""

    def __init__(self, subject: Subject):
        self.proc = subject.process.start(subprocess.PIPE, subprocess.PIPE)
        self.started = time.monotonic()
        self.out = bytearray()
        self.err = bytearray()
        self.first_line = threading.Event()
        self._stdin: queue.Queue[tuple[bytes, bool]] = queue.Queue()
        self._feeder: threading.Thread | None = None
        self._readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, True), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, False), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: Any, sink: bytearray, watch: bool) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            sink.extend(chunk)
            if watch and b"\n" in chunk:
                self.first_line.set()
        stream.close()

    def write(self, data: bytes, close: bool = True) -> None:
        """Feed stdin, in order, without blocking the kit on a provider that does not read it."""
        if self._feeder is None:
            self._feeder = threading.Thread(target=self._feed, daemon=True)
            self._feeder.start()
        self._stdin.put((data, close))

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        while True:
            data, close = self._stdin.get()
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                if close:
                    self.proc.stdin.close()
                    return
            except (BrokenPipeError, ValueError, OSError):
                return  # it exited without reading: its exit code says the rest

    def wait_first_line(self, timeout: float) -> bool:
        """True once stdout has a whole line; False when it exited or the time ran out first."""
        deadline = time.monotonic() + timeout
        while not self.first_line.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return self.first_line.is_set()
        return True

    def terminate(self) -> None:
        signal_group(self.proc, signal.SIGTERM)

    def finish(self, timeout: float) -> Exchange:
        """Wait up to `timeout` seconds for the exit; kill the process group past it."""
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(self.proc, signal.SIGKILL)
            self.proc.wait()
            code = None
        seconds = time.monotonic() - self.started
        for reader in self._readers:
            reader.join(timeout=5)
        return Exchange(code, bytes(self.out), bytes(self.err).decode("utf-8", "replace"), seconds)


def talk(subject: Subject, stdin: bytes, timeout: float = COMMAND_TIMEOUT) -> Exchange:
    conversation = Conversation(subject)
    conversation.write(stdin)
    return conversation.finish(timeout)


def owned(kit: Kit, command: str, **fields: Any) -> bytes:
    """The envelope of a command on what `apply` made."""
    return envelope(kit.subject, command, resources=kit.resources, **fields)


def envelope(subject: Subject, command: str, config: dict[str, Any] | None = None, **fields: Any) -> bytes:
    streams = STREAMS if subject.role == "output" else ()
    env = Envelope(command=command, config=subject.config if config is None else config, task=TASK, role=subject.role,
                   streams=fields.pop("streams", streams), **fields)
    return env.to_json().encode() + b"\n"


def line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# --- what a line must look like ------------------------------------------------------


def parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """A JSON object, or None and what is wrong with the line."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None, f"is not JSON: {_short(raw)}"
    if not isinstance(obj, dict):
        return None, "is not a JSON object"
    return obj, ""


def _short(raw: bytes, limit: int = 60) -> str:
    text = raw.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _named(obj: Any, *keys: str) -> bool:
    return isinstance(obj, dict) and all(isinstance(obj.get(k), str) and obj.get(k) for k in keys)


def hello_problem(obj: dict[str, Any]) -> str | None:
    if obj.get("type") != "hello":
        return f"is not hello (type {obj.get('type')!r})"
    if obj.get("protocol") != 1:
        return f"says protocol {obj.get('protocol')!r}, not 1"
    if not _named(obj, "provider", "version"):
        return "has no provider and version strings"
    return None


def reply_problem(lineno: int, raw: bytes, allowed: Iterable[str]) -> str | None:
    """Why stdout line `lineno` is not a valid reply of one of the `allowed` types, or None (the contract's own parser)."""
    try:
        parse_reply(raw, tuple(allowed))
    except ProtocolError as exc:
        return f"stdout line {lineno} {exc}"
    return None


def stderr_problem(text: str) -> str | None:
    """stderr is for logs: no tracebacks, no protocol lines."""
    if "Traceback (most recent call last)" in text:
        return "a traceback on stderr"
    for lineno, raw in enumerate(text.splitlines(), start=1):
        obj, _ = parse(raw.encode())
        if obj is not None and ("type" in obj and obj["type"] in {*LIFECYCLE_REPLY_TYPES, "position"} or "data" in obj):
            return f"stderr line {lineno} is a protocol line, not a log"
    return None


def error_text(ex: Exchange) -> str:
    """Every error message it gave: error lines on stdout and its stderr."""
    messages = []
    for _, raw in ex.lines():
        obj, _ = parse(raw)
        if obj is not None and obj.get("type") == "error":
            messages.append(str(obj.get("message", "")))
    return "\n".join(messages) + "\n" + ex.stderr


# --- the rules ---------------------------------------------------------------------------


@dataclass
class Kit:
    """One check: the subject, and what the first `validate` told about it."""

    subject: Subject
    validate: Exchange = field(default_factory=lambda: Exchange(None, b"", ""))
    legacy: bool = False
    once: Exchange | None = None  # the input's run-once, which resume starts from
    resources: tuple[dict[str, Any], ...] = ()  # what `apply` made: the run rules run with it, destroy-owned removes it

    @classmethod
    def start(cls, subject: Subject) -> Kit:
        validate = talk(subject, envelope(subject, "validate"))
        return cls(subject, validate, is_legacy(validate))


def is_legacy(ex: Exchange) -> bool:
    """The protocol's test: the first line is not hello, or it exits 0 writing nothing."""
    lines = ex.lines()
    if not lines:
        return ex.code == 0
    obj, _ = parse(lines[0][1])
    return obj is None or obj.get("type") != "hello"


def rule_hello(kit: Kit) -> Result:
    if kit.legacy:
        return Result("hello", SKIP, LEGACY)
    lines = kit.validate.lines()
    if not lines:
        return Result("hello", FAIL, f"validate: it {kit.validate.ended()} writing nothing: {_last_words(kit.validate)}")
    obj, _ = parse(lines[0][1])
    assert obj is not None
    problem = hello_problem(obj)
    if problem:
        return Result("hello", FAIL, f"the first stdout line {problem}")
    return Result("hello", PASS, f"protocol 1, {obj['provider']} {obj['version']}")


def lifecycle_rule(command: str) -> Callable[[Kit], Result]:
    """validate, plan, status, init (changes: []) and destroy (no resources): exit 0, clean replies."""

    def rule(kit: Kit) -> Result:
        if kit.legacy:
            return Result(command, SKIP, LEGACY)
        if kit.subject.needs_server and command != "validate":
            return Result(command, SKIP, NEEDS_SERVER)
        extra: dict[str, Any] = {"changes": ()} if command == "init" else {}
        ex = kit.validate if command == "validate" else talk(kit.subject, envelope(kit.subject, command, **extra))
        problem = lifecycle_problem(command, ex)
        return Result(command, FAIL, problem) if problem else Result(command, PASS, f"exit 0, {len(ex.lines())} protocol line(s)")

    return rule


def lifecycle_problem(command: str, ex: Exchange) -> str | None:
    if ex.code != 0:
        return f"{ex.ended()}: {_last_words(ex)}"
    lines = ex.lines()
    obj, _ = parse(lines[0][1])
    first = hello_problem(obj) if obj is not None else "is not JSON"
    if first:
        return f"stdout line 1 {first}"
    for lineno, raw in lines[1:]:
        problem = reply_problem(lineno, raw, REPLIES_AFTER_HELLO)
        if problem:
            return problem
        reply, _ = parse(raw)
        if command in ("init", "destroy") and reply and reply.get("type") == "resource":
            return f"stdout line {lineno}: a resource {reply.get('action')} although {_NOTHING_TO_DO[command]}"
    return stderr_problem(ex.stderr)


_NOTHING_TO_DO = {"init": "it was given no changes", "destroy": "it owns no resources"}


def _last_words(ex: Exchange) -> str:
    text = error_text(ex).strip().splitlines()
    return text[-1][:200] if text else "no message"


def rule_unknown_command(kit: Kit) -> Result:
    if kit.legacy:
        return Result("unknown-command", SKIP, LEGACY + "; every first line is its config")
    ex = talk(kit.subject, envelope(kit.subject, UNKNOWN_COMMAND))
    if ex.code == 0 or ex.code is None:
        return Result("unknown-command", FAIL, f"command {UNKNOWN_COMMAND!r}: it {ex.ended()}, not refused")
    return Result("unknown-command", PASS, f"refused with exit {ex.code}")


def rule_unknown_key(kit: Kit) -> Result:
    if kit.legacy:
        return Result("unknown-key", SKIP, LEGACY)
    ex = talk(kit.subject, envelope(kit.subject, "validate", {**kit.subject.config, UNKNOWN_KEY: True}))
    if ex.code == 0 and not kit.subject.builtin:
        return Result("unknown-key", SKIP, "it accepts unknown config keys (declares no fields)")
    if ex.code == 0 or ex.code is None:
        return Result("unknown-key", FAIL, f"validate with key {UNKNOWN_KEY!r}: it {ex.ended()}, not refused")
    if UNKNOWN_KEY not in error_text(ex):
        return Result("unknown-key", FAIL, f"refused (exit {ex.code}) but the error does not name the key")
    return Result("unknown-key", PASS, f"refused with exit {ex.code}, naming the key")


def _not_applicable(kit: Kit, rule: str) -> Result | None:
    """The SKIP of a rule that needs a v1 provider and a live system, or None when it applies."""
    if kit.legacy:
        return Result(rule, SKIP, LEGACY)
    if kit.subject.needs_server:
        return Result(rule, SKIP, NEEDS_SERVER)
    return None


def rule_apply(kit: Kit) -> Result:
    """plan, then init with exactly the plan's changes: a resource reported for each change."""
    skipped = _not_applicable(kit, "apply")
    if skipped:
        return skipped
    plan = talk(kit.subject, envelope(kit.subject, "plan"))
    changes = [{k: v for k, v in obj.items() if k != "type"} for obj in messages(plan, "change")]
    ex = talk(kit.subject, envelope(kit.subject, "init", changes=tuple(changes)))
    problem = lifecycle_problem("plan", plan) or lifecycle_problem("apply", ex)
    if problem:
        return Result("apply", FAIL, f"init with the plan's changes: {problem}")
    made = [obj["resource"] for obj in messages(ex, "resource") if obj["action"] != "deleted"]
    missing = {c["resource"]["name"] for c in changes if c["action"] != "delete"} - {r["name"] for r in made}
    if missing:
        return Result("apply", FAIL, f"init reported no resource for {', '.join(sorted(missing))}")
    kit.resources = tuple(made)
    return Result("apply", PASS, f"init applied the plan's {len(changes)} change(s), reporting {len(made)} resource(s)")


def rule_destroy_owned(kit: Kit) -> Result:
    """destroy with what apply made: each resource reported deleted (or forgotten), exit 0."""
    skipped = _not_applicable(kit, "destroy-owned")
    if skipped:
        return skipped
    ex = talk(kit.subject, owned(kit, "destroy"))
    problem = lifecycle_problem("destroy-owned", ex)
    if problem:
        return Result("destroy-owned", FAIL, problem)
    left = {r["name"] for r in kit.resources} - {obj["resource"]["name"] for obj in messages(ex, "resource") if obj["action"] == "deleted"}
    if left:
        return Result("destroy-owned", FAIL, f"destroy did not report {', '.join(sorted(left))} deleted")
    return Result("destroy-owned", PASS, f"destroy removed the {len(kit.resources)} resource(s) apply made")


def messages(ex: Exchange, kind: str) -> list[dict[str, Any]]:
    """The valid stdout messages of one type."""
    found = []
    for _, raw in ex.lines():
        obj, _ = parse(raw)
        if obj is not None and obj.get("type") == kind and kind in SHAPES and not SHAPES[kind](obj):
            found.append(obj)
    return found


# --- inputs: run ---------------------------------------------------------------------------


def position_key(position: Any) -> str:
    return json.dumps(position, sort_keys=True, separators=(",", ":"))


def data_problem(lineno: int, raw: bytes, legacy: bool) -> str | None:
    """An input's run writes only data lines (with stream and position) and position lines."""
    obj, problem = parse(raw)
    if obj is None:
        return f"stdout line {lineno} {problem}"
    if obj.get("type") == "position":
        return None if not SHAPES["position"](obj) else f"stdout line {lineno}: a position line without stream and position"
    if "type" in obj:
        return f"stdout line {lineno} has type {obj['type']!r}: a run's stdout carries only data and position lines"
    if "data" not in obj and "metadata" not in obj:
        return f"stdout line {lineno} is neither a change (data, metadata) nor a position line"
    if legacy:
        return None if obj.get("stream") or _named(obj.get("metadata"), "TableName") else f"stdout line {lineno} names no stream"
    if not _named(obj, "stream") or obj.get("position") is None:
        return f"stdout line {lineno} is a change without stream and position"
    return None


def changes_of(ex: Exchange) -> list[tuple[str, str]]:
    """(stream, position key) of each change an input wrote."""
    found = []
    for _, raw in ex.lines():
        obj, _ = parse(raw)
        if obj is not None and "type" not in obj and isinstance(obj.get("stream"), str):
            found.append((obj["stream"], position_key(obj.get("position"))))
    return found


def run_problem(kit: Kit, ex: Exchange, what: str) -> str | None:
    if ex.code is None:
        return f"{what}: still running after {COMMAND_TIMEOUT:g}s (killed)"
    if ex.code != 0:
        return f"{what}: exited {ex.code}: {_last_words(ex)}"
    if ex.stdout and not ex.stdout.endswith(b"\n"):
        return f"{what}: the last stdout line has no newline"
    for lineno, raw in ex.lines():
        problem = data_problem(lineno, raw, kit.legacy)
        if problem:
            return problem
    return stderr_problem(ex.stderr)


def rule_run_once(kit: Kit) -> Result:
    if kit.subject.needs_server:
        return Result("run-once", SKIP, NEEDS_SERVER)
    kit.once = ex = talk(kit.subject, envelope(kit.subject, "run", once=True))
    problem = run_problem(kit, ex, "run with once: true")
    if problem:
        return Result("run-once", FAIL, problem)
    note = " (legacy: no positions, nothing can be checkpointed)" if kit.legacy else ""
    return Result("run-once", PASS, f"exit 0 after {len(ex.lines())} data line(s){note}")


def once_changes(kit: Kit) -> list[tuple[str, str]]:
    """(stream, position key) of each change the run-once rule's run wrote, when it succeeded."""
    return changes_of(kit.once) if kit.once is not None and kit.once.code == 0 else []


def rule_resume(kit: Kit) -> Result:
    """Resuming from a change's position must not emit that change (or any before it) again."""
    if kit.legacy:
        return Result("resume", SKIP, LEGACY + "; no positions to resume from")
    if kit.subject.needs_server:
        return Result("resume", SKIP, NEEDS_SERVER)
    changes = once_changes(kit)
    if not changes:
        return Result("resume", SKIP, "run-once emitted no change to resume from")
    stream, first = changes[0]
    after = [key for s, key in changes[1:] if s == stream]
    ex = talk(kit.subject, envelope(kit.subject, "run", once=True, checkpoints={stream: json.loads(first)}))
    problem = run_problem(kit, ex, "run from a checkpoint")
    if problem:
        return Result("resume", FAIL, problem)
    resumed = [key for s, key in changes_of(ex) if s == stream]
    if first in resumed:
        return Result("resume", FAIL, f"from the checkpoint {first} of {stream} it emitted that change again")
    if resumed != after:
        return Result("resume", FAIL, f"from the checkpoint {first} of {stream} it emitted {len(resumed)} change(s) of it, not the {len(after)} after it")
    return Result("resume", PASS, f"from the checkpoint {first} of {stream} it emitted the {len(after)} change(s) after it")


def rule_sigterm_input(kit: Kit) -> Result:
    if kit.subject.needs_server:
        return Result("sigterm", SKIP, NEEDS_SERVER)
    config = kit.subject.follow_config or kit.subject.config
    conversation = Conversation(kit.subject)
    conversation.write(envelope(kit.subject, "run", config))
    conversation.wait_first_line(FIRST_LINE_TIMEOUT)
    time.sleep(SETTLE)  # an input with only a few lines ends by itself now: that is no SIGTERM test
    if conversation.proc.poll() is not None:
        ex = conversation.finish(1)
        if ex.code == 0:
            return Result("sigterm", SKIP, "it ended by itself before SIGTERM (give a --config that keeps it running)")
        return Result("sigterm", FAIL, f"run {ex.ended()} before SIGTERM: {_last_words(ex)}")
    signalled = time.monotonic()
    conversation.terminate()
    ex = conversation.finish(STOP_WITHIN)
    took = time.monotonic() - signalled
    if ex.code is None:
        return Result("sigterm", FAIL, f"still running {STOP_WITHIN:g}s after SIGTERM (killed)")
    if ex.code != 0:
        return Result("sigterm", FAIL, f"exited {ex.code} after SIGTERM, not 0")
    if ex.stdout and not ex.stdout.endswith(b"\n"):
        return Result("sigterm", FAIL, "stopped mid-line: the last stdout line has no newline")
    problem = next((p for n, raw in ex.lines() if (p := data_problem(n, raw, kit.legacy))), None)
    if problem:
        return Result("sigterm", FAIL, problem)
    return Result("sigterm", PASS, f"exit 0 {took:.1f}s after SIGTERM, at a line boundary")


def reported_streams(kit: Kit) -> list[dict[str, Any]]:
    """The streams an input reported in validate (or, without that, named in its run-once changes)."""
    for obj in messages(kit.validate, "streams"):
        return [s for s in obj["streams"] if _named(s, "name")]
    return [{"name": n} for n in dict.fromkeys(s for s, _ in once_changes(kit))]


def table_of(stream: dict[str, Any]) -> str:
    """What a user types after `dstream snapshot --table` for this stream: schema.table where known."""
    table = stream.get("table") or stream["name"]
    return f"{stream['schema']}.{table}" if stream.get("schema") else table


def rule_snapshot(kit: Kit) -> Result:
    """On-demand snapshots are optional; an input that takes them answers exactly one checkpoint for the
    target's stream (section 4), a run from it is a valid run, and an unknown table is refused by name."""
    skipped = _not_applicable(kit, "snapshot")
    if skipped:
        return skipped
    streams = reported_streams(kit)
    if not streams:
        return Result("snapshot", SKIP, "it reports no stream to snapshot")
    stream, target = streams[0]["name"], table_of(streams[0])
    # the stream's checkpoint as a run would leave it: its last change
    current = [key for s, key in once_changes(kit) if s == stream]
    sent = {stream: json.loads(current[-1])} if current else {}

    def snapshot(table: str) -> Exchange:
        return talk(kit.subject, envelope(kit.subject, "snapshot", streams=tuple(streams), checkpoints=sent, target=table))

    ex = snapshot(target)
    if ex.code != 0 and ex.code is not None:
        return Result("snapshot", SKIP, f"it refuses the snapshot command (exit {ex.code}: {_last_words(ex)})")
    problem = lifecycle_problem("snapshot", ex)
    if problem:
        return Result("snapshot", FAIL, f"snapshot --table {target}: {problem}")
    answered = messages(ex, "checkpoint")
    if not answered:
        return Result("snapshot", SKIP, "it does not support on-demand snapshots (no checkpoint answered)")
    if len(answered) != 1 or answered[0]["stream"] != stream:
        told = ", ".join(a["stream"] for a in answered)
        return Result("snapshot", FAIL, f"snapshot --table {target}: checkpoints for {told}, not exactly one for {stream}")
    unknown = snapshot(UNKNOWN_TABLE)
    if unknown.code == 0 or unknown.code is None:
        return Result("snapshot", FAIL, f"snapshot --table {UNKNOWN_TABLE}: it {unknown.ended()}, not refused")
    if UNKNOWN_TABLE.rpartition(".")[2] not in error_text(unknown):
        return Result("snapshot", FAIL, f"snapshot --table {UNKNOWN_TABLE}: refused (exit {unknown.code}) but the error does not name the table")
    run = talk(kit.subject, envelope(kit.subject, "run", once=True, checkpoints={**sent, stream: answered[0]["position"]}))
    problem = run_problem(kit, run, "run from the snapshot's checkpoint")
    if problem:
        return Result("snapshot", FAIL, problem)
    rows = sum(1 for s, _ in changes_of(run) if s == stream)
    return Result("snapshot", PASS, f"one checkpoint for {stream}, from which a run read {rows} change(s) of it; an unknown table is refused")


def rule_legacy_input(kit: Kit) -> Result:
    """A bare config (no "command") is run: data comes out, not hello."""
    if kit.subject.needs_server:
        return Result("legacy-mode", SKIP, NEEDS_SERVER)
    conversation = Conversation(kit.subject)
    conversation.write(line(kit.subject.config))
    conversation.wait_first_line(FIRST_LINE_TIMEOUT)
    conversation.terminate()
    ex = conversation.finish(STOP_WITHIN)
    lines = ex.lines()
    if not lines:
        return Result("legacy-mode", FAIL, f"a bare config: no data on stdout (it {ex.ended()})")
    problem = data_problem(*lines[0], legacy=True)
    if problem:
        return Result("legacy-mode", FAIL, f"a bare config is not run: {problem}")
    return Result("legacy-mode", PASS, "a bare config is run: it wrote data")


# --- outputs: run ----------------------------------------------------------------------------


def change(stream: str, i: int) -> bytes:
    return line({"data": {"ID": i, "Name": f"check-{i}"}, "metadata": {"TableName": stream, "Schema": "dbo", "OperationType": "Insert"},
                 "stream": stream, "position": {"i": i}})


A, B = STREAMS[0]["name"], STREAMS[1]["name"]
# what the acks rule sends after the envelope: changes, a position-only line, a warning to ignore
RUN_LINES = (change(A, 1), change(B, 1), change(A, 2), line({"type": "position", "stream": A, "position": {"i": 3}}),
             line({"type": "warning", "message": "a warning in the data stream is ignored"}), change(B, 2))
RUN_SENT = {A: [position_key({"i": i}) for i in (1, 2, 3)], B: [position_key({"i": i}) for i in (1, 2)]}


@dataclass
class Acks:
    """What an output acknowledged, per stream in order, or the first invalid line."""

    by_stream: dict[str, list[str]] = field(default_factory=dict)
    problem: str | None = None
    error: str | None = None  # an error line it wrote


def read_acks(ex: Exchange, sent: dict[str, list[str]]) -> Acks:
    acks = Acks()
    created: set[str] = set()
    for lineno, raw in ex.lines():
        acks.problem = reply_problem(lineno, raw, RUN_REPLY_TYPES)
        if acks.problem:
            return acks
        obj, _ = parse(raw)
        assert obj is not None
        if obj["type"] == "error":
            acks.error = obj["message"]
        elif obj["type"] == "resource":
            created.add(obj["resource"]["name"])
        elif obj["type"] == "checkpoint":
            acks.problem = _ack_problem(lineno, obj, sent, created, acks.by_stream)
            if acks.problem:
                return acks
            acks.by_stream.setdefault(obj["stream"], []).append(position_key(obj["position"]))
    return acks


def _ack_problem(lineno: int, ack: dict[str, Any], sent: dict[str, list[str]], created: set[str], acked: dict[str, list[str]]) -> str | None:
    stream, key = ack["stream"], position_key(ack["position"])
    if stream not in sent and stream not in created:
        return f"stdout line {lineno} acknowledges stream {stream!r}, which it was never given"
    if key not in sent.get(stream, []):
        return f"stdout line {lineno} acknowledges position {key} of {stream}, which it never received"
    before = acked.get(stream)
    if before and sent[stream].index(key) < sent[stream].index(before[-1]):
        return f"stdout line {lineno} acknowledges {stream} back at {key}, after {before[-1]}"
    return None


def rule_run_acks(kit: Kit) -> Result:
    if kit.subject.needs_server:
        return Result("run-acks", SKIP, NEEDS_SERVER)
    ex = talk(kit.subject, owned(kit, "run") + b"".join(RUN_LINES))
    problem = acks_problem(kit, ex, RUN_SENT)
    return Result("run-acks", FAIL, problem) if problem else Result("run-acks", PASS, _acked_note(kit, ex))


def acks_problem(kit: Kit, ex: Exchange, sent: dict[str, list[str]]) -> str | None:
    """Exit 0, valid acks only, and the last position of every stream acknowledged at EOF."""
    acks = read_acks(ex, sent)
    if acks.problem or acks.error:
        return acks.problem or f"it reported an error: {acks.error}"
    if ex.code != 0:
        return f"{ex.ended()} at EOF: {_last_words(ex)}"
    if not (kit.legacy and not acks.by_stream):
        for stream, positions in sent.items():
            last = acks.by_stream.get(stream, [None])[-1]
            if last != positions[-1]:
                return f"at EOF the last position of {stream} ({positions[-1]}) is not acknowledged (last ack: {last})"
    return stderr_problem(ex.stderr)


def _acked_note(kit: Kit, ex: Exchange) -> str:
    if kit.legacy and not ex.lines():
        return "legacy output: exit 0, acknowledges nothing"
    return "exit 0, only positions it received, the last of each stream acknowledged at EOF"


def rule_malformed_line(kit: Kit) -> Result:
    """Line 3 (the second data line) is not JSON: fail naming line 3, after acknowledging line 2."""
    skipped = _not_applicable(kit, "malformed-line")
    if skipped:
        return skipped
    ex = talk(kit.subject, owned(kit, "run") + change(A, 1) + b"this line is not JSON {\n" + change(A, 2))
    acks = read_acks(ex, {A: RUN_SENT[A][:2]})
    if ex.code == 0 or ex.code is None:
        return Result("malformed-line", FAIL, f"a malformed line 3: it {ex.ended()}, not a failure")
    if acks.problem:
        return Result("malformed-line", FAIL, acks.problem)
    if not re.search(r"\bline 3\b", error_text(ex)):
        return Result("malformed-line", FAIL, f"exit {ex.code}, but no message names line 3")
    if acks.by_stream.get(A, [None])[-1] != RUN_SENT[A][0]:
        return Result("malformed-line", FAIL, "the change on line 2 was not acknowledged before the failure")
    if RUN_SENT[A][1] in acks.by_stream.get(A, []):
        return Result("malformed-line", FAIL, "it acknowledged line 4, past the malformed line")
    return Result("malformed-line", PASS, f"exit {ex.code} naming line 3, after acknowledging line 2")


def rule_sigterm_output(kit: Kit) -> Result:
    """An output does not stop early on SIGTERM: it drains to EOF and acknowledges all."""
    skipped = _not_applicable(kit, "sigterm")
    if skipped:
        return skipped
    conversation = Conversation(kit.subject)
    conversation.write(owned(kit, "run") + change(A, 1), close=False)
    conversation.wait_first_line(FIRST_LINE_TIMEOUT)
    conversation.terminate()
    time.sleep(0.2)
    conversation.write(change(A, 2))
    ex = conversation.finish(STOP_WITHIN)
    if ex.code is None:
        return Result("sigterm", FAIL, f"still running {STOP_WITHIN:g}s after SIGTERM and EOF (killed)")
    problem = acks_problem(kit, ex, {A: RUN_SENT[A][:2]})
    if problem:
        return Result("sigterm", FAIL, f"after SIGTERM, {problem}")
    return Result("sigterm", PASS, "after SIGTERM it drained to EOF, acknowledged all and exited 0")


def rule_legacy_output(kit: Kit) -> Result:
    """A bare config (no "command") is run: it ends as a run envelope with that config does, without hello."""
    if kit.subject.needs_server:
        return Result("legacy-mode", SKIP, NEEDS_SERVER)
    data = change(A, 1) + change(B, 1)
    bare = talk(kit.subject, line(kit.subject.config) + data)
    if bare.lines() and not is_legacy(bare):
        return Result("legacy-mode", FAIL, "a bare config is not run: it answered hello")
    acks = read_acks(bare, {A: RUN_SENT[A][:1], B: RUN_SENT[B][:1]})
    if acks.problem:
        return Result("legacy-mode", FAIL, f"a bare config: {acks.problem}")
    as_run = talk(kit.subject, envelope(kit.subject, "run", streams=()) + data)
    if outcome(bare) != outcome(as_run):
        return Result("legacy-mode", FAIL, f"a bare config ended {outcome(bare)}, a run envelope with it {outcome(as_run)}")
    return Result("legacy-mode", PASS, f"a bare config is run (both {outcome(bare)})")


def outcome(ex: Exchange) -> str:
    """How a run ended, in words: exit code, message types, error text."""
    kinds = [str((parse(raw)[0] or {}).get("type")) for _, raw in ex.lines()]
    acks = read_acks(ex, {})
    text = f"{ex.ended()}, stdout {' '.join(kinds) or 'empty'}"
    return text + (f", error {acks.error!r}" if acks.error else "")


# --- secrets ---------------------------------------------------------------------------------


def secret_needles(values: Iterable[str]) -> tuple[str, ...]:
    """What must never be echoed: each secret value, and the key parts of connection strings among them."""
    return tuple(n for v in values for n in (v, *(m.strip() for m in CREDENTIAL_PART.findall(v) if len(m.strip()) >= 6)))


def rule_no_secret(kit: Kit) -> Result:
    config, needles, why = _secret_config(kit)
    if not needles:
        return Result("no-secret-echo", SKIP, why)
    commands = ["validate"] if kit.subject.needs_server else ["validate", "plan", "status", "run"]
    for command in commands:
        ex = talk(kit.subject, _secret_stdin(kit, command, config))
        for where, text in (("stdout", ex.stdout.decode("utf-8", "replace")), ("stderr", ex.stderr)):
            if any(n in text for n in needles):
                return Result("no-secret-echo", FAIL, f"{command} echoed the value of {why} on {where}")
    return Result("no-secret-echo", PASS, f"the value of {why} never appeared ({', '.join(commands)})")


def _secret_config(kit: Kit) -> tuple[dict[str, Any], tuple[str, ...], str]:
    """The config to test with, its secrets, and which key holds them (or why there is none)."""
    subject = kit.subject
    if subject.secret_needles:
        what = f"secret key {subject.secret_key!r}" if subject.secret_key else "its config's secret values"
        return subject.config, subject.secret_needles, what
    if subject.builtin:
        return subject.config, (), "it has no secret config key"
    token = "dstream-check-" + secrets.token_hex(12)
    config = {**subject.config, "password": token}
    ex = talk(subject, envelope(subject, "validate", config))
    if ex.code != 0:
        return config, (), "it refuses an added 'password' key and its config holds no secret"
    return config, (token,), "an added 'password' key"


def _secret_stdin(kit: Kit, command: str, config: dict[str, Any]) -> bytes:
    if command != "run":
        return envelope(kit.subject, command, config)
    if kit.subject.role == "input":
        return envelope(kit.subject, "run", config, once=True)
    return envelope(kit.subject, "run", config) + change(A, 1)


# --- the whole check ---------------------------------------------------------------------------

Rule = Callable[[Kit], Result]
COMMON: tuple[Rule, ...] = (rule_hello, *(lifecycle_rule(c) for c in LIFECYCLE_COMMANDS), rule_unknown_command, rule_unknown_key)
RULES: dict[str, tuple[Rule, ...]] = {
    "input": (*COMMON, rule_legacy_input, rule_apply, rule_run_once, rule_resume, rule_snapshot, rule_sigterm_input, rule_no_secret,
              rule_destroy_owned),
    "output": (*COMMON, rule_legacy_output, rule_apply, rule_run_acks, rule_malformed_line, rule_sigterm_output, rule_no_secret,
               rule_destroy_owned),
}


def masked(result: Result, needles: Iterable[str]) -> Result:
    reason = result.reason
    for needle in sorted(filter(None, needles), key=len, reverse=True):  # the longest first: a key part inside a connection string
        reason = reason.replace(needle, "***")
    return Result(result.rule, result.outcome, reason)


def check(subject: Subject, on_result: Callable[[Result], None] = lambda r: None) -> list[Result]:
    """Run every rule of the subject's role, in order; `on_result` hears each as it is decided.
    Reasons quote what the provider said, so its secret values are masked there."""
    kit = Kit.start(subject)
    results = []
    for rule in RULES[subject.role]:
        result = masked(rule(kit), subject.secret_needles)
        on_result(result)
        results.append(result)
    return results


# --- what to check -------------------------------------------------------------------------------


def builtin_subject(name: str, process: ProviderProcess, role: str, workdir: Path, config: dict[str, Any] | None,
                    secret_values: Iterable[str] = ()) -> Subject:
    """A built-in, with the given config (whose secrets the caller names) or its documented minimal one (made in `workdir`)."""
    secret_key = SECRET_KEYS.get(name)
    if config is not None:
        return Subject(name, process, role, config, builtin=True, secret_key=secret_key, secret_needles=secret_needles(secret_values))
    token = "dstream-check-" + secrets.token_hex(12)
    make = MINIMAL_CONFIGS.get(name)
    config, follow, needs_server = make(workdir, token) if make is not None else ({}, None, False)
    needles = (token,) if secret_key else ()
    return Subject(name, process, role, config, follow, True, secret_key, needs_server, needles)


def external_subject(path: Path, process: ProviderProcess, role: str | None, config: dict[str, Any], secret_values: Iterable[str] = ()) -> Subject:
    """Any executable; without a role, its validate reply tells (an input reports streams or writes data)."""
    needles = secret_needles(secret_values)
    subject = Subject(str(path), process, role or "output", config, secret_needles=needles)
    if role is not None:
        return subject
    validate = talk(subject, envelope(subject, "validate", streams=()))
    for _, raw in validate.lines():
        obj, _ = parse(raw)
        if obj is not None and (obj.get("type") == "streams" or "data" in obj):
            return Subject(**{**subject.__dict__, "role": "input"})
    return subject


def _jsonl(workdir: Path, token: str) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    (workdir / "changes.jsonl").write_bytes(b"".join(change(s, i) for s, i in ((A, 1), (B, 1), (A, 2), (A, 3))))
    return {"path": "changes.jsonl", "poll_interval": 0.1}, None, False


def _mssql(workdir: Path, token: str) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    connection = f"DRIVER={{ODBC Driver 18 for SQL Server}};SERVER=127.0.0.1,1;DATABASE=check;UID=check;PWD={token}"
    return {"connection_string": connection, "tables": [A]}, None, True


def _asb(workdir: Path, token: str) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    connection = f"Endpoint=sb://check.servicebus.windows.net/;SharedAccessKeyName=check;SharedAccessKey={token}"
    ids = {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "check", "namespace": "check"}
    return {**ids, "connection_string": connection}, None, True


# each built-in's documented minimal config: (config, config for a run that keeps going, needs a server)
MINIMAL_CONFIGS: dict[str, Callable[[Path, str], tuple[dict[str, Any], dict[str, Any] | None, bool]]] = {
    "jsonl": _jsonl,
    "generator": lambda w, t: ({"count": 5}, {"count": 0}, False),
    "files": lambda w, t: ({"directory": "out"}, None, False),
    "mssql-cdc": _mssql,
    "asb-queues": _asb,
}
SECRET_KEYS = {"mssql-cdc": "connection_string", "asb-queues": "connection_string"}
