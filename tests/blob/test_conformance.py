"""The shared backend conformance suite (state/testing.py) against AzureBlobBackend on Azurite, one rule per test,
signed in with the account key and with DefaultAzureCredential over HTTPS (the `auth` parameter)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from state import testing
from state.azure_blob import AzureBlobBackend, azure_blob_backend
from tests.emulators.azurite import Azurite

from ._blob import Auth
from .conftest import new_container


def _name(check: Callable[..., None]) -> str:
    return check.__name__


@pytest.fixture
def make_backend(azurite: Azurite, service: Any, auth: Auth, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], AzureBlobBackend]]:
    """Each call: a fresh AzureBlobBackend, built the way the CLI builds it, on a new empty container
    (with this process's environment set as the CLI's would be: the credential chain and the CA bundle)."""
    made: list[tuple[AzureBlobBackend, Any]] = []
    for name, value in auth.env().items():
        monkeypatch.setenv(name, value)

    def make() -> AzureBlobBackend:
        container = new_container(service)
        settings = {"container": container.container_name, "prefix": "c/", "lease_duration": 15, **auth.settings()}
        backend = azure_blob_backend(settings, testing.TASK)
        assert isinstance(backend.store, AzureBlobBackend) and backend.store is backend.locker
        made.append((backend.store, container))
        return backend.store

    yield make
    for backend, container in made:
        # the suite leaves some locks held: stop their renewal threads and free the leases
        for name, lease in list(backend._leases.items()):
            backend.unlock(name, lease.info)
        container.delete_container()


@pytest.mark.parametrize("check", testing.STORE_CHECKS, ids=_name)
def test_store(check: Callable[..., None], make_backend: Callable[[], AzureBlobBackend]) -> None:
    check(make_backend)


@pytest.mark.parametrize("check", testing.LOCKER_CHECKS, ids=_name)
def test_locker(check: Callable[..., None], make_backend: Callable[[], AzureBlobBackend]) -> None:
    check(make_backend)


@pytest.mark.parametrize("check", testing.STATE_MANAGER_CHECKS, ids=_name)
def test_state_manager(check: Callable[..., None], make_backend: Callable[[], AzureBlobBackend]) -> None:
    check(make_backend)


def test_a_second_backend_object_sees_the_lock(make_backend: Callable[[], AzureBlobBackend], auth: Auth) -> None:
    """Two processes are two backend objects: the lease, not object state, must exclude the second."""
    from state.backend import STATE_LOCK, LockInfo

    first = make_backend()
    settings = {"container": first.container.container_name, "prefix": "c/", "lease_duration": 15, **auth.settings()}
    second = azure_blob_backend(settings, testing.TASK).locker
    mine, theirs = LockInfo.new("init", "0.1.0"), LockInfo.new("plan", "0.1.0")
    assert first.try_lock(STATE_LOCK, mine) is None
    try:
        assert second.try_lock(STATE_LOCK, theirs) == mine
        assert second.holder(STATE_LOCK) == mine
    finally:
        first.unlock(STATE_LOCK, mine)
    assert second.try_lock(STATE_LOCK, theirs) is None
    second.unlock(STATE_LOCK, theirs)
    assert first.holder(STATE_LOCK) is None
