"""Fixtures for the Azure Blob backend tests: one Azurite per sign-in mode for the session, a fresh container per test.

`auth` is parametrised: every test runs with "key" (connection string, HTTP) and "oauth" (account_url over
HTTPS with a trustme CA, Azurite's --oauth basic, DefaultAzureCredential through a stand-in `az`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.azurite import Azurite, Certificates
from tests.emulators.entra import StandInAz

from ._blob import Auth, BlobTasks

MODES = ("key", "oauth")


@pytest.fixture(scope="session", params=MODES)
def auth_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def azurite(auth_mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service as a subprocess on a free loopback port, in memory, for the whole session
    (HTTPS with OAuth for "oauth")."""
    tls = Certificates(tmp_path_factory.mktemp("azurite-tls")) if auth_mode == "oauth" else None
    with Azurite(tls=tls) as server:
        yield server


@pytest.fixture(scope="session")
def session_auth(auth_mode: str, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Auth:
    """The sign-in of the session's Azurite; the stand-in az's tokens live an hour."""
    az = StandInAz(tmp_path_factory.mktemp("az")) if auth_mode == "oauth" else None
    return Auth(auth_mode, azurite, az)


@pytest.fixture
def auth(session_auth: Auth) -> Auth:
    return session_auth


def service_client(server: Azurite) -> Any:
    """The tests' own view of the account (shared key; the CA passed directly: this is not dstream)."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(server.connection_string, **({"connection_verify": str(server.tls.ca)} if server.tls else {}))


@pytest.fixture(scope="session")
def service(azurite: Azurite) -> Any:
    return service_client(azurite)


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
def blob(azurite: Azurite, container: Any, dstream: Callable[..., Any], pyz: Path, tmp_path: Path, auth: Auth) -> Iterator[BlobTasks]:
    """Task files on `container`, and the CLI with the credential's environment; every output is checked for the key and tokens."""
    tasks = BlobTasks(azurite, container, dstream, pyz, tmp_path, auth)
    yield tasks
    tasks.check_logs()
