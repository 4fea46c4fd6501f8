"""Local backend safety (issue 8): no symlink followed, private directories, safe names, lock probes that never take."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from state.backend import RUN_LOCK, STATE_KEY, STATE_LOCK, LockInfo
from state.errors import StateError, UsageError
from state.local import LocalLocker, LocalStore
from state.safe_files import write_private


def info(label: str) -> LockInfo:
    return LockInfo(f"id-{label}", "run", f"who-{label}", "0.1", "2026-01-01T00:00:00Z")


# --- S4: symlinks, modes, directories ------------------------------------------------


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    state_dir = tmp_path / ".dstream"
    state_dir.mkdir(mode=0o700)
    (state_dir / "demo.state.lock").symlink_to(victim)
    with pytest.raises(StateError, match="symlink|regular file"):
        LocalLocker(state_dir, "demo").try_lock(STATE_LOCK, info("a"))
    assert victim.read_text() == "precious"


def test_a_planted_state_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    state_dir = tmp_path / ".dstream"
    state_dir.mkdir(mode=0o700)
    (state_dir / "demo.state.json").symlink_to(victim)
    LocalStore(state_dir, "demo").put(STATE_KEY, b"{}", "*")
    assert victim.read_text() == "precious"
    assert not (state_dir / "demo.state.json").is_symlink()


def test_files_and_new_directories_are_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "new" / ".dstream"
    store, locker = LocalStore(state_dir, "demo"), LocalLocker(state_dir, "demo")
    store.put(STATE_KEY, b"{}", None)
    assert locker.try_lock(RUN_LOCK, info("a")) is None
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    for path in state_dir.iterdir():
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600, path


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    state_dir = tmp_path / ".dstream"
    state_dir.mkdir()
    state_dir.chmod(mode)
    for action in (lambda: LocalStore(state_dir, "demo").get(STATE_KEY), lambda: LocalStore(state_dir, "demo").put(STATE_KEY, b"{}", None),
                   lambda: LocalLocker(state_dir, "demo").try_lock(STATE_LOCK, info("a"))):
        with pytest.raises(StateError, match="other users can write"):
            action()
    assert list(state_dir.iterdir()) == []


def test_a_sticky_shared_directory_is_accepted(tmp_path: Path) -> None:
    state_dir = tmp_path / "shared"
    state_dir.mkdir()
    state_dir.chmod(0o1777)
    LocalStore(state_dir, "demo").put(STATE_KEY, b"{}", None)


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / ".dstream"
    state_dir.mkdir(mode=0o700)
    os.chown(state_dir, os.geteuid() + 4242, -1)
    with pytest.raises(StateError, match="owned by another user"):
        LocalStore(state_dir, "demo").put(STATE_KEY, b"{}", None)


def test_write_private_is_atomic_0600_and_replaces_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    plan = tmp_path / "plan.json"
    plan.symlink_to(victim)
    write_private(plan, "{}")
    assert victim.read_text() == "precious" and plan.read_text() == "{}" and not plan.is_symlink()
    assert stat.S_IMODE(os.stat(plan).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "victim"], "no temp file left"


# --- S6: names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", ".hidden", ""])
def test_backends_refuse_unsafe_task_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError):
        LocalStore(tmp_path, name)
    with pytest.raises(UsageError):
        LocalLocker(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


# --- W4: probing never takes; deleting the lock file does not free it -------------------------


def test_concurrent_holder_probes_never_make_try_lock_fail(tmp_path: Path) -> None:
    locker, prober = LocalLocker(tmp_path, "demo"), LocalLocker(tmp_path, "demo")
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            prober.holder(RUN_LOCK)

    threads = [threading.Thread(target=probe) for _ in range(2)]
    for thread in threads:
        thread.start()
    refused = 0
    try:
        for n in range(2000):
            lock = info(str(n))
            if locker.try_lock(RUN_LOCK, lock) is None:
                locker.unlock(RUN_LOCK, lock)
            else:
                refused += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert refused == 0, f"{refused} of 2000 acquisitions were refused by holder() probes"


def test_holder_sees_a_live_lock_without_taking_it(tmp_path: Path) -> None:
    holder, other = LocalLocker(tmp_path, "demo"), LocalLocker(tmp_path, "demo")
    assert other.holder(RUN_LOCK) is None
    assert holder.try_lock(RUN_LOCK, info("a")) is None
    assert other.holder(RUN_LOCK) == info("a")
    holder.unlock(RUN_LOCK, info("a"))
    assert other.holder(RUN_LOCK) is None


@pytest.mark.parametrize("recreate", [False, True])
def test_deleting_the_lock_file_does_not_free_the_lock(tmp_path: Path, recreate: bool) -> None:
    first, second = LocalLocker(tmp_path, "demo"), LocalLocker(tmp_path, "demo")
    assert first.try_lock(RUN_LOCK, info("first")) is None
    first.path(RUN_LOCK).unlink()  # a cleanup script, or someone "fixing" a stuck lock
    if recreate:
        first.path(RUN_LOCK).write_text("")
    assert second.try_lock(RUN_LOCK, info("second")) == info("first")
    assert second.holder(RUN_LOCK) == info("first")
    first.unlock(RUN_LOCK, info("first"))
    assert second.try_lock(RUN_LOCK, info("second")) is None
    assert first.try_lock(RUN_LOCK, info("first")) == info("second")
    second.unlock(RUN_LOCK, info("second"))


def test_unlock_never_deletes_the_lock_file(tmp_path: Path) -> None:
    locker = LocalLocker(tmp_path, "demo")
    assert locker.try_lock(STATE_LOCK, info("a")) is None
    inode = os.stat(locker.path(STATE_LOCK)).st_ino
    locker.unlock(STATE_LOCK, info("a"))
    assert os.stat(locker.path(STATE_LOCK)).st_ino == inode
