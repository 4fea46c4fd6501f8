"""Private files that cannot be redirected: no symlink is followed, no file is reused.

A planted symlink (`task.state.lock -> ~/.bashrc`) or a directory others can
write would let another user make dstream truncate or replace their choice of
file. Everything here opens with O_NOFOLLOW, creates with O_EXCL and mode
0600, and refuses directories that another user could write. Raises OSError
(write_private, open_private) or StateError (check_private_directory).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from state.errors import StateError

PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_private(path: Path, data: bytes | str) -> None:
    """Atomically replace `path` with `data`: temp file O_EXCL|O_NOFOLLOW 0600, fsync, rename, fsync dir.

    Renaming replaces a symlink at `path` instead of writing through it."""
    raw = data.encode() if isinstance(data, str) else data
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, _NEW, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    fsync_directory(path.parent)


def open_private(path: Path) -> int:
    """Open (creating 0600 if missing) a regular file of ours for read and write, never through a symlink."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise OSError(f"{path} is not a regular file owned by this user")
    return fd


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_directory(directory: Path) -> None:
    """Create `directory` (and missing parents) with mode 0700; an existing one is checked, not changed."""
    try:
        directory.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create directory {directory}: {exc.strerror or exc}") from None
    check_private_directory(directory)


def check_private_directory(directory: Path) -> None:
    """Refuse a directory owned by another user, or writable by others without the sticky bit."""
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise StateError(f"cannot use directory {directory}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StateError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise StateError(f"refusing directory {directory}: it is owned by another user (uid {info.st_uid})",
                         hint="use a directory of your own (backend \"local\" { path = ... })")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise StateError(f"refusing directory {directory}: other users can write to it (mode {stat.S_IMODE(info.st_mode):o})",
                         hint=f"chmod go-w {directory}")


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
