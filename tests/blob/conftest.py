"""Fixtures for the Azure Blob backend tests: one Azurite for the session, a fresh container per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.azurite import Azurite

from ._blob import BlobTasks


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite's blob service as a subprocess on a free loopback port, in memory, for the whole session."""
    with Azurite() as server:
        yield server


@pytest.fixture(scope="session")
def service(azurite: Azurite) -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite.connection_string)


def new_container(service: Any) -> Any:
    return service.create_container(f"dstream-{uuid.uuid4().hex[:16]}")


@pytest.fixture
def container(service: Any) -> Iterator[Any]:
    """A new, empty container with a unique name (deleted afterwards)."""
    client = new_container(service)
    yield client
    try:
        client.delete_container()
    except Exception:  # Azurite may have been stopped or restarted by the test
        pass


@pytest.fixture
def blob(azurite: Azurite, container: Any, dstream: Callable[..., Any], pyz: Path, tmp_path: Path) -> Iterator[BlobTasks]:
    """Task files on `container`, and the CLI with STATE_CONN in its environment; every output is checked for the key."""
    tasks = BlobTasks(azurite, container, dstream, pyz, tmp_path)
    yield tasks
    tasks.check_logs()
