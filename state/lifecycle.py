"""The task lifecycle: asks both providers, turns replies into plans and state.

Callers (the CLI) hold the locks; this module reads and writes state through
the StateManager, and everything a provider says passes the Redactor first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from providers.host import HostError, ProviderProcess, converse
from providers.protocol import Envelope
from providers.runner import Pipeline, RunResult
from state.backend import STATE_LOCK, Backend, StateManager, held
from state.config import Task
from state.errors import ProviderError, StateError
from state.model import Checkpoints, Resource, StateFile
from state.plan import Change, Drift, Plan, change_from_message, config_digest, drift_from_message
from state.secrets import Redactor, find_secrets

log = logging.getLogger("dstream")
ROLES = ("input", "output")
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

    @classmethod
    def open(cls, task: Task, backend: Backend, version: str, builtins: dict[str, tuple[str, str, str]], on_log: LogSink) -> Session:
        secrets = find_secrets(task.input.config) | find_secrets(task.output.config) | find_secrets(task.backend.settings)
        return cls(task, backend, StateManager(backend.store, task.name, version), Redactor(secrets), builtins, on_log)

    def process(self, role: str) -> ProviderProcess:
        spec = self.task.provider(role)
        label = f"{role}:{spec.name}"
        if spec.executable is not None:
            return ProviderProcess.external(label, spec.executable, self.task.directory)
        return ProviderProcess.builtin(label, self.builtins[spec.name][0], self.task.directory)

    def envelope(self, role: str, command: str, state: StateFile, streams: tuple[dict[str, Any], ...], **extra: Any) -> Envelope:
        return Envelope(
            command=command, config=self.task.provider(role).config, task=self.task.name, role=role,
            streams=streams, resources=tuple(r.for_provider() for r in state.owned_by(role)), **extra,
        )

    def digest(self) -> str:
        configs = {role: {"provider": self.task.provider(role).name, "config": self.redactor.document(self.task.provider(role).config)} for role in ROLES}
        return config_digest(configs)

    def relay(self, label: str) -> Callable[[str], None]:
        return lambda line: self.on_log(label, self.redactor.text(line))

    def ask(self, role: str, envelope: Envelope, on_message: Callable[[dict[str, Any]], None]) -> bool:
        """One lifecycle conversation; False when the provider is legacy. Errors become ProviderError."""
        process = self.process(role)
        try:
            return converse(process, envelope, lambda m: on_message(self.redactor.document(m)), self.relay(process.label))
        except HostError as exc:
            raise self.provider_error(role, exc) from None

    def provider_error(self, role: str, exc: HostError) -> ProviderError:
        spec = self.task.provider(role)
        where = self.task.where(role, "config", exc.key) if exc.key else self.task.where(role)
        message = exc.message
        if exc.stderr_tail and "exited with code" in message:
            message += f"; last log line: {exc.stderr_tail[-1]}"
        if exc.stderr_tail and not log.isEnabledFor(logging.INFO):  # its log was not shown as it ran
            relay = logging.getLogger(f"dstream.{role}:{spec.name}")
            for line in exc.stderr_tail[-5:]:
                relay.error("%s", self.redactor.text(line))
        return ProviderError(self.redactor.text(f"{where}: {role} provider '{spec.name}': {message}"), hint=self.redactor.text(exc.hint) if exc.hint else None)


class _Collector:
    """What providers said during one lifecycle command."""

    def __init__(self, role: str, provider: str):
        self.role = role
        self.provider = provider
        self.streams: tuple[dict[str, Any], ...] | None = None
        self.changes: list[Change] = []
        self.drift: list[Drift] = []
        self.statuses: list[dict[str, Any]] = []
        self.checkpoints: dict[str, Any] = {}
        self.warnings: list[str] = []

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        try:
            if kind == "streams":
                self.streams = _streams(message["streams"])
            elif kind == "change":
                self.changes.append(change_from_message(self.role, self.provider, message))
            elif kind == "drift":
                self.drift.append(drift_from_message(self.role, self.provider, message))
            elif kind == "status":
                self.statuses.append(message)
            elif kind == "checkpoint":
                self.checkpoints[str(message["stream"])] = message.get("position")
            elif kind == "warning":
                self.warnings.append(str(message.get("message")))
                log.warning("%s provider '%s': %s", self.role, self.provider, message.get("message"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"{self.role} provider '{self.provider}' sent a malformed {kind} message ({exc})") from None


def _streams(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"] for s in value):
        raise ValueError("streams must be a list of objects with a name")
    return tuple(value)


# --- validate and plan -------------------------------------------------------------


def validate(session: Session) -> tuple[str, ...]:
    """Both providers check their configs; no network, no state. Returns the streams."""
    state = StateFile.new(session.task.name, "")
    first = _Collector("input", session.task.input.name)
    session.ask("input", session.envelope("input", "validate", state, (), refresh=False), first)
    streams = first.streams or ()
    session.ask("output", session.envelope("output", "validate", state, streams, refresh=False), _Collector("output", session.task.output.name))
    return tuple(s["name"] for s in streams)


def make_plan(session: Session, state: StateFile, refresh: bool) -> Plan:
    collected: dict[str, _Collector] = {}
    legacy: list[str] = []
    streams: tuple[dict[str, Any], ...] = state.streams
    for role in ROLES:
        collector = _Collector(role, session.task.provider(role).name)
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


# --- apply (init) and destroy ------------------------------------------------------


class _Recorder:
    """Writes each applied resource to state the moment a provider reports it."""

    def __init__(self, session: Session, state: StateFile, role: str):
        self.session = session
        self.state = state
        self.role = role
        self.provider = session.task.provider(role).name
        self.counts = {"created": 0, "updated": 0, "deleted": 0}
        self.collector = _Collector(role, self.provider)

    def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] != "resource":
            self.collector(message)
            return
        try:
            action, res = message["action"], message["resource"]
            resource = Resource(self.role, self.provider, str(res["type"]), str(res["name"]), str(res.get("id", res["name"])), dict(res.get("attributes") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"{self.role} provider '{self.provider}' sent a malformed resource message ({exc})") from None
        if action in ("created", "updated"):
            self.state = self.session.manager.write(self.state.put(resource))
        elif action == "deleted":
            self.state = self.session.manager.write(self.state.remove(resource.key))
        else:
            raise ProviderError(f"{self.role} provider '{self.provider}' reported unknown action {action!r}")
        self.counts[action] += 1
        log.info("%s: %s (state serial %d)", resource.address, action, self.state.serial)


def apply(session: Session, state: StateFile, plan: Plan) -> tuple[StateFile, dict[str, int]]:
    """Carry out `plan`; state is persisted after every resource. Caller holds the state lock."""
    counts = {"created": 0, "updated": 0, "deleted": 0}
    if state.serial == 0:
        state = session.manager.write(state)  # the task now exists, even with nothing to create
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
    _record_start_positions(session, new_checkpoints)
    return state, counts


def _record_start_positions(session: Session, positions: dict[str, Any]) -> None:
    """An input's starting position (e.g. CDC start=latest) is kept only where none exists."""
    if not positions:
        return
    current = session.manager.checkpoints()
    fresh = {s: p for s, p in positions.items() if s not in current.positions}
    if fresh:
        session.manager.write_checkpoints(current.advance(fresh))


def destroy_plan(session: Session, state: StateFile) -> Plan:
    changes = tuple(Change(r.role, r.provider, r.type, r.name, "delete", before=r.attributes) for r in state.resources)
    return Plan(task=session.task.name, lineage=state.lineage if session.manager.exists else "", serial=state.serial,
                config_digest=session.digest(), refreshed=False, streams=state.streams, changes=changes)


def destroy(session: Session, state: StateFile) -> tuple[StateFile, int]:
    """Delete exactly what state owns, output first. Caller holds the state lock."""
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
    session.manager.clear_checkpoints()
    return state, deleted


# --- status and run ---------------------------------------------------------------


def status(session: Session, state: StateFile, locks: dict[str, Any]) -> dict[str, Any]:
    live: dict[tuple[str, str, str], dict[str, Any]] = {}
    streams = state.streams
    checkpoints = session.manager.checkpoints()
    for role in ROLES:
        collector = _Collector(role, session.task.provider(role).name)
        session.ask(role, session.envelope(role, "status", state, streams, checkpoints=dict(checkpoints.positions)), collector)
        if role == "input" and collector.streams is not None:
            streams = collector.streams
        for message in collector.statuses:
            res = message.get("resource") or {}
            live[(role, str(res.get("type")), str(res.get("name")))] = message.get("status") or {}
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


def run(session: Session, state: StateFile, once: bool, pipeline: Pipeline, interval: float = 1.0) -> tuple[RunResult, Checkpoints]:
    """Stream until the input stops. Caller holds the run lock; checkpoints are persisted as acked."""
    checkpoints = session.manager.checkpoints()
    source = session.envelope("input", "run", state, state.streams, checkpoints=dict(checkpoints.positions), once=once)
    sink = session.envelope("output", "run", state, state.streams, once=once)

    def persist(acked: dict[str, Any]) -> None:
        nonlocal checkpoints
        checkpoints = checkpoints.advance(acked)
        session.manager.write_checkpoints(checkpoints)

    def record(message: dict[str, Any]) -> None:
        """A resource the output made while running (e.g. a queue created on demand)."""
        with held(session.backend.locker, STATE_LOCK, "run (recording a resource)", session.manager.version, RECORD_LOCK_TIMEOUT):
            recorder = _Recorder(session, session.manager.read(), "output")
            recorder(session.redactor.document(message))

    result = pipeline.run(source, sink, persist, interval, on_resource=record)
    return result, checkpoints
