"""Azure Blob Storage backend: state and checkpoints as blobs, locks as finite leases.

The only module that imports the Blob SDK. Per task, under `prefix`:
`<task>.state.json` (leased for the state lock), `<task>.checkpoints.json`
and `<task>.run.lock` (leased for the run lock). A lease lasts
`lease_duration` seconds and is renewed by a thread every third of that, so
a dead holder's lock frees itself — unlike Terraform's infinite lease. The
lease id is the lock id; lock info rides in blob metadata, rewritten with
every put. Writes need the lease and the ETag read; once a renewal fails,
nothing more is written. Error messages never carry the credential.

Sign-in: `account_url` (https only) uses DefaultAzureCredential; its token is
fetched again by the SDK's bearer policy before it expires, so leases renew
across token lifetimes. Trust: the CA bundle named by REQUESTS_CA_BUNDLE, else
SSL_CERT_FILE, is passed as `connection_verify` to the Blob client and the
credential (requests itself ignores SSL_CERT_FILE).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from state.backend import ANY, RUN_LOCK, Backend, Blob, LockInfo
from state.config import check_task_name
from state.errors import StateError, UsageError

log = logging.getLogger("dstream")
LOCK_METADATA = "dstreamlock"
DEFAULT_LEASE = 60
LEASE_RANGE = (15, 60)
BLOB_SUFFIX = {"state": ".state.json", "checkpoints": ".checkpoints.json"}
LOCK_BLOB = {"state": ".state.json", "run": ".run.lock"}
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")  # the first one set wins, as in requests + OpenSSL
DENIED_CODES = ("AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch", "InvalidAuthenticationInfo")
SIGN_IN_HINT = ("sign in for DefaultAzureCredential: a managed identity, AZURE_CLIENT_ID/AZURE_TENANT_ID with a secret, "
                "certificate or federated token, or az login")
LOST_CODES = {"LeaseIdMissing", "LeaseIdMismatchWithBlobOperation", "LeaseNotPresentWithBlobOperation", "LeaseLost",
              "LeaseIdMismatchWithLeaseOperation", "LeaseIsBrokenAndCannotBeRenewed", "LeaseNotPresentWithLeaseOperation"}


def _code(exc: Any) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _why(exc: BaseException) -> str:
    """A few words on why a request failed, for lock-loss messages (never the SDK's text: it may quote the request)."""
    code = _code(exc)
    if code:
        return code
    if _is_credential_failure(exc):
        return "no token from DefaultAzureCredential: sign in again"
    if _is_untrusted_certificate(exc):
        return "TLS certificate not trusted"
    return type(exc).__name__


class _Lease:
    """A held lease and the thread that renews it; `lost` is set once renewal fails."""

    def __init__(self, client: Any, info: LockInfo, duration: int, on_lost: Callable[[str], None]):
        self.client = client
        self.info = info
        self.duration = duration
        self.lost: str | None = None
        self.renewed_at = time.monotonic()
        self._stop = threading.Event()
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._renew_loop, daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.duration / 3):
            try:
                self.renew()
            except Exception as exc:  # any failure means we can no longer prove we hold it
                self.lost = f"lease renewal failed ({_why(exc)})"
                self._on_lost(self.lost)
                return

    def renew(self) -> None:
        """Renew, and give up before the lease could have expired unnoticed."""
        if time.monotonic() - self.renewed_at > self.duration * 0.8:
            raise TimeoutError("no successful renewal within the lease duration")
        self.client.renew(connection_timeout=5, read_timeout=max(1.0, self.duration / 4))
        self.renewed_at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class AzureBlobBackend:
    """Store and Locker in one: writes must present the leases this object holds."""

    def __init__(self, container: Any, prefix: str, task: str, lease_duration: int, where: str):
        check_task_name(task)  # it becomes part of every blob name
        self.container = container
        self.prefix = prefix
        self.task = task
        self.lease_duration = lease_duration
        self.location = where
        self._leases: dict[str, _Lease] = {}
        self._empty: dict[str, str] = {}  # key -> ETag of a blob created empty for its lease
        self._watchers: list[Callable[[str, str], None]] = []

    # --- names and errors

    def blob_name(self, key: str) -> str:
        return f"{self.prefix}{self.task}{BLOB_SUFFIX.get(key, '.' + key + '.json')}"

    def where(self, key: str) -> str:
        return f"{self.location}/{self.blob_name(key)}"

    def _blob(self, name: str) -> Any:
        return self.container.get_blob_client(name)

    def _fail(self, exc: Exception, doing: str) -> Exception:
        """Our own words for an SDK error: the SDK's text may quote the request."""
        code = _code(exc)
        if not code and _is_credential_failure(exc):
            return StateError(f"{doing}: no Azure credential for {self.location} (DefaultAzureCredential got no token)", hint=SIGN_IN_HINT)
        if _is_untrusted_certificate(exc):
            return StateError(f"{doing}: the TLS certificate of {self.location} is not trusted",
                              hint="set REQUESTS_CA_BUNDLE or SSL_CERT_FILE to a PEM file holding its CA")
        if code == "ContainerNotFound":
            return StateError(f"container {self.location} does not exist", hint="create it first (az storage container create), then retry")
        if code in LOST_CODES:
            return StateError(f"lost the lock while {doing} ({code}); nothing more was written", hint="run the command again")
        if code == "ConditionNotMet":
            return StateError(f"{doing}: the blob changed since it was read", hint="another process wrote it; run the command again")
        if code in DENIED_CODES:
            return StateError(f"{doing}: access to {self.location} was denied ({code})",
                              hint="check the backend's credential and that it holds the Storage Blob Data Contributor role on the container")
        status = getattr(exc, "status_code", None)
        detail = code or (f"HTTP {status}" if status else type(exc).__name__)
        return StateError(f"{doing} at {self.location} failed ({detail})", hint="check that the storage account is reachable; state was not changed")

    # --- Store

    def get(self, key: str) -> Blob | None:
        from azure.core.exceptions import AzureError

        try:
            download = self._blob(self.blob_name(key)).download_blob()
            data = download.readall()
        except AzureError as exc:
            if _code(exc) == "BlobNotFound":
                return None
            raise self._fail(exc, f"reading {self.blob_name(key)}") from None
        etag = download.properties.etag
        if not data:
            self._empty[key] = etag  # created empty to hold a lease: no state yet
            return None
        return Blob(data, etag)

    def put(self, key: str, data: bytes, expect: str | None) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError

        lease = self._fence(key)
        kwargs: dict[str, Any] = {"overwrite": True, "lease": lease.info.id if lease else None}
        if lease is not None:
            kwargs["metadata"] = _lock_metadata(lease.info)
        if expect is None and key in self._empty:
            expect = self._empty[key]
        if expect is None:
            kwargs["overwrite"] = False
        elif expect != ANY:
            kwargs.update(etag=expect, match_condition=MatchConditions.IfNotModified)
        try:
            result = self._blob(self.blob_name(key)).upload_blob(data, **kwargs)
        except AzureError as exc:
            if _code(exc) == "BlobAlreadyExists":
                raise StateError(f"{self.where(key)} was created by someone else since it was read", hint="run the command again") from None
            if lease is not None and _code(exc) == "ConditionNotMet" and not self._still_held(lease):
                raise StateError(f"lost the lock while writing {self.blob_name(key)} ({lease.lost}); nothing more was written",
                                 hint="someone broke the lease; run the command again") from None
            raise self._fail(exc, f"writing {self.blob_name(key)}") from None
        self._empty.pop(key, None)
        return str(result["etag"])

    def _fence(self, key: str) -> _Lease | None:
        """The lease a write to `key` must present; refuses once a lease is lost.

        Checkpoint writes during a run prove the run lease is still ours by renewing it."""
        if key == "state":
            lease = self._leases.get("state")
        elif key == "checkpoints" and RUN_LOCK in self._leases:
            lease = self._leases[RUN_LOCK]
            self._check(lease, "writing checkpoints")
            try:
                lease.renew()
            except Exception as exc:
                lease.lost = f"run lease renewal failed ({_why(exc)})"
                hint = SIGN_IN_HINT if _is_credential_failure(exc) else "another process may be running this task"
                raise StateError(f"lost the run lock ({lease.lost}); checkpoints were not written", hint=hint) from None
            return None  # the run lease guards the run-lock blob, not this one
        else:
            return None
        if lease is not None:
            self._check(lease, f"writing {key}")
        return lease

    def _still_held(self, lease: _Lease) -> bool:
        """After a refused write: is it our lease that is gone (Azure checks the ETag first)?"""
        try:
            lease.renew()
            return True
        except Exception as exc:
            lease.lost = f"lease gone ({_why(exc)})"
            return False

    def _check(self, lease: _Lease, doing: str) -> None:
        if lease.lost:
            raise StateError(f"lost the lock before {doing}: {lease.lost}; nothing more was written", hint="run the command again")

    def delete(self, key: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._blob(self.blob_name(key)).delete_blob()
        except AzureError as exc:
            if _code(exc) != "BlobNotFound":
                raise self._fail(exc, f"deleting {self.blob_name(key)}") from None

    # --- Locker

    def try_lock(self, name: str, info: LockInfo) -> LockInfo | None:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import BlobLeaseClient

        blob = self._blob(self._lock_blob(name))
        client = BlobLeaseClient(blob, lease_id=info.id)
        try:
            try:
                client.acquire(lease_duration=self.lease_duration)
            except AzureError as exc:
                if _code(exc) != "BlobNotFound":
                    raise
                self._create_empty(blob)
                client.acquire(lease_duration=self.lease_duration)
        except AzureError as exc:
            if _code(exc) == "LeaseAlreadyPresent":
                return self.holder(name) or LockInfo("unknown", "unknown", "another process (no lock info)", "", "")
            raise self._fail(exc, f"taking the {name} lock") from None
        try:
            blob.set_blob_metadata(_lock_metadata(info), lease=client)
        except AzureError as exc:
            client.release()
            raise self._fail(exc, f"recording the {name} lock") from None
        self._leases[name] = _Lease(client, info, self.lease_duration, lambda why: self._lost(name, why))
        return None

    def _create_empty(self, blob: Any) -> None:
        from azure.core.exceptions import AzureError

        try:
            blob.upload_blob(b"", overwrite=False)
        except AzureError as exc:
            if _code(exc) != "BlobAlreadyExists":
                raise

    def _lost(self, name: str, why: str) -> None:
        log.debug("the %s lock on %s was lost: %s; stopping", name, self.location, why)  # the command then fails saying so
        for watcher in self._watchers:
            watcher(name, why)

    def watch(self, callback: Callable[[str, str], None]) -> None:
        self._watchers.append(callback)

    def held_fds(self) -> list[int]:
        return []  # a lease outlives a killed dstream by itself, until it expires

    def _lock_blob(self, name: str) -> str:
        return f"{self.prefix}{self.task}{LOCK_BLOB[name]}"

    def unlock(self, name: str, info: LockInfo) -> None:
        lease = self._leases.pop(name, None)
        if lease is None:
            return
        lease.stop()
        if lease.lost:
            return
        try:
            lease.client.release()
        except Exception as exc:  # it expires by itself within lease_duration; the command's own error says why storage failed
            log.debug("could not release the %s lock (%s); it expires within %d s", name, _why(exc), self.lease_duration)

    def holder(self, name: str) -> LockInfo | None:
        from azure.core.exceptions import AzureError

        try:
            props = self._blob(self._lock_blob(name)).get_blob_properties()
        except AzureError as exc:
            if _code(exc) in ("BlobNotFound", "ContainerNotFound"):
                return None
            raise self._fail(exc, f"reading the {name} lock") from None
        if props.lease.state != "leased":
            return None
        return _parse_lock_metadata(props.metadata) or LockInfo("unknown", "unknown", "another process (no lock info)", "", "")

    def force_unlock(self, name: str, lock_id: str) -> None:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import BlobLeaseClient

        holder = self.holder(name)
        if holder is None or holder.id != lock_id:
            raise StateError(f"lock ID {lock_id} does not match the current {name} lock ({holder.id if holder else 'none'})")
        try:
            BlobLeaseClient(self._blob(self._lock_blob(name))).break_lease(lease_break_period=0)
        except AzureError as exc:
            raise self._fail(exc, f"breaking the {name} lock") from None


def _is_credential_failure(exc: BaseException) -> bool:
    """The credential produced no token (azure-identity raises ClientAuthenticationError without a response)."""
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(exc, ClientAuthenticationError) and getattr(exc, "response", None) is None


def _is_untrusted_certificate(exc: BaseException) -> bool:
    import ssl

    seen: BaseException | None = exc
    for _ in range(10):  # the SDK wraps requests' error, which wraps urllib3's, which wraps ssl's
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "inner_exception", None)
    return False


def ca_bundle(environ: Any = os.environ) -> str | None:
    """The CA bundle users configured: REQUESTS_CA_BUNDLE, else SSL_CERT_FILE; a named file must exist."""
    for variable in CA_BUNDLE_VARIABLES:
        path = environ.get(variable)
        if path:
            if not os.path.isfile(path):
                raise UsageError(f"{variable} names {path}, which is not a file", hint="point it at a PEM bundle of trusted CAs, or unset it")
            return str(path)
    return None


def _without_query(url: str) -> str:
    """An account URL fit for messages: a SAS token travels in the query string."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _lock_metadata(info: LockInfo) -> dict[str, str]:
    return {LOCK_METADATA: base64.b64encode(json.dumps(info.as_dict()).encode()).decode()}


def _parse_lock_metadata(metadata: dict[str, str] | None) -> LockInfo | None:
    try:
        return LockInfo(**json.loads(base64.b64decode((metadata or {})[LOCK_METADATA])))
    except (KeyError, ValueError, TypeError):
        return None


def azure_blob_backend(settings: dict[str, Any], task: str) -> Backend:
    """Build the backend from a `backend "azureblob"` block (validated here)."""
    container_name = settings.get("container")
    if not container_name:
        raise UsageError('backend "azureblob" needs container = "..."')
    duration = int(settings.get("lease_duration", DEFAULT_LEASE))
    if not LEASE_RANGE[0] <= duration <= LEASE_RANGE[1]:
        raise UsageError(f'backend "azureblob": lease_duration must be {LEASE_RANGE[0]} to {LEASE_RANGE[1]} seconds, not {duration}')
    conn, url = settings.get("connection_string"), settings.get("account_url")
    if bool(conn) == bool(url):
        raise UsageError('backend "azureblob" needs exactly one of account_url (Azure AD sign-in) or connection_string')
    from azure.storage.blob import BlobServiceClient, LinearRetry

    # The Blob SDK's default retries wait 15 s, then more: longer than a lease lives.
    options: dict[str, Any] = {"retry_policy": LinearRetry(backoff=1, random_jitter_range=1, retry_total=2),
                               "connection_timeout": 5, "read_timeout": 20}
    trusted = ca_bundle()
    if trusted:
        options["connection_verify"] = trusted
    if conn:
        try:
            service = BlobServiceClient.from_connection_string(conn, **options)
        except ValueError:
            raise UsageError('backend "azureblob": connection_string is not a valid storage connection string') from None
    else:
        if not str(url).lower().startswith("https://"):
            raise UsageError('backend "azureblob": account_url must start with https:// (Azure AD tokens are sent over TLS only)')
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(**({"connection_verify": trusted} if trusted else {}))
        service = BlobServiceClient(str(url), credential=credential, **options)
    where = f"{_without_query(service.url)}/{container_name}"
    backend = AzureBlobBackend(service.get_container_client(container_name), str(settings.get("prefix") or ""), task, duration, where)
    return Backend(backend, backend, f"azureblob ({where})")
