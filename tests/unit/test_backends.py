"""The backend conformance suite (state/testing.py) against every backend, plus local specifics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import state.backend as backend_module
from state import testing
from state.backend import ANY, RUN_LOCK, STATE_KEY, STATE_LOCK, Blob, LockInfo, StateManager, acquire, held
from state.errors import LockedError, StateError
from state.local import LocalLocker, LocalStore, local_backend
from state.memory import MemoryLocker, MemoryStore
from state.model import StateFile

ROOT = Path(__file__).resolve().parents[2]


def _name(check: Callable[..., None]) -> str:
    return check.__name__


# --- the conformance suite, one rule per test --------------------------------------


@pytest.fixture
def local_store_factory(tmp_path: Path) -> Callable[[], LocalStore]:
    counter = iter(range(1000))
    return lambda: LocalStore(tmp_path / f"store{next(counter)}" / ".dstream", "task")


@pytest.fixture
def local_locker_factory(tmp_path: Path) -> Callable[[], LocalLocker]:
    counter = iter(range(1000))
    return lambda: LocalLocker(tmp_path / f"locks{next(counter)}", "task")


@pytest.mark.parametrize("check", testing.STORE_CHECKS, ids=_name)
def test_memory_store(check: Callable[..., None]) -> None:
    check(MemoryStore)


@pytest.mark.parametrize("check", testing.STORE_CHECKS, ids=_name)
def test_local_store(check: Callable[..., None], local_store_factory: Callable[[], LocalStore]) -> None:
    check(local_store_factory)


@pytest.mark.parametrize("check", testing.LOCKER_CHECKS, ids=_name)
def test_memory_locker(check: Callable[..., None]) -> None:
    check(MemoryLocker)


@pytest.mark.parametrize("check", testing.LOCKER_CHECKS, ids=_name)
def test_local_locker(check: Callable[..., None], local_locker_factory: Callable[[], LocalLocker]) -> None:
    check(local_locker_factory)


@pytest.mark.parametrize("check", testing.STATE_MANAGER_CHECKS, ids=_name)
def test_memory_state_manager(check: Callable[..., None]) -> None:
    check(MemoryStore)


@pytest.mark.parametrize("check", testing.STATE_MANAGER_CHECKS, ids=_name)
def test_local_state_manager(check: Callable[..., None], local_store_factory: Callable[[], LocalStore]) -> None:
    check(local_store_factory)


def test_check_functions_run_every_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []
    for group in ("STORE_CHECKS", "LOCKER_CHECKS", "STATE_MANAGER_CHECKS"):
        fakes = tuple((lambda make, n=f"{group}{i}": called.append(n)) for i in range(len(getattr(testing, group))))
        monkeypatch.setattr(testing, group, fakes)
    testing.check_store(MemoryStore)
    testing.check_locker(MemoryLocker)
    testing.check_state_manager(MemoryStore)
    expected = [f"{g}{i}" for g in ("STORE_CHECKS", "LOCKER_CHECKS", "STATE_MANAGER_CHECKS") for i in range(len(getattr(testing, g)))]
    assert called == expected


# --- the suite catches broken backends ---------------------------------------------


class CarelessStore(MemoryStore):
    """Ignores every precondition: the classic lost-write backend."""

    def put(self, key: str, data: bytes, expect: str | None) -> str:
        return super().put(key, data, ANY)


class SharedLocker(MemoryLocker):
    """Never conflicts."""

    def try_lock(self, name: str, info: LockInfo) -> LockInfo | None:
        self.locks[name] = info
        return None


class TokenlessStore(MemoryStore):
    """Always returns the same token, so stale writers cannot be told apart."""

    def get(self, key: str) -> Blob | None:
        blob = super().get(key)
        return None if blob is None else Blob(blob.data, "same")

    def put(self, key: str, data: bytes, expect: str | None) -> str:
        with self._mutex:
            if expect is None and key in self.blobs:
                raise StateError("exists")
            self.blobs[key] = data
        return "same"


def test_suite_rejects_a_store_that_ignores_preconditions() -> None:
    with pytest.raises(AssertionError, match="create-only put"):
        testing.check_store(CarelessStore)
    with pytest.raises(AssertionError, match="no_lost|read before another write|second first write"):
        for check in (testing.manager_no_lost_write, testing.manager_no_lost_create):
            check(CarelessStore)


def test_suite_rejects_a_store_whose_token_never_changes() -> None:
    with pytest.raises(AssertionError, match="token must change"):
        testing.check_store(TokenlessStore)


def test_suite_rejects_a_locker_that_never_conflicts() -> None:
    with pytest.raises(AssertionError, match="holder's info"):
        testing.check_locker(SharedLocker)


# --- memory specifics ----------------------------------------------------------------


def test_memory_force_unlock_with_the_holders_id_frees_the_lock() -> None:
    locker = MemoryLocker()
    info = LockInfo.new("plan", "1.0")
    assert locker.try_lock(STATE_LOCK, info) is None
    locker.force_unlock(STATE_LOCK, info.id)
    assert locker.holder(STATE_LOCK) is None
    assert locker.try_lock(STATE_LOCK, LockInfo.new("init", "1.0")) is None


def test_memory_unlock_by_a_non_holder_keeps_the_lock() -> None:
    locker = MemoryLocker()
    holder, other = LockInfo.new("plan", "1.0"), LockInfo.new("init", "1.0")
    assert locker.try_lock(STATE_LOCK, holder) is None
    locker.unlock(STATE_LOCK, other)
    assert locker.holder(STATE_LOCK) == holder


def test_lock_info_new_names_this_process() -> None:
    info = LockInfo.new("init", "9.9")
    assert f"pid {os.getpid()}" in info.who
    assert (info.operation, info.version) == ("init", "9.9")
    assert len(info.id) == 36 and info.id.count("-") == 4  # a uuid4
    assert info.id != LockInfo.new("init", "9.9").id
    assert info.id in info.describe() and info.who in info.describe()
    assert LockInfo(**info.as_dict()) == info


# --- local: flock semantics -------------------------------------------------------


def test_local_second_locker_in_the_same_process_conflicts(tmp_path: Path) -> None:
    one, two = LocalLocker(tmp_path, "task"), LocalLocker(tmp_path, "task")
    first, second = LockInfo.new("init", "1"), LockInfo.new("plan", "1")
    assert one.try_lock(STATE_LOCK, first) is None
    assert two.try_lock(STATE_LOCK, second) == first
    assert two.holder(STATE_LOCK) == first
    assert two.try_lock(RUN_LOCK, second) is None, "the run lock is a separate lock"
    one.unlock(STATE_LOCK, first)
    assert two.holder(STATE_LOCK) is None
    assert two.try_lock(STATE_LOCK, second) is None
    assert one.try_lock(STATE_LOCK, first) == second
    two.unlock(STATE_LOCK, second)
    two.unlock(RUN_LOCK, second)


def test_local_locks_are_per_task(tmp_path: Path) -> None:
    a, b = LocalLocker(tmp_path, "a"), LocalLocker(tmp_path, "b")
    info = LockInfo.new("init", "1")
    assert a.try_lock(STATE_LOCK, info) is None
    assert b.try_lock(STATE_LOCK, LockInfo.new("init", "1")) is None
    assert b.holder(STATE_LOCK) != info


def test_local_force_unlock_refuses_a_live_holder(tmp_path: Path) -> None:
    holder_locker = LocalLocker(tmp_path, "task")
    info = LockInfo.new("run", "1")
    assert holder_locker.try_lock(RUN_LOCK, info) is None
    other = LocalLocker(tmp_path, "task")
    with pytest.raises(LockedError, match=info.id):
        other.force_unlock(RUN_LOCK, info.id)
    assert other.try_lock(RUN_LOCK, LockInfo.new("run", "1")) == info
    holder_locker.unlock(RUN_LOCK, info)


def test_local_force_unlock_clears_a_leftover_record(tmp_path: Path) -> None:
    locker = LocalLocker(tmp_path, "task")
    gone = LockInfo("dead-id", "init", "someone@elsewhere (pid 1)", "0.1", "2026-01-01T00:00:00Z")
    locker.path(STATE_LOCK).write_text(json.dumps(gone.as_dict()))  # record without a flock
    with pytest.raises(StateError):
        locker.force_unlock(STATE_LOCK, "wrong-id")
    locker.force_unlock(STATE_LOCK, "dead-id")
    assert locker.holder(STATE_LOCK) is None
    assert locker.try_lock(STATE_LOCK, LockInfo.new("plan", "1")) is None


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from state.backend import LockInfo
    from state.local import LocalLocker
    locker = LocalLocker(Path(sys.argv[1]), "task")
    info = LockInfo("child-lock-id", "run", "child-process@test (pid %d)" % __import__("os").getpid(), "0.1", "2026-01-01T00:00:00Z")
    holder = locker.try_lock(sys.argv[2], info)
    print("locked" if holder is None else "refused", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def child_holding_lock(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), RUN_LOCK], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        if child.stdout:
            child.stdout.close()


def test_local_lock_held_by_another_process_shows_its_holder(tmp_path: Path, child_holding_lock: subprocess.Popen[str]) -> None:
    locker = LocalLocker(tmp_path, "task")
    mine = LockInfo.new("run", "1")
    holder = locker.try_lock(RUN_LOCK, mine)
    assert holder is not None
    assert holder.id == "child-lock-id"
    assert holder.who == f"child-process@test (pid {child_holding_lock.pid})"
    assert locker.holder(RUN_LOCK) == holder
    with pytest.raises(LockedError, match=f"pid {child_holding_lock.pid}"):
        acquire(locker, RUN_LOCK, mine, timeout=0)


def test_local_lock_is_released_when_the_holder_is_killed(tmp_path: Path, child_holding_lock: subprocess.Popen[str]) -> None:
    locker = LocalLocker(tmp_path, "task")
    assert locker.try_lock(RUN_LOCK, LockInfo.new("run", "1")) is not None
    child_holding_lock.send_signal(signal.SIGKILL)
    assert child_holding_lock.wait(timeout=10) == -signal.SIGKILL
    mine = LockInfo.new("run", "1")
    assert locker.try_lock(RUN_LOCK, mine) is None, "a dead holder's lock must be free"
    assert locker.holder(RUN_LOCK) == mine
    locker.unlock(RUN_LOCK, mine)


def test_local_holder_reports_free_after_the_holder_is_killed(tmp_path: Path, child_holding_lock: subprocess.Popen[str]) -> None:
    """`dstream status` asks holder(): a killed process must not show as holding the lock."""
    locker = LocalLocker(tmp_path, "task")
    child_holding_lock.send_signal(signal.SIGKILL)
    child_holding_lock.wait(timeout=10)
    assert locker.holder(RUN_LOCK) is None


# --- acquire: backoff and the error ------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class CountingLocker(MemoryLocker):
    """Held by `holder` for the first `busy` attempts (None: forever)."""

    def __init__(self, holder: LockInfo, busy: int | None) -> None:
        super().__init__()
        self.holder_info = holder
        self.busy = busy
        self.attempts = 0

    def try_lock(self, name: str, info: LockInfo) -> LockInfo | None:
        self.attempts += 1
        if self.busy is None or self.attempts <= self.busy:
            return self.holder_info
        return super().try_lock(name, info)


HOLDER = LockInfo("holder-lock-id", "init", "alice@build-box (pid 4242)", "0.1.0", "2026-01-02T03:04:05Z")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(backend_module, "time", fake)
    return fake


def test_acquire_backs_off_doubling_to_16s_capped_by_the_timeout(clock: FakeClock) -> None:
    locker = CountingLocker(HOLDER, busy=None)
    with pytest.raises(LockedError) as caught:
        acquire(locker, STATE_LOCK, LockInfo("me", "plan", "me", "0.1.0", ""), timeout=50, sleep=clock.sleep)
    assert clock.sleeps == [1, 2, 4, 8, 16, 16, 3]
    assert clock.now == 1050.0
    assert locker.attempts == 8
    message = str(caught.value)
    assert "alice@build-box (pid 4242)" in message
    assert "holder-lock-id" in message
    assert message.startswith("state is locked")
    assert "dstream state unlock TASK holder-lock-id" in message


def test_acquire_long_timeout_stays_at_16s(clock: FakeClock) -> None:
    locker = CountingLocker(HOLDER, busy=None)
    with pytest.raises(LockedError):
        acquire(locker, STATE_LOCK, LockInfo("me", "plan", "me", "0.1.0", ""), timeout=100, sleep=clock.sleep)
    assert clock.sleeps == [1, 2, 4, 8, 16, 16, 16, 16, 16, 5]
    assert sum(clock.sleeps) == 100


def test_acquire_returns_once_the_lock_is_free(clock: FakeClock) -> None:
    locker = CountingLocker(HOLDER, busy=3)
    me = LockInfo("me", "plan", "me", "0.1.0", "")
    acquire(locker, STATE_LOCK, me, timeout=600, sleep=clock.sleep)
    assert clock.sleeps == [1, 2, 4]
    assert locker.holder(STATE_LOCK) == me


def test_acquire_zero_timeout_fails_at_once(clock: FakeClock) -> None:
    locker = CountingLocker(HOLDER, busy=None)
    with pytest.raises(LockedError, match="holder-lock-id"):
        acquire(locker, RUN_LOCK, LockInfo("me", "run", "me", "0.1.0", ""), timeout=0, sleep=clock.sleep)
    assert clock.sleeps == []
    assert locker.attempts == 1


def test_acquire_run_lock_says_already_running(clock: FakeClock) -> None:
    with pytest.raises(LockedError) as caught:
        acquire(CountingLocker(HOLDER, busy=None), RUN_LOCK, LockInfo("me", "run", "me", "0.1.0", ""), timeout=2, sleep=clock.sleep)
    assert str(caught.value).startswith("task is already running")
    assert "alice@build-box (pid 4242)" in str(caught.value)
    assert clock.sleeps == [1, 1]


def test_held_locks_and_unlocks(tmp_path: Path) -> None:
    locker = LocalLocker(tmp_path, "task")
    with held(locker, STATE_LOCK, "init", "0.1.0", timeout=0) as info:
        assert locker.holder(STATE_LOCK) == info
        assert info.operation == "init"
        with pytest.raises(LockedError, match=info.id):
            with held(LocalLocker(tmp_path, "task"), STATE_LOCK, "plan", "0.1.0", timeout=0):
                pass  # pragma: no cover
    assert locker.holder(STATE_LOCK) is None


def test_held_unlocks_when_the_block_raises() -> None:
    locker = MemoryLocker()
    with pytest.raises(RuntimeError):
        with held(locker, STATE_LOCK, "init", "0.1.0", timeout=0):
            raise RuntimeError("boom")
    assert locker.holder(STATE_LOCK) is None


# --- local store: atomic writes, unusable state ---------------------------------


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_local_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / ".dstream"
    manager = StateManager(LocalStore(directory, "demo"), "demo", "0.1.0")
    state = manager.read()
    for _ in range(3):
        state = manager.write(state)
    manager.store.put("checkpoints", b"{}", ANY)
    assert _files(directory) == ["demo.checkpoints.json", "demo.state.json"]
    assert json.loads((directory / "demo.state.json").read_bytes())["serial"] == 3


def test_local_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path, "demo")
    token = store.put(STATE_KEY, b"old", None)

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("state.local.os.replace", broken_replace)
    with pytest.raises(StateError, match="No space left on device"):
        store.put(STATE_KEY, b"new", token)
    monkeypatch.undo()
    assert (tmp_path / "demo.state.json").read_bytes() == b"old"
    assert _files(tmp_path) == ["demo.state.json"]


def test_local_store_layout_and_where(tmp_path: Path) -> None:
    backend = local_backend(tmp_path / ".dstream", "demo")
    assert backend.store.where(STATE_KEY) == str(tmp_path / ".dstream" / "demo.state.json")
    assert str(tmp_path / ".dstream") in backend.description
    backend.store.put(STATE_KEY, b'{"x": 1}', None)
    assert (tmp_path / ".dstream" / "demo.state.json").read_bytes() == b'{"x": 1}'


@pytest.mark.parametrize("garbage", [b"", b"not json", b'{"serial": 3, "lineage": "x", "task": "demo"}', b'{"version": 1, "task": "demo"}', b"[1, 2]"])
def test_local_corrupt_state_raises_and_is_never_overwritten(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "demo.state.json"
    path.write_bytes(garbage)
    manager = StateManager(LocalStore(tmp_path, "demo"), "demo", "0.1.0")
    with pytest.raises(StateError) as caught:
        manager.read()
    assert str(path) in str(caught.value)
    assert "restore" in str(caught.value)
    with pytest.raises(StateError):
        manager.write(StateFile.new("demo", "0.1.0"))
    assert path.read_bytes() == garbage
    assert _files(tmp_path) == ["demo.state.json"]


def test_local_unreadable_state_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "demo.state.json").mkdir()  # a directory where the file should be
    with pytest.raises(StateError, match="cannot read"):
        LocalStore(tmp_path, "demo").get(STATE_KEY)


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", ""])
def test_blob_names_refuse_unsafe_task_names(name: str) -> None:
    from state.azure_blob import AzureBlobBackend
    from state.errors import UsageError

    with pytest.raises(UsageError, match="invalid task name"):
        AzureBlobBackend(None, "prefix/", name, 60, "https://acct/c")
