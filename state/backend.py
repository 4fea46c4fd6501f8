"""Backends: a tiny blob store and a locker per task, and one generic state manager.

A backend adapter only moves bytes and holds locks; serial, lineage and
"write only if nobody else did" live here, once, for every backend.
"""

from __future__ import annotations

import getpass
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from state.errors import LockedError, StateError, UsageError
from state.model import Checkpoints, StateFile

if TYPE_CHECKING:
    from state.config import BackendSpec

log = logging.getLogger("dstream")

STATE_KEY = "state"
CHECKPOINTS_KEY = "checkpoints"
STATE_LOCK = "state"
RUN_LOCK = "run"
ANY = "*"  # put() precondition: overwrite whatever is there
# user-facing messages that tests assert (as named constants, so both say the same)
ALREADY_RUNNING = "task is already running"
STATE_LOCKED = "state is locked"
# Checkpoint writers that race retry on the fresh copy after a random pause that grows with each try
# (full jitter, as the Azure SDKs back off), so no writer starves behind the others.
CAS_ATTEMPTS = 60
CAS_BACKOFF_MAX = 0.2  # seconds


@dataclass(frozen=True)
class Blob:
    data: bytes
    token: str  # changes whenever the data changes (ETag, content hash)


class Store(Protocol):
    """Bytes under keys, written only if unchanged since read."""

    def get(self, key: str) -> Blob | None: ...

    def put(self, key: str, data: bytes, expect: str | None) -> str:
        """Write and return the new token. `expect`: token read, None = must not exist, ANY.

        Raises StateError when the precondition fails."""
        ...

    def delete(self, key: str) -> None: ...

    def where(self, key: str) -> str:
        """Where a key lives, for messages."""
        ...


@dataclass(frozen=True)
class LockInfo:
    id: str
    operation: str
    who: str
    version: str
    created: str

    @classmethod
    def new(cls, operation: str, version: str) -> LockInfo:
        who = f"{_user()}@{socket.gethostname()} (pid {os.getpid()})"
        return cls(str(uuid.uuid4()), operation, who, version, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def describe(self) -> str:
        return f"held by {self.who} since {self.created} for {self.operation} (lock ID {self.id}, dstream {self.version})"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Locker(Protocol):
    """Named exclusive locks for one task ("state", "run")."""

    def try_lock(self, name: str, info: LockInfo) -> LockInfo | None:
        """Take the lock and return None, or return the holder's info without waiting."""
        ...

    def unlock(self, name: str, info: LockInfo) -> None: ...

    def holder(self, name: str) -> LockInfo | None: ...

    def force_unlock(self, name: str, lock_id: str) -> None:
        """Break a lock only when lock_id is the current holder's id."""
        ...

    def watch(self, callback: Callable[[str, str], None]) -> None:
        """Call back (lock name, reason) if a held lock is lost; locks that cannot be lost ignore it."""
        ...

    def held_fds(self) -> list[int]:
        """File descriptors that hold this process's locks, for providers to inherit, so that a
        provider outliving a killed dstream still holds them; [] where locks are not files."""
        ...


@dataclass(frozen=True)
class Backend:
    store: Store
    locker: Locker
    description: str


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def acquire(locker: Locker, name: str, info: LockInfo, timeout: float, sleep: Callable[[float], None] = time.sleep) -> None:
    """Take a lock, waiting up to `timeout` seconds with backoff (1 s doubling to 16 s)."""
    deadline = time.monotonic() + timeout
    delay = 1.0
    told = False
    while True:
        holder = locker.try_lock(name, info)
        if holder is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            what = ALREADY_RUNNING if name == RUN_LOCK else STATE_LOCKED
            raise LockedError(f"{what}: {holder.describe()}", hint=_lock_hint(name, holder, timeout))
        if not told:
            log.warning("waiting for the %s lock, %s", name, holder.describe())
            told = True
        sleep(min(delay, left))
        delay = min(delay * 2, 16.0)


def _lock_hint(name: str, holder: LockInfo, timeout: float) -> str:
    if name == RUN_LOCK:
        return "wait for it to finish, or pass --lock-timeout to wait"
    return f"retry with --lock-timeout, or if the holder is gone: dstream state unlock TASK {holder.id}"


class StateManager:
    """Reads and writes one task's state: serial +1 per write, lineage fixed, no lost writes.

    Callers that write must hold the task's state lock."""

    def __init__(self, store: Store, task: str, dstream_version: str):
        self.store = store
        self.task = task
        self.version = dstream_version
        self._token: str | None = None
        self._read_serial = 0
        self._lineage = ""

    def read(self) -> StateFile:
        """The current state; a new empty one (serial 0) when none exists yet."""
        blob = self.store.get(STATE_KEY)
        if blob is None:
            token, state = None, StateFile.new(self.task, self.version)
        else:
            state = StateFile.from_json(blob.data, self.store.where(STATE_KEY))
            if state.task != self.task:
                raise StateError(f"state at {self.store.where(STATE_KEY)} belongs to task {state.task!r}, not {self.task!r}")
            token = blob.token
        # only a state that parsed may be written over: an unusable one stays as it is
        self._token, self._read_serial, self._lineage = token, state.serial, state.lineage
        return state

    @property
    def exists(self) -> bool:
        """Whether the last read() found a persisted state."""
        return self._token is not None

    def write(self, state: StateFile) -> StateFile:
        """Persist `state` as serial read+1; refuse another lineage or a concurrent write."""
        if state.lineage != self._lineage:
            raise StateError(f"refusing to overwrite state of lineage {self._lineage} with lineage {state.lineage}")
        new = replace(state, serial=self._read_serial + 1, dstream_version=self.version)
        self._token = self.store.put(STATE_KEY, new.to_json(), self._token)
        self._read_serial = new.serial
        return new

    def checkpoints(self) -> Checkpoints:
        blob = self.store.get(CHECKPOINTS_KEY)
        if blob is None:
            return Checkpoints(self.task)
        return Checkpoints.from_json(blob.data, self.store.where(CHECKPOINTS_KEY))

    def push(self, state: StateFile, force: bool) -> StateFile:
        """Replace the state with another copy (migration between backends).

        Refuses another lineage or an older serial unless `force`; an empty
        backend takes the pushed state as it is. Caller holds the state lock."""
        current = self.read()
        if self._token is not None and not force:
            if state.lineage != current.lineage:
                raise StateError(f"refusing to push state of lineage {state.lineage} over lineage {current.lineage}", hint="pass --force to replace it anyway")
            if state.serial < current.serial:
                raise StateError(f"refusing to push serial {state.serial} over newer serial {current.serial}", hint="pass --force to replace it anyway")
        if state.task != self.task:
            raise StateError(f"the pushed state belongs to task {state.task!r}, not {self.task!r}")
        serial = max(state.serial, current.serial + 1 if self._token is not None else state.serial)
        new = replace(state, serial=serial, dstream_version=self.version)
        self._token = self.store.put(STATE_KEY, new.to_json(), self._token)
        self._read_serial, self._lineage = new.serial, new.lineage
        return new

    def update_checkpoints(self, change: Callable[[Checkpoints], Checkpoints]) -> Checkpoints:
        """Read, change and write the checkpoints as one compare-and-swap, retried on conflict.

        A run and an init may both write checkpoints (the run its acks, init an
        input's start positions): each applies its own change to what is stored
        now, so neither erases the other's."""
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, min(CAS_BACKOFF_MAX, 0.005 * 2 ** attempt)))
            blob = self.store.get(CHECKPOINTS_KEY)
            current = Checkpoints(self.task) if blob is None else Checkpoints.from_json(blob.data, self.store.where(CHECKPOINTS_KEY))
            token = None if blob is None else blob.token
            new = change(current)
            if new == current:
                return current
            try:
                self.store.put(CHECKPOINTS_KEY, new.to_json(), token)
                return new
            except StateError:
                latest = self.store.get(CHECKPOINTS_KEY)
                if (None if latest is None else latest.token) == token:
                    raise  # not a lost race: the write itself failed
        raise StateError(f"checkpoints at {self.store.where(CHECKPOINTS_KEY)} keep changing under this process", hint="another process writes them; see dstream status")

    def advance_checkpoints(self, positions: dict[str, Any]) -> Checkpoints:
        """Store acknowledged positions, keeping every other stream's checkpoint as stored."""
        return self.update_checkpoints(lambda current: current.advance(positions))

    def start_checkpoints(self, positions: dict[str, Any]) -> Checkpoints:
        """Store an input's starting positions only for streams that have no checkpoint."""
        return self.update_checkpoints(lambda current: current.advance({s: p for s, p in positions.items() if s not in current.positions}))

    def forget_checkpoints(self, streams: Iterable[str]) -> Checkpoints:
        return self.update_checkpoints(lambda current: current.without(streams))

    def write_checkpoints(self, checkpoints: Checkpoints) -> None:
        """Overwrite every checkpoint (state push). Caller holds the state and the run lock."""
        self.store.put(CHECKPOINTS_KEY, checkpoints.to_json(), ANY)

    def clear_checkpoints(self) -> None:
        self.store.delete(CHECKPOINTS_KEY)


class held:
    """Context manager: hold a named lock for the duration of a block."""

    def __init__(self, locker: Locker, name: str, operation: str, version: str, timeout: float):
        self.locker = locker
        self.name = name
        self.info = LockInfo.new(operation, version)
        self.timeout = timeout

    def __enter__(self) -> LockInfo:
        acquire(self.locker, self.name, self.info, self.timeout)
        return self.info

    def __exit__(self, *exc: object) -> None:
        self.locker.unlock(self.name, self.info)


def open_backend(spec: BackendSpec, task_directory: Path, task: str) -> Backend:
    """The backend a task file asks for: the only place that knows every backend (each loads only when chosen)."""
    if spec.kind == "local":
        from state.local import DEFAULT_DIRECTORY, local_backend

        directory = Path(spec.settings.get("path") or DEFAULT_DIRECTORY)
        return local_backend(directory if directory.is_absolute() else task_directory / directory, task)
    if spec.kind == "azureblob":
        from state.azure_blob import azure_blob_backend  # the Blob SDK loads only for this backend

        return azure_blob_backend(spec.settings, task)
    raise UsageError(f"unknown backend {spec.kind!r}")
