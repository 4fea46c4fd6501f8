"""In-memory backend: the fake for unit tests, held to the same conformance suite."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from state.backend import ANY, Blob, LockInfo
from state.errors import StateError


class MemoryStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._mutex = threading.Lock()

    def where(self, key: str) -> str:
        return f"memory:{key}"

    def get(self, key: str) -> Blob | None:
        with self._mutex:
            data = self.blobs.get(key)
        return None if data is None else Blob(data, hashlib.sha256(data).hexdigest())

    def put(self, key: str, data: bytes, expect: str | None) -> str:
        with self._mutex:
            current = self.blobs.get(key)
            token = None if current is None else hashlib.sha256(current).hexdigest()
            if expect != ANY and token != expect:
                raise StateError(f"memory:{key} changed since it was read")
            self.blobs[key] = data
        return hashlib.sha256(data).hexdigest()

    def delete(self, key: str) -> None:
        with self._mutex:
            self.blobs.pop(key, None)


class MemoryLocker:
    def __init__(self) -> None:
        self.locks: dict[str, LockInfo] = {}
        self._mutex = threading.Lock()

    def try_lock(self, name: str, info: LockInfo) -> LockInfo | None:
        with self._mutex:
            holder = self.locks.get(name)
            if holder is not None:
                return holder
            self.locks[name] = info
            return None

    def unlock(self, name: str, info: LockInfo) -> None:
        with self._mutex:
            if self.locks.get(name) == info:
                del self.locks[name]

    def holder(self, name: str) -> LockInfo | None:
        return self.locks.get(name)

    def held_fds(self) -> list[int]:
        return []

    def watch(self, callback: Callable[[str, str], None]) -> None:
        """Local and in-memory locks cannot be lost while their process lives."""

    def force_unlock(self, name: str, lock_id: str) -> None:
        with self._mutex:
            holder = self.locks.get(name)
            if holder is None or holder.id != lock_id:
                raise StateError(f"lock ID {lock_id} does not match the current {name} lock")
            del self.locks[name]
