"""A conformance suite every state backend must pass (Terraform's statemgr/testing.go).

Plain functions, no test framework: a backend's tests call

    check_store(make_store)            # make_store() -> a fresh, empty Store
    check_locker(make_locker)          # make_locker() -> a fresh Locker with no locks held
    check_state_manager(make_store)    # StateManager on top of the backend's Store

and each raises AssertionError naming the broken rule. The single rules are
also exported (STORE_CHECKS, LOCKER_CHECKS, STATE_MANAGER_CHECKS) so a test
suite can report them one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from state.backend import ANY, CHECKPOINTS_KEY, STATE_KEY, Locker, LockInfo, StateManager, Store
from state.errors import StateError
from state.model import Checkpoints, Resource, StateFile

MakeStore = Callable[[], Store]
MakeLocker = Callable[[], Locker]
TASK = "conformance"
VERSION = "0.0.0-test"


def _raises(kind: type[BaseException], action: Callable[[], Any], rule: str) -> BaseException:
    """Run `action`, which must raise `kind`; return the exception."""
    try:
        result = action()
    except kind as exc:
        return exc
    raise AssertionError(f"{rule}: expected {kind.__name__}, but it returned {result!r}")


def _info(label: str) -> LockInfo:
    return LockInfo(f"id-{label}", f"op-{label}", f"who-{label}", VERSION, "2026-01-01T00:00:00Z")


# --- Store ------------------------------------------------------------------------


def store_get_missing(make_store: MakeStore) -> None:
    store = make_store()
    assert store.get("nothing-here") is None, "get of a missing key must return None"


def store_create_only(make_store: MakeStore) -> None:
    store = make_store()
    token = store.put("k", b"first", None)
    assert isinstance(token, str) and token, f"put must return a non-empty token, got {token!r}"
    blob = store.get("k")
    assert blob is not None, "a created key must be readable"
    assert blob.data == b"first", f"get returned {blob.data!r}, wrote b'first'"
    assert blob.token == token, "get must return the token put returned"
    _raises(StateError, lambda: store.put("k", b"second", None), "a create-only put (expect=None) on an existing key")
    after = store.get("k")
    assert after is not None and after.data == b"first", "a refused create-only put must not change the data"


def store_put_with_token(make_store: MakeStore) -> None:
    store = make_store()
    store.put("k", b"v1", None)
    read = store.get("k")
    assert read is not None
    new_token = store.put("k", b"v2", read.token)
    assert new_token != read.token, "the token must change when the data changes"
    blob = store.get("k")
    assert blob is not None and blob.data == b"v2", "a put with the read token must write"
    assert blob.token == new_token, "get must return the token the last put returned"


def store_stale_token(make_store: MakeStore) -> None:
    store = make_store()
    store.put("k", b"v1", None)
    stale = store.get("k")
    assert stale is not None
    store.put("k", b"v2", stale.token)
    _raises(StateError, lambda: store.put("k", b"lost write", stale.token), "a put with a stale token")
    blob = store.get("k")
    assert blob is not None and blob.data == b"v2", "a refused put must not change the data"
    store.delete("k")
    _raises(StateError, lambda: store.put("k", b"resurrected", stale.token), "a put expecting a token on a deleted key")
    assert store.get("k") is None, "a refused put must not create the key"


def store_any_overwrites(make_store: MakeStore) -> None:
    store = make_store()
    first = store.put("k", b"made by ANY", ANY)
    blob = store.get("k")
    assert blob is not None and blob.data == b"made by ANY" and blob.token == first, "ANY must create a missing key"
    store.put("k", b"overwritten", ANY)
    blob = store.get("k")
    assert blob is not None and blob.data == b"overwritten", "ANY must overwrite whatever is there"


def store_delete_idempotent(make_store: MakeStore) -> None:
    store = make_store()
    store.delete("never-existed")
    store.put("k", b"v", None)
    store.put("other", b"kept", None)
    store.delete("k")
    assert store.get("k") is None, "a deleted key must read as missing"
    store.delete("k")
    assert store.get("k") is None
    other = store.get("other")
    assert other is not None and other.data == b"kept", "delete must touch only its key"
    store.put("k", b"again", None)  # a deleted key can be created again
    again = store.get("k")
    assert again is not None and again.data == b"again"


def store_keys_are_independent(make_store: MakeStore) -> None:
    store = make_store()
    store.put("a", b"A", None)
    store.put("b", b"B", None)
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None and (a.data, b.data) == (b"A", b"B"), "keys must not share data"
    assert "a" in store.where("a") and store.where("a") != store.where("b"), "where(key) must name the key"


CAS_WRITERS = 4
CAS_ROUNDS = 25


def store_concurrent_cas(make_store: MakeStore) -> None:
    """Writers that read the same token and put at once: exactly one wins each round (put is compare-and-swap)."""
    store = make_store()
    store.put("k", b"round -1", None)
    for round_ in range(CAS_ROUNDS):
        blob = store.get("k")
        assert blob is not None
        won = _race_puts(store, blob.token, round_)
        assert len(won) == 1, f"round {round_}: {len(won)} writers succeeded from the same token (want exactly 1)"
        final = store.get("k")
        assert final is not None and final.data == f"round {round_} writer {won[0]}".encode(), "the winner's data must be stored"


def _race_puts(store: Store, token: str, round_: int) -> list[int]:
    """CAS_WRITERS threads put at once, all expecting `token`; the writers whose put succeeded."""
    start = threading.Barrier(CAS_WRITERS)
    won: list[int] = []

    def write(writer: int) -> None:
        start.wait()
        try:
            store.put("k", f"round {round_} writer {writer}".encode(), token)
            won.append(writer)
        except StateError:
            pass

    threads = [threading.Thread(target=write, args=(n,)) for n in range(CAS_WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


STORE_CHECKS: tuple[Callable[[MakeStore], None], ...] = (
    store_get_missing, store_create_only, store_put_with_token, store_stale_token, store_any_overwrites,
    store_delete_idempotent, store_keys_are_independent, store_concurrent_cas,
)


def check_store(make_store: MakeStore) -> None:
    for check in STORE_CHECKS:
        check(make_store)


# --- Locker -----------------------------------------------------------------------


def locker_exclusive(make_locker: MakeLocker) -> None:
    locker = make_locker()
    first, second = _info("first"), _info("second")
    assert locker.holder("state") is None, "a fresh locker must hold nothing"
    assert locker.try_lock("state", first) is None, "try_lock on a free lock must return None"
    holder = locker.try_lock("state", second)
    assert holder == first, f"try_lock on a held lock must return the holder's info, got {holder!r}"
    assert locker.holder("state") == first, "holder() must return the holder's info"


def locker_names_are_independent(make_locker: MakeLocker) -> None:
    locker = make_locker()
    state, run = _info("state"), _info("run")
    assert locker.try_lock("state", state) is None
    assert locker.try_lock("run", run) is None, "a held state lock must not block the run lock"
    assert locker.holder("state") == state and locker.holder("run") == run
    locker.unlock("run", run)
    assert locker.holder("state") == state, "unlocking one name must leave the other held"
    locker.unlock("state", state)


def locker_unlock_frees(make_locker: MakeLocker) -> None:
    locker = make_locker()
    first, second = _info("first"), _info("second")
    assert locker.try_lock("state", first) is None
    locker.unlock("state", first)
    assert locker.holder("state") is None, "holder() must be None after the holder unlocks"
    assert locker.try_lock("state", second) is None, "the lock must be free after the holder unlocks"
    assert locker.holder("state") == second
    locker.unlock("state", second)
    assert locker.holder("state") is None


def locker_force_unlock_wrong_id(make_locker: MakeLocker) -> None:
    locker = make_locker()
    first = _info("first")
    assert locker.try_lock("state", first) is None
    _raises(StateError, lambda: locker.force_unlock("state", "not-the-holder"), "force_unlock with another lock ID")
    assert locker.holder("state") == first, "a refused force_unlock must leave the lock held"
    assert locker.try_lock("state", _info("second")) == first, "a refused force_unlock must leave the lock held"
    _raises(StateError, lambda: locker.force_unlock("run", first.id), "force_unlock of a lock nobody holds")
    locker.unlock("state", first)


LOCKER_CHECKS: tuple[Callable[[MakeLocker], None], ...] = (
    locker_exclusive, locker_names_are_independent, locker_unlock_frees, locker_force_unlock_wrong_id,
)


def check_locker(make_locker: MakeLocker) -> None:
    for check in LOCKER_CHECKS:
        check(make_locker)


# --- StateManager -----------------------------------------------------------------


def _resource(name: str) -> Resource:
    return Resource("output", "files", "file", name, f"out/{name}.jsonl", {"path": f"out/{name}.jsonl"})


def manager_first_read(make_store: MakeStore) -> None:
    manager = StateManager(make_store(), TASK, VERSION)
    state = manager.read()
    assert state.serial == 0, f"a task without state must read as serial 0, got {state.serial}"
    assert state.lineage, "a new state must get a lineage"
    assert state.task == TASK and state.resources == ()
    assert manager.store.get(STATE_KEY) is None, "reading must not write state"


def manager_serial_and_lineage(make_store: MakeStore) -> None:
    store = make_store()
    manager = StateManager(store, TASK, VERSION)
    state = manager.read()
    lineage = state.lineage
    for expected in (1, 2, 3):
        state = manager.write(state.put(_resource(f"r{expected}")))
        assert state.serial == expected, f"write {expected} must give serial {expected}, got {state.serial}"
        assert state.lineage == lineage, "a write must keep the lineage"
    again = StateManager(store, TASK, VERSION).read()
    assert (again.serial, again.lineage) == (3, lineage), f"stored serial/lineage {(again.serial, again.lineage)} != {(3, lineage)}"
    assert [r.name for r in again.resources] == ["r1", "r2", "r3"], "resources must round-trip through the store"
    assert again.resources[0] == _resource("r1")
    assert again.dstream_version == VERSION
    # a manager that read the stored state continues the serial
    reader = StateManager(store, TASK, VERSION)
    assert reader.write(reader.read()).serial == 4


def manager_no_lost_write(make_store: MakeStore) -> None:
    store = make_store()
    setup = StateManager(store, TASK, VERSION)
    setup.write(setup.read())
    early, late = StateManager(store, TASK, VERSION), StateManager(store, TASK, VERSION)
    early_state = early.read()
    late_state = late.read()
    written = late.write(late_state.put(_resource("late")))
    _raises(StateError, lambda: early.write(early_state.put(_resource("early"))), "a write from a manager that read before another write")
    stored = StateManager(store, TASK, VERSION).read()
    assert stored.serial == written.serial == 2, f"the refused write changed the serial to {stored.serial}"
    assert [r.name for r in stored.resources] == ["late"], "the refused write must not replace the other write"


def manager_no_lost_create(make_store: MakeStore) -> None:
    store = make_store()
    one, two = StateManager(store, TASK, VERSION), StateManager(store, TASK, VERSION)
    first, second = one.read(), two.read()
    one.write(first)
    _raises(StateError, lambda: two.write(second), "a second first write (both read no state)")
    assert StateManager(store, TASK, VERSION).read().lineage == first.lineage, "the first created state must survive"


def manager_refuses_other_lineage(make_store: MakeStore) -> None:
    store = make_store()
    manager = StateManager(store, TASK, VERSION)
    state = manager.write(manager.read())
    other = replace(state, lineage="another-lineage")
    _raises(StateError, lambda: manager.write(other), "writing a state of another lineage")
    stored = StateManager(store, TASK, VERSION).read()
    assert (stored.lineage, stored.serial) == (state.lineage, 1), "a refused lineage must leave state as it was"


def manager_refuses_other_task(make_store: MakeStore) -> None:
    store = make_store()
    manager = StateManager(store, TASK, VERSION)
    manager.write(manager.read())
    _raises(StateError, lambda: StateManager(store, "another-task", VERSION).read(), "reading another task's state")


GARBAGE = b'{"version": 1, "serial": "not'  # truncated JSON: unusable state


def _kept(store: Store, rule: str) -> None:
    blob = store.get(STATE_KEY)
    assert blob is not None and blob.data == GARBAGE, f"{rule}: unusable state was overwritten with {blob.data[:80] if blob else None!r}"


def manager_corrupt_state_is_kept(make_store: MakeStore) -> None:
    """Unusable state raises StateError on read and a later write never replaces it."""
    store = make_store()
    store.put(STATE_KEY, GARBAGE, None)
    manager = StateManager(store, TASK, VERSION)
    _raises(StateError, manager.read, "reading unusable state")
    _raises(StateError, lambda: manager.write(StateFile.new(TASK, VERSION)), "writing after a failed read")
    _kept(store, "a write after a failed read")


def manager_corrupt_state_is_kept_after_good_read(make_store: MakeStore) -> None:
    """A manager that read and wrote good state, then fails to read unusable state, must not overwrite it."""
    store = make_store()
    manager = StateManager(store, TASK, VERSION)
    state = manager.write(manager.read())
    store.put(STATE_KEY, GARBAGE, ANY)  # e.g. a bad hand edit or a truncated copy
    _raises(StateError, manager.read, "reading unusable state")
    try:
        manager.write(state)
    except StateError:
        pass
    _kept(store, "a write of the state read before, after the failed read")


def manager_checkpoints(make_store: MakeStore) -> None:
    store = make_store()
    manager = StateManager(store, TASK, VERSION)
    assert manager.checkpoints().positions == {}, "no checkpoints yet must read as empty"
    state = manager.write(manager.read())
    first = Checkpoints(TASK).advance({"Persons": {"offset": 10}, "Orders": {"lsn": "00ab"}})
    manager.write_checkpoints(first)
    manager.write_checkpoints(first.advance({"Persons": {"offset": 20}}))
    got = StateManager(store, TASK, VERSION).checkpoints()
    assert got.positions == {"Persons": {"offset": 20}, "Orders": {"lsn": "00ab"}}, f"checkpoints round-trip gave {got.positions}"
    assert set(got.updated) == {"Persons", "Orders"} and all(got.updated.values()), "each stream keeps its update time"
    stored = StateManager(store, TASK, VERSION).read()
    assert stored.serial == state.serial == 1, f"checkpoint writes must not bump the serial (now {stored.serial})"
    assert manager.write(state).serial == 2, "a checkpoint write must not make the manager's next state write stale"
    manager.clear_checkpoints()
    assert store.get(CHECKPOINTS_KEY) is None and manager.checkpoints().positions == {}
    manager.clear_checkpoints()  # idempotent


def manager_checkpoint_writers_merge(make_store: MakeStore) -> None:
    """A run's acks and an init's start positions, written by two processes at once, both survive."""
    store = make_store()
    run, init = StateManager(store, TASK, VERSION), StateManager(store, TASK, VERSION)
    run.advance_checkpoints({"Persons": {"lsn": "01"}})
    init.start_checkpoints({"Orders": {"lsn": "05"}, "Persons": {"lsn": "00"}})
    run.advance_checkpoints({"Persons": {"lsn": "02"}})
    got = StateManager(store, TASK, VERSION).checkpoints().positions
    assert got == {"Persons": {"lsn": "02"}, "Orders": {"lsn": "05"}}, f"a start position or an ack was lost: {got}"

    errors: list[BaseException] = []

    def writer(stream: str) -> None:
        try:
            manager = StateManager(store, TASK, VERSION)
            for i in range(15):
                manager.advance_checkpoints({stream: {"n": i}})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"S{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"concurrent checkpoint writers failed: {errors[0]!r}"
    got = StateManager(store, TASK, VERSION).checkpoints().positions
    assert all(got.get(f"S{k}") == {"n": 14} for k in range(4)), f"concurrent writers erased each other: {got}"
    StateManager(store, TASK, VERSION).forget_checkpoints(["S0", "Orders"])
    assert set(StateManager(store, TASK, VERSION).checkpoints().positions) == {"Persons", "S1", "S2", "S3"}


STATE_MANAGER_CHECKS: tuple[Callable[[MakeStore], None], ...] = (
    manager_first_read, manager_serial_and_lineage, manager_no_lost_write, manager_no_lost_create,
    manager_refuses_other_lineage, manager_refuses_other_task, manager_corrupt_state_is_kept,
    manager_corrupt_state_is_kept_after_good_read, manager_checkpoints, manager_checkpoint_writers_merge,
)


def check_state_manager(make_store: MakeStore) -> None:
    for check in STATE_MANAGER_CHECKS:
        check(make_store)


__all__ = ["LOCKER_CHECKS", "STATE_MANAGER_CHECKS", "STORE_CHECKS", "check_locker", "check_state_manager", "check_store"]
