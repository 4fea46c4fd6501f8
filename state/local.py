"""Local backend: files in a private directory, atomic compare-and-swap writes, flock locks.

Locks are kernel flocks on `<task>.<name>.lock`, so a dead holder's lock is
released by the kernel: no stale locks. The lock file holds the lock info for
whoever waits, and a hidden hard link to it (`.<task>.<name>.lock.anchor`)
keeps the locked inode findable when someone deletes the lock file. Nothing
is opened through a symlink, and a directory other users could write is
refused (state/safe_files.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from state.backend import ANY, Backend, Blob, LockInfo
from state.config import check_task_name
from state.errors import LockedError, StateError
from state.safe_files import make_private_directory, open_private, write_private

DEFAULT_DIRECTORY = ".dstream"
LOCK_ATTEMPTS = 10  # a lock file replaced between open and flock: retry on the new one
PROC_LOCKS = Path("/proc/locks")


class _Directory:
    """The state directory, checked once before first use: ours, and not writable by others."""

    def __init__(self, path: Path):
        self.path = path
        self._checked = False

    def exists(self) -> bool:
        if not self.path.exists():
            return False
        self.ready()
        return True

    def ready(self) -> None:
        if not self._checked:
            make_private_directory(self.path)
            self._checked = True


class LocalStore:
    def __init__(self, directory: Path, task: str):
        check_task_name(task)
        self.directory = directory
        self.task = task
        self._dir = _Directory(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{self.task}.{key}.json"

    def where(self, key: str) -> str:
        return str(self.path(key))

    def get(self, key: str) -> Blob | None:
        if not self._dir.exists():
            return None
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path(key)}: {exc.strerror}") from None
        return Blob(data, hashlib.sha256(data).hexdigest())

    def put(self, key: str, data: bytes, expect: str | None) -> str:
        """Compare and swap: the check and the rename happen under the key's write lock."""
        self._dir.ready()
        with self._write_lock():
            if expect != ANY:
                current = self.get(key)
                if (current.token if current else None) != expect:
                    raise StateError(f"{self.path(key)} changed since it was read", hint="another process wrote it; run the command again")
            try:
                write_private(self.path(key), data)
            except OSError as exc:
                raise StateError(f"cannot write {self.path(key)}: {exc.strerror or exc}") from None
        return hashlib.sha256(data).hexdigest()

    def delete(self, key: str) -> None:
        if not self._dir.exists():
            return
        with self._write_lock():
            try:
                self.path(key).unlink()
            except FileNotFoundError:
                pass

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """A short exclusive flock on the directory itself: it names one inode for every writer, and leaves no file behind."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StateError(f"cannot open {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class LocalLocker:
    def __init__(self, directory: Path, task: str):
        check_task_name(task)
        self.directory = directory
        self.task = task
        self._dir = _Directory(directory)
        self._held: dict[str, int] = {}

    def path(self, name: str) -> Path:
        return self.directory / f"{self.task}.{name}.lock"

    def anchor(self, name: str) -> Path:
        return self.directory / f".{self.task}.{name}.lock.anchor"

    def try_lock(self, name: str, info: LockInfo) -> LockInfo | None:
        self._dir.ready()
        for _ in range(LOCK_ATTEMPTS):
            fd = self._open_lock_file(name)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return self._refusal(name)
            verdict = self._claim_anchor(name, fd)
            if verdict == "ours":
                self._write_record(fd, info)
                self._held[name] = fd
                return None
            os.close(fd)
            if verdict == "held":
                return self._refusal(name)
        raise StateError(f"the {name} lock file {self.path(name)} keeps being replaced", hint="another process is deleting or recreating it")

    def _open_lock_file(self, name: str) -> int:
        """The lock file, restored from its anchor when someone deleted it (the same inode, so a live flock stays)."""
        path, anchor = self.path(name), self.anchor(name)
        try:
            if not os.path.lexists(path) and os.path.lexists(anchor):
                os.link(anchor, path, follow_symlinks=False)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StateError(f"cannot restore lock file {path}: {exc.strerror or exc}") from None
        try:
            return open_private(path)
        except OSError as exc:
            raise StateError(f"cannot open lock file {path}: {exc.strerror or exc}", hint="it must be a regular file of yours, not a symlink") from None

    def _claim_anchor(self, name: str, fd: int) -> str:
        """With the flock on fd taken: "ours" when lock file and anchor name fd's inode, "held" when
        the anchor names another inode someone holds, "retry" when the files moved meanwhile."""
        path, anchor = self.path(name), self.anchor(name)
        mine = os.fstat(fd)
        if not _same_inode(mine, path):
            return "retry"
        if not os.path.lexists(anchor):
            try:
                os.link(path, anchor, follow_symlinks=False)
            except FileExistsError:
                return "retry"
            return "ours" if _same_inode(mine, anchor) else "retry"
        if _same_inode(mine, anchor):
            return "ours"
        return self._replace_stale_anchor(name)

    def _replace_stale_anchor(self, name: str) -> str:
        """An anchor on another inode: held by a live locker, or left over and re-pointed at the lock file."""
        anchor = self.anchor(name)
        try:
            other = open_private(anchor)
        except OSError:
            return "held"  # not ours to judge (a symlink, another user's): the safe answer
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(other)
            return "held"
        try:
            fresh = anchor.with_name(f"{anchor.name}.{os.getpid()}.tmp")
            os.link(self.path(name), fresh, follow_symlinks=False)
            os.replace(fresh, anchor)
        except OSError:
            pass
        finally:
            os.close(other)
        return "retry"

    def _refusal(self, name: str) -> LockInfo:
        return self._record(name) or LockInfo("unknown", "unknown", "another process", "", "")

    @staticmethod
    def _write_record(fd: int, info: LockInfo) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info.as_dict()).encode(), 0)
        os.fsync(fd)

    def unlock(self, name: str, info: LockInfo) -> None:
        """Clears the record and releases the flock; the lock file stays (deleting it would race lockers)."""
        fd = self._held.pop(name, None)
        if fd is None:
            return
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self, name: str) -> LockInfo | None:
        """The live holder's info; None when nobody holds the flock (a leftover record is ignored). Never takes the lock."""
        if name not in self._held and not self._is_held(name):
            return None
        return self._refusal(name)

    def _record(self, name: str) -> LockInfo | None:
        """The lock info in the lock file, or in its anchor when the lock file was replaced or emptied."""
        for path in (self.path(name), self.anchor(name)):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as handle:
                text = handle.read(65536)
            try:
                if text.strip():
                    return LockInfo(**json.loads(text))
            except (ValueError, TypeError):
                continue
        return None

    def watch(self, callback: Callable[[str, str], None]) -> None:
        """Local and in-memory locks cannot be lost while their process lives."""

    def held_fds(self) -> list[int]:
        """A flock belongs to the open file: a provider given the descriptor holds the lock until it exits too."""
        return list(self._held.values())

    def _is_held(self, name: str) -> bool:
        """Whether anyone holds the flock, read from /proc/locks: probing by taking it would refuse real lockers."""
        inodes = {_inode_key(path) for path in (self.path(name), self.anchor(name))} - {None}
        if not inodes:
            return False
        try:
            table = PROC_LOCKS.read_text()
        except OSError:
            return True  # cannot tell: assume held, the safe answer
        return any(len(fields) > 5 and fields[1] == "FLOCK" and fields[5] in inodes
                   for fields in (line.split() for line in table.splitlines()))

    def force_unlock(self, name: str, lock_id: str) -> None:
        """Never breaks a live lock (it cannot outlive its process); clears a leftover record."""
        if not self._is_held(name):
            record = self._record(name)
            if record is None or record.id != lock_id:
                raise StateError(f"lock ID {lock_id} does not match the current {name} lock (none)")
            self._clear_record(name)
            return
        holder = self.holder(name)
        if holder is None or holder.id != lock_id:
            current = holder.id if holder else "none"
            raise StateError(f"lock ID {lock_id} does not match the current {name} lock ({current})")
        raise LockedError(
            f"the {name} lock is held by a live process: {holder.describe()}",
            hint="local locks are released when their process exits; stop that process",
        )

    def _clear_record(self, name: str) -> None:
        try:
            fd = open_private(self.path(name))
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path(name)}: {exc.strerror or exc}") from None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _same_inode(info: os.stat_result, path: Path) -> bool:
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)


def _inode_key(path: Path) -> str | None:
    """The device:inode a lock on `path` shows in /proc/locks ("fe:00:2146489")."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"


def local_backend(directory: Path, task: str) -> Backend:
    return Backend(LocalStore(directory, task), LocalLocker(directory, task), f"local ({directory})")
