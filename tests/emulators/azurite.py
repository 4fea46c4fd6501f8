"""Azurite (Microsoft's Blob Storage emulator) as a subprocess on a loopback port.

Used by tests/blob and bench/blob_requests.py. Never a thread of the caller:
the server is `node_modules/.bin/azurite-blob`, started in its own process
group, stopped by pid (SIGTERM, then SIGKILL) and restartable on the same
port. In-memory by default; `location=DIR` keeps the data on disk so it
survives a restart.

`Azurite(tls=Certificates(dir))` serves HTTPS (`--cert`, `--key`) with a trustme CA
(`ca` is the bundle a client must trust) and `--oauth basic`: bearer tokens are
then accepted, over HTTPS only, when their issuer, audience, nbf and exp pass the
checks of node_modules/azurite/dist/src/blob/authentication/BlobTokenAuthenticator.js
(the signature is not verified; see tests/emulators/entra.py). Shared-key requests
(the connection string) keep working on the same server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# The well-known development storage key every Azurite accepts (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 20.0


class AzuriteError(RuntimeError):
    pass


class Certificates:
    """A trustme CA and a server certificate for 127.0.0.1 and localhost, as PEM files in `directory`."""

    def __init__(self, directory: Path):
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA()
        issued = authority.issue_cert("127.0.0.1", "localhost")
        self.ca, self.cert, self.key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
        authority.cert_pem.write_to_path(str(self.ca))
        issued.private_key_and_cert_chain_pem.write_to_path(str(self.cert))
        issued.private_key_pem.write_to_path(str(self.key))


def _load_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved here: the child between fork and exec must not import anything


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so a killed test run
    leaves no emulator behind."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Azurite:
    """One Azurite blob service. `start()`, `stop()`, `restart()`; `connection_string`."""

    def __init__(self, port: int | None = None, location: Path | None = None, tls: Certificates | None = None):
        self.port = port or free_port()
        self.location = Path(location) if location else None
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.endpoint};")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        storage = ["--location", str(self.location)] if self.location else ["--inMemoryPersistence"]
        tls = ["--cert", str(self.tls.cert), "--key", str(self.tls.key), "--oauth", "basic"] if self.tls else []
        return [str(BINARY), "--silent", "--disableTelemetry", "--skipApiVersionCheck", *storage,
                "--blobHost", "127.0.0.1", "--blobPort", str(self.port), *tls]

    def output(self) -> str:
        """What Azurite printed (stdout and stderr), for error messages."""
        try:
            return self._log.read_text(errors="replace") if self._log else ""
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = START_TIMEOUT) -> Azurite:
        if self.process is not None and self.process.poll() is None:
            raise AzuriteError(f"Azurite already runs as pid {self.process.pid}")
        if not BINARY.exists():
            raise AzuriteError(f"{BINARY} not found: run `npm install --no-audit --no-fund` in {ROOT}")
        if _accepts(self.port):
            raise AzuriteError(f"port {self.port} is already taken by another process")
        if self.location:
            self.location.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            self._log.unlink(missing_ok=True)
        fd, name = tempfile.mkstemp(prefix="azurite-", suffix=".log")
        self._log = Path(name)
        with os.fdopen(fd, "wb") as sink:
            # cwd: Azurite writes its debug/extent files relative to it when no --location is given
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                            cwd=str(self.location or tempfile.gettempdir()), start_new_session=True,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise AzuriteError(f"Azurite exited with code {code} before accepting on port {self.port}:\n{self.output()}")
            if _accepts(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise AzuriteError(f"Azurite did not accept on 127.0.0.1:{self.port} within {timeout:.0f}s:\n{self.output()}")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process (group), SIGKILL after `grace` seconds; waits until the port is free."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self._signal(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL at once (a crash, not a shutdown)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self._signal(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # its own session: the group id is its pid
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)

    def restart(self, timeout: float = START_TIMEOUT) -> Azurite:
        """Stop and start again on the same port (data survives only with `location`)."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
