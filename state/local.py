"""Local backend: files in a directory, atomic writes, flock locks.

Locks are kernel flocks on `<task>.<name>.lock`, so a dead holder's lock is
released by the kernel: no stale locks. The lock file holds the lock info
for whoever waits.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from state.backend import ANY, Backend, Blob, LockInfo
from state.errors import LockedError, StateError

DEFAULT_DIRECTORY = ".dstream"


class LocalStore:
    def __init__(self, directory: Path, task: str):
        self.directory = directory
        self.task = task

    def path(self, key: str) -> Path:
        return self.directory / f"{self.task}.{key}.json"

    def where(self, key: str) -> str:
        return str(self.path(key))

    def get(self, key: str) -> Blob | None:
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path(key)}: {exc.strerror}") from None
        return Blob(data, hashlib.sha256(data).hexdigest())

    def put(self, key: str, data: bytes, expect: str | None) -> str:
        if expect != ANY:
            current = self.get(key)
            if (current.token if current else None) != expect:
                raise StateError(f"{self.path(key)} changed since it was read", hint="another process wrote it; run the command again")
        self._atomic_write(self.path(key), data)
        return hashlib.sha256(data).hexdigest()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def _atomic_write(self, path: Path, data: bytes) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(temp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, path)
            finally:
                if temp.exists():
                    temp.unlink()
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror}") from None


class LocalLocker:
    def __init__(self, directory: Path, task: str):
        self.directory = directory
        self.task = task
        self._held: dict[str, IO[str]] = {}

    def path(self, name: str) -> Path:
        return self.directory / f"{self.task}.{name}.lock"

    def try_lock(self, name: str, info: LockInfo) -> LockInfo | None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.path(name), "a+")
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path(name)}: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return self.holder(name) or LockInfo("unknown", "unknown", "another process", "", "")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info.as_dict()))
        handle.flush()
        os.fsync(handle.fileno())
        self._held[name] = handle
        return None

    def unlock(self, name: str, info: LockInfo) -> None:
        handle = self._held.pop(name, None)
        if handle is None:
            return
        handle.seek(0)
        handle.truncate()
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    def holder(self, name: str) -> LockInfo | None:
        """The live holder's info; None when nobody holds the flock (a leftover record is ignored)."""
        if name not in self._held and not self._is_held(name):
            return None
        return self._record(name)

    def _record(self, name: str) -> LockInfo | None:
        try:
            text = self.path(name).read_text()
        except FileNotFoundError:
            return None
        try:
            return LockInfo(**json.loads(text)) if text.strip() else None
        except (ValueError, TypeError):
            return None

    def watch(self, callback: Callable[[str, str], None]) -> None:
        """Local and in-memory locks cannot be lost while their process lives."""

    def _is_held(self, name: str) -> bool:
        try:
            with open(self.path(name), "a+") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(probe, fcntl.LOCK_UN)
                return False
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: assume held, the safe answer

    def force_unlock(self, name: str, lock_id: str) -> None:
        """Never breaks a live lock (it cannot outlive its process); clears a leftover record."""
        if not self._is_held(name):
            record = self._record(name)
            if record is None or record.id != lock_id:
                raise StateError(f"lock ID {lock_id} does not match the current {name} lock (none)")
            self.path(name).write_text("")
            return
        holder = self.holder(name)
        if holder is None or holder.id != lock_id:
            current = holder.id if holder else "none"
            raise StateError(f"lock ID {lock_id} does not match the current {name} lock ({current})")
        raise LockedError(
            f"the {name} lock is held by a live process: {holder.describe()}",
            hint="local locks are released when their process exits; stop that process",
        )


def local_backend(directory: Path, task: str) -> Backend:
    return Backend(LocalStore(directory, task), LocalLocker(directory, task), f"local ({directory})")
