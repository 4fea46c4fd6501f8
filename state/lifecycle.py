"""The task lifecycle: asks both providers, turns replies into plans and state.

Callers (the CLI) hold the locks; this module reads and writes state through
the StateManager. What providers say is applied and stored as they said it
(only values under secret keys are masked in state and saved plans); what is
shown or logged passes the Redactor.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from host.pipeline import Pipeline, RunResult
from host.process import DEFAULT_TIMEOUTS, HostError, ProviderProcess, Timeouts, converse
from providers import ENVIRONMENT
from providers.protocol import Envelope
from state.backend import STATE_LOCK, Backend, StateManager, held
from state.config import Task
from state.errors import DstreamError, ProviderError, StateError
from state.model import Checkpoints, Resource, StateFile
from state.plan import Change, Drift, Plan, change_from_message, config_digest, drift_from_message
from state.secrets import SENSITIVE, Redactor, find_secrets, is_secret_key, mask_credentials

log = logging.getLogger("dstream")
ROLES = ("input", "output")
NOT_INITIALISED = "task {task} has not been initialised"
RECORD_LOCK_TIMEOUT = 60.0  # seconds a run waits for the state lock to record a resource
LogSink = Callable[[str, str], None]  # (provider label, stderr line)


@dataclass
class Session:
    task: Task
    backend: Backend
    manager: StateManager
    redactor: Redactor
    builtins: dict[str, tuple[str, str, str]]
    on_log: LogSink
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    @classmethod
    def open(cls, task: Task, backend: Backend, version: str, builtins: dict[str, tuple[str, str, str]], on_log: LogSink,
             timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Session:
        secrets = find_secrets(task.input.config) | find_secrets(task.output.config) | find_secrets(task.backend.settings)
        return cls(task, backend, StateManager(backend.store, task.name, version), Redactor(secrets), builtins, on_log, timeouts)

    def process(self, role: str) -> ProviderProcess:
        """How to start a provider. It inherits the locks held now, so it holds them until it exits, even past dstream."""
        spec = self.task.provider(role)
        label = f"{role}:{spec.name}"
        keep = tuple(self.backend.locker.held_fds())
        if spec.executable is not None:
            return ProviderProcess.external(label, spec.executable, self.task.directory, keep, self.timeouts)
        return ProviderProcess.builtin(label, self.builtins[spec.name][0], self.task.directory, ENVIRONMENT.get(spec.name, ()), keep, self.timeouts)

    def envelope(self, role: str, command: str, state: StateFile, streams: tuple[dict[str, Any], ...], **extra: Any) -> Envelope:
        return Envelope(
            command=command, config=self.task.provider(role).config, task=self.task.name, role=role,
            streams=streams, resources=tuple(r.for_provider() for r in state.owned_by(role)), **extra,
        )

    def digest(self) -> str:
        configs = {role: {"provider": self.task.provider(role).name, "config": self.redactor.document(self.task.provider(role).config)} for role in ROLES}
        return config_digest(configs)

    def relay(self, label: str) -> Callable[[str], None]:
        """Shows a provider's stderr line: redacted, without the provider's own name prefix ("files: ...")."""
        name = label.split(":", 1)[-1]
        return lambda line: self.on_log(label, self.redactor.text(_unprefixed(line, name)))

    def collector(self, role: str) -> _Collector:
        return _Collector(role, self.task.provider(role).name, self.shown)

    def shown(self, text: str) -> str:
        """Text for a terminal or a pipe: every known secret masked."""
        return self.redactor.text(text)

    def shown_document(self, doc: Any) -> Any:
        """A report to render: every string masked, value by value (masking rendered JSON could break it)."""
        return self.redactor.document(doc)

    def shown_plan(self, plan: Plan) -> Plan:
        """The plan to render for people or --json, with every known secret masked."""
        return _map_plan(plan, self.redactor.document)

    def ask(self, role: str, envelope: Envelope, on_message: Callable[[dict[str, Any]], None]) -> bool:
        """One lifecycle conversation; False when the provider is legacy. Errors become ProviderError."""
        process = self.process(role)
        try:
            return converse(process, envelope, on_message, self.relay(process.label))
        except HostError as exc:
            raise self.provider_error(role, exc) from None

    def provider_error(self, role: str, exc: HostError) -> ProviderError:
        spec = self.task.provider(role)
        where = self.task.where(role, "config", exc.key) if exc.key else self.task.where(role)
        message = exc.message
        if exc.line is not None:
            message += ": " + self.redactor.raw(exc.line.strip(), 80)
        if exc.stderr_tail and "exited with code" in message:
            message += f"; last log line: {self.redactor.snippet(_unprefixed(exc.stderr_tail[-1], spec.name), 300)}"
        if exc.stderr_tail and not log.isEnabledFor(logging.INFO):  # its log was not shown as it ran
            relay = logging.getLogger(f"dstream.{role}:{spec.name}")
            for line in exc.stderr_tail[-5:]:
                relay.error("%s", self.redactor.text(line))
        return ProviderError(self.redactor.text(f"{where}: {role} provider '{spec.name}': {message}"), hint=self.redactor.text(exc.hint) if exc.hint else None)


def _unprefixed(line: str, provider: str) -> str:
    """dstream labels relayed lines itself: a provider's own "name: " prefix would double it."""
    own = provider + ": "
    return line[len(own):] if line.startswith(own) else line


def stored(value: Any, key: str = "") -> Any:
    """A copy fit for state and saved plans: values under secret keys and credential assignments
    (`AccountKey=...`) masked. Nothing else is touched: dstream acts on these values, and a
    path that merely contains a word used as a password must stay the path it is."""
    if isinstance(value, dict):
        return {k: stored(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(v, key) for v in value]
    if isinstance(value, str) and value:
        return SENSITIVE if is_secret_key(key) else mask_credentials(value)
    return value


class _Collector:
    """What providers said during one lifecycle command, checked against the protocol."""

    def __init__(self, role: str, provider: str, shown: Callable[[str], str]):
        self.role = role
        self.provider = provider
        self.shown = shown  # warnings are logged as they come, so redacted here
        self.streams: tuple[dict[str, Any], ...] | None = None
        self.changes: list[Change] = []
        self.drift: list[Drift] = []
        self.statuses: list[tuple[tuple[str, str], dict[str, Any]]] = []
        self.checkpoints: dict[str, Any] = {}
        self.warnings: list[str] = []

    def __call__(self, message: dict[str, Any]) -> None:
        """`message` passed the contract's parser (providers.protocol.parse_reply): its shape is right."""
        kind = message["type"]
        if kind == "streams":
            self.streams = tuple(message["streams"])
        elif kind == "change":
            self.changes.append(change_from_message(self.role, self.provider, message))
        elif kind == "drift":
            self.drift.append(drift_from_message(self.role, self.provider, message))
        elif kind == "status":
            self.statuses.append(((message["resource"]["type"], message["resource"]["name"]), message.get("status") or {}))
        elif kind == "checkpoint":
            self.checkpoints[message["stream"]] = message["position"]
        elif kind == "warning":
            self.warnings.append(self.shown(message["message"]))
            log.warning("%s provider '%s': %s", self.role, self.provider, self.warnings[-1])
        elif kind == "resource":
            raise ProviderError(f"{self.role} provider '{self.provider}' broke the protocol: resource messages belong to init and destroy")


# --- validate and plan -------------------------------------------------------------


def validate(session: Session) -> tuple[str, ...]:
    """Both providers check their configs; no network, no state. Returns the streams."""
    state = StateFile.new(session.task.name, "")
    first = session.collector("input")
    session.ask("input", session.envelope("input", "validate", state, (), refresh=False), first)
    streams = first.streams or ()
    session.ask("output", session.envelope("output", "validate", state, streams, refresh=False), session.collector("output"))
    return tuple(s["name"] for s in streams)


def make_plan(session: Session, state: StateFile, refresh: bool) -> Plan:
    collected: dict[str, _Collector] = {}
    legacy: list[str] = []
    streams: tuple[dict[str, Any], ...] = state.streams
    for role in ROLES:
        collector = session.collector(role)
        envelope = session.envelope(role, "plan", state, streams, refresh=refresh)
        if not session.ask(role, envelope, collector):
            legacy.append(role)
            log.warning("%s provider '%s' does not speak protocol v1: treated as managing nothing", role, collector.provider)
        if role == "input" and collector.streams is not None:
            streams = collector.streams
        collected[role] = collector
    return Plan(
        task=session.task.name, lineage=state.lineage if session.manager.exists else "", serial=state.serial,
        config_digest=session.digest(), refreshed=refresh,
        streams=streams,
        changes=tuple(c for role in ROLES for c in collected[role].changes),
        drift=tuple(d for role in ROLES for d in collected[role].drift),
        legacy=tuple(legacy),
        warnings=tuple(w for role in ROLES for w in collected[role].warnings),
    )


def stored_plan(plan: Plan, shown: Callable[[str], str]) -> Plan:
    """The plan as saved to a file: attributes as state keeps them; warnings (only ever shown) redacted."""
    return replace(_map_plan(plan, stored), warnings=tuple(shown(w) for w in plan.warnings))


def _map_plan(plan: Plan, mask: Callable[[Any], Any]) -> Plan:
    changes = tuple(replace(c, before=mask(c.before), after=mask(c.after)) for c in plan.changes)
    drift = tuple(replace(d, before=mask(d.before), after=mask(d.after)) for d in plan.drift)
    return replace(plan, changes=changes, drift=drift, warnings=tuple(mask(w) for w in plan.warnings))


# --- apply (init) and destroy ------------------------------------------------------


class _Recorder:
    """Writes each applied resource to state the moment a provider reports it."""

    def __init__(self, session: Session, state: StateFile, role: str):
        self.session = session
        self.state = state
        self.role = role
        self.provider = session.task.provider(role).name
        self.counts = {"created": 0, "updated": 0, "deleted": 0}
        self.collector = session.collector(role)

    def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] != "resource":
            self.collector(message)
            return
        resource, action = self._parse(message)
        if action in ("created", "updated"):
            self.state = self.session.manager.write(self.state.put(resource))
        else:
            if not any(r.key == resource.key for r in self.state.resources):
                raise ProviderError(f"{self.role} provider '{self.provider}' broke the protocol: it reports deleting {resource.address}, which is not in state")
            self.state = self.session.manager.write(self.state.remove(resource.key))
        self.counts[action] += 1
        log.info("%s: %s (state serial %d)", resource.address, action, self.state.serial)

    def _parse(self, message: dict[str, Any]) -> tuple[Resource, str]:
        res = message["resource"]
        resource = Resource(self.role, self.provider, res["type"], res["name"], stored(str(res.get("id", res["name"]))), stored(res.get("attributes") or {}))
        return resource, message["action"]


def check_applicable(plan: Plan, state: StateFile) -> None:
    """Every delete or replace must name a resource in state: a plan (a saved, maybe edited,
    file) can never make a provider delete what this task does not own."""
    owned = {r.key for r in state.resources}
    for change in plan.changes:
        if change.role not in ROLES:
            raise StateError(f"the plan changes {change.address}, which belongs to no provider role")
        if change.action in ("delete", "replace") and (change.role, change.type, change.name) not in owned:
            raise StateError(f"the plan would {change.action} {change.address}, which is not in state", hint="make a new plan with dstream plan")


def apply(session: Session, state: StateFile, plan: Plan) -> tuple[StateFile, dict[str, int]]:
    """Carry out `plan`; state is persisted after every resource. Caller holds the state and the run lock."""
    check_applicable(plan, state)
    counts = {"created": 0, "updated": 0, "deleted": 0}
    if state.serial == 0:
        state = session.manager.write(state)  # the task now exists, even with nothing to create
    _forget_removed_streams(session, state, plan)
    new_checkpoints: dict[str, Any] = {}
    for role in ROLES:
        if role in plan.legacy:
            continue
        recorder = _Recorder(session, state, role)
        changes = tuple(c.for_provider() for c in plan.for_role(role))
        session.ask(role, session.envelope(role, "init", state, plan.streams, changes=changes), recorder)
        state = recorder.state
        new_checkpoints.update(recorder.collector.checkpoints)
        for action, n in recorder.counts.items():
            counts[action] += n
    if state.streams != plan.streams:
        state = session.manager.write(replace(state, streams=plan.streams))
    if new_checkpoints:
        session.manager.start_checkpoints(new_checkpoints)  # an input's start (CDC start=latest), only where none exists
    return state, counts


def _forget_removed_streams(session: Session, state: StateFile, plan: Plan) -> None:
    """A stream whose output resource is deleted loses its checkpoint first: if it comes back,
    it starts afresh instead of resuming past data its deleted resource held."""
    kept = {s["name"] for s in plan.streams}
    gone = {c.name for c in plan.for_role("output") if c.action == "delete"} - kept
    if gone & set(session.manager.checkpoints().positions):
        session.manager.forget_checkpoints(gone)


def destroy_plan(session: Session, state: StateFile) -> Plan:
    changes = tuple(Change(r.role, r.provider, r.type, r.name, "delete", before=r.attributes) for r in state.resources)
    return Plan(task=session.task.name, lineage=state.lineage if session.manager.exists else "", serial=state.serial,
                config_digest=session.digest(), refreshed=False, streams=state.streams, changes=changes)


def destroy(session: Session, state: StateFile) -> tuple[StateFile, int]:
    """Delete exactly what state owns, output first. Caller holds the state and the run lock.

    The checkpoints go first: a destroy that stops halfway never leaves a
    checkpoint pointing past data whose resource is gone."""
    session.manager.clear_checkpoints()
    deleted = 0
    for role in reversed(ROLES):
        if not state.owned_by(role):
            continue
        recorder = _Recorder(session, state, role)
        if not session.ask(role, session.envelope(role, "destroy", state, state.streams), recorder):
            raise ProviderError(f"{role} provider '{session.task.provider(role).name}' owns resources in state but does not speak protocol v1")
        state = recorder.state
        deleted += recorder.counts["deleted"]
    left = state.resources
    if left:
        raise StateError(f"{len(left)} resource(s) are still in state after destroy: {', '.join(r.address for r in left)}", hint="run dstream destroy again")
    if state.streams:
        state = session.manager.write(replace(state, streams=()))
    return state, deleted


# --- on-demand snapshot ---------------------------------------------------------


def request_snapshot(session: Session, state: StateFile, table: str) -> tuple[str, Any]:
    """Ask the input to mark `table` for a snapshot on the next run; store the position it answers.

    Caller holds the state and the run lock, so no run acknowledges anything meanwhile. The input
    answers one `checkpoint` for the table's stream: its current position plus the request, so
    streaming resumes from where it was after the snapshot. The write is a compare-and-swap against
    the position the input was shown: it never replaces a position it did not see."""
    if state.serial == 0:
        raise DstreamError(NOT_INITIALISED.format(task=session.task.name), hint=f"run: dstream init {os.path.relpath(session.task.file)}")
    sent = dict(session.manager.checkpoints().positions)
    collector = session.collector("input")
    provider = collector.provider
    envelope = session.envelope("input", "snapshot", state, state.streams, checkpoints=sent, target=table)
    unsupported = f"input provider '{provider}' does not support on-demand snapshots (dstream snapshot)"
    if not session.ask("input", envelope, collector):
        raise ProviderError(unsupported, hint="it does not speak protocol v1")
    if len(collector.checkpoints) != 1:
        raise ProviderError(unsupported if not collector.checkpoints else
                            f"input provider '{provider}' broke the protocol: a snapshot answers one checkpoint, it sent {len(collector.checkpoints)}")
    stream, position = next(iter(collector.checkpoints.items()))

    def mark(current: Checkpoints) -> Checkpoints:
        if current.positions.get(stream) != sent.get(stream):
            raise StateError(f"the checkpoint of stream {stream} changed while the snapshot was requested", hint="run dstream snapshot again")
        return current.advance({stream: position})

    session.manager.update_checkpoints(mark)
    return stream, position


# --- status and run ---------------------------------------------------------------


def status(session: Session, state: StateFile, locks: dict[str, Any]) -> dict[str, Any]:
    live: dict[tuple[str, str, str], dict[str, Any]] = {}
    streams = state.streams
    checkpoints = session.manager.checkpoints()
    for role in ROLES:
        collector = session.collector(role)
        session.ask(role, session.envelope(role, "status", state, streams, checkpoints=dict(checkpoints.positions)), collector)
        if role == "input" and collector.streams is not None:
            streams = collector.streams
        for (kind, name), report in collector.statuses:
            live[(role, kind, name)] = report
    names = [s["name"] for s in streams] + sorted(set(checkpoints.positions) - {s["name"] for s in streams})
    return {
        "task": session.task.name,
        "serial": state.serial,
        "lineage": state.lineage,
        "backend": session.backend.description,
        "locks": {name: (holder.as_dict() if holder else None) for name, holder in locks.items()},
        "resources": [{"address": r.address, "id": r.id, "provider": r.provider, "status": live.get(r.key)} for r in state.resources],
        "streams": [{"name": n, "checkpoint": checkpoints.positions.get(n), "updated_at": checkpoints.updated.get(n)} for n in names],
    }


def run(session: Session, once: bool, interval: float = 1.0) -> tuple[RunResult, Checkpoints]:
    """The run verb: stream until the input stops, then fail as the provider that failed first.

    Caller holds the run lock. SIGINT/SIGTERM stop the run cleanly; losing the
    run lock stops it too. Checkpoints are persisted as acked, each write
    merging the acked positions into the stored ones (compare and swap), so a
    start position recorded meanwhile survives."""
    state = session.manager.read()
    if state.serial == 0:
        raise DstreamError(NOT_INITIALISED.format(task=session.task.name), hint=f"run: dstream init {os.path.relpath(session.task.file)}")
    pipeline = Pipeline(session.process("input"), session.process("output"), lambda label, line: session.relay(label)(line))
    lost: list[str] = []

    def on_lost(name: str, why: str) -> None:
        lost.append(why)
        pipeline.stop()

    session.backend.locker.watch(on_lost)
    previous = {sig: signal.signal(sig, lambda s, f: pipeline.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result, checkpoints = _stream(session, state, once, pipeline, interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if lost:
        raise StateError(f"lost the run lock ({lost[0]}); stopped the run", hint="another process may be running this task now: see dstream status")
    _check_run(session, result)
    return result, checkpoints


def _stream(session: Session, state: StateFile, once: bool, pipeline: Pipeline, interval: float) -> tuple[RunResult, Checkpoints]:
    checkpoints = session.manager.checkpoints()
    source = session.envelope("input", "run", state, state.streams, checkpoints=dict(checkpoints.positions), once=once)
    sink = session.envelope("output", "run", state, state.streams, once=once)

    def persist(acked: dict[str, Any]) -> None:
        nonlocal checkpoints
        checkpoints = session.manager.advance_checkpoints(acked)

    def record(message: dict[str, Any]) -> None:
        """A resource the output made while running (e.g. a queue created on demand)."""
        with held(session.backend.locker, STATE_LOCK, "run (recording a resource)", session.manager.version, RECORD_LOCK_TIMEOUT):
            recorder = _Recorder(session, session.manager.read(), "output")
            recorder(message)

    try:
        result = pipeline.run(source, sink, persist, interval, on_resource=record)
    except HostError as exc:  # a provider that could not start
        raise session.provider_error(exc.role or "input", exc) from None
    return result, checkpoints


def _check_run(session: Session, result: RunResult) -> None:
    culprit = result.culprit()  # the provider that failed first: an input killed mid-line is not the output's fault
    if culprit == "input":
        raise session.provider_error("input", HostError(f"exited with code {result.input_code}", stderr_tail=result.input_tail))
    if culprit == "output":
        raise session.provider_error("output", result.failure or HostError(f"exited with code {result.output_code}", stderr_tail=result.output_tail))
    if result.persist_error is not None:
        raise result.persist_error
