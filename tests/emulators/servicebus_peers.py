"""Start and drive the two Azure Service Bus test peers as subprocesses.

`AzurePeers(tmp)` starts the Resource Manager peer (arm.py, HTTPS with a trustme
CA) and the AMQP peer (servicebus.py) on free loopback ports, sharing one model
directory. arm.py also serves the namespace's own management API (ATOM over
HTTPS, servicebus_admin.py) on the port the connection strings name, and
forwards the AMQP connections arriving there to servicebus.py: the admin client
and the AMQP client both dial the connection string's host:port. `env()` is what a provider process needs to reach them through the
real azure-identity chain: a stand-in `az` on PATH printing a token,
AZURE_TOKEN_CREDENTIALS=AzureCliCredential, and REQUESTS_CA_BUNDLE for the CA.
Each peer is stopped by pid (its own process group).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUBSCRIPTION = "00000000-0000-0000-0000-00000000c0de"
RESOURCE_GROUP = "rg-dstream"
NAMESPACE = "dstream-ns"
TOKEN = "peer-token-4b1d"  # what the stand-in az prints; the ARM peer accepts only this
MANAGE_KEY = ("k", "c2VjcmV0LWtleQ==")  # SAS key with Manage, Send, Listen
SEND_KEY = ("sender", "c2VuZC1vbmx5LWtleQ==")  # SAS key with Send only
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class PeerProcess:
    """One peer: a subprocess in its own session, ready when its port accepts."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path):
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PeerProcess:
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} peer exited with {self.process.returncode}:\n{self.log.read_text(errors='replace')}")
            if accepts(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} peer did not accept on port {self.port}:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


def write_az(directory: Path, token: str = TOKEN) -> Path:
    """A stand-in Azure CLI: `az account get-access-token --output json --resource R` prints a token."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    expires = int(time.time()) + 3600
    reply = {"accessToken": token, "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)), "expires_on": expires,
             "subscription": SUBSCRIPTION, "tenant": "00000000-0000-0000-0000-000000000001", "tokenType": "Bearer"}
    az.write_text("#!/bin/sh\n"
                  'case "$*" in *"account get-access-token"*) ;; *) echo "stand-in az: unsupported: $*" >&2; exit 2;; esac\n'
                  f"cat <<'EOF'\n{json.dumps(reply)}\nEOF\n")
    az.chmod(0o755)
    return bin_dir


class AzurePeers:
    """Both peers for one namespace (tier `sku`); `env()` for provider processes."""

    def __init__(self, directory: Path, sku: str = "Standard", page_size: int = 100, extra_namespaces: tuple[tuple[str, str], ...] = (),
                 namespace: str = NAMESPACE):
        self.dir = Path(directory)
        self.namespace = namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sku = sku
        self.ca, cert, key = make_certificates(self.dir)
        self.bin = write_az(self.dir)
        self.arm_port, self.amqp_port, self.amqp_backend_port = free_port(), free_port(), free_port()
        spaces = [f"{SUBSCRIPTION}/{RESOURCE_GROUP}/{namespace}={sku}"] + [f"{SUBSCRIPTION}/{RESOURCE_GROUP}/{n}={t}" for n, t in extra_namespaces]
        self.arm = PeerProcess("arm", [sys.executable, str(HERE / "arm.py"), "--port", str(self.arm_port), "--dir", str(self.dir), "--cert", str(cert),
                                       "--key", str(key), "--token", TOKEN, "--page-size", str(page_size),
                                       *[a for s in spaces for a in ("--namespace", s)],
                                       "--namespace-api", f"{namespace}={self.amqp_port}", "--amqp-backend", str(self.amqp_backend_port),
                                       "--sas-key", f"{MANAGE_KEY[0]}:{MANAGE_KEY[1]}:Manage,Send,Listen",
                                       "--sas-key", f"{SEND_KEY[0]}:{SEND_KEY[1]}:Send"], self.arm_port, self.dir / "arm.log")
        self.amqp = PeerProcess("servicebus", [sys.executable, str(HERE / "servicebus.py"), "--port", str(self.amqp_backend_port),
                                               "--namespace", namespace, "--dir", str(self.dir)], self.amqp_backend_port, self.dir / "servicebus.log")

    def start(self) -> AzurePeers:
        self.amqp.start()
        self.arm.start()
        return self

    def stop(self) -> None:
        self.amqp.stop()
        self.arm.stop()

    def __enter__(self) -> AzurePeers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a provider needs -----------------------------------------------------------

    @property
    def management_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.arm_port}"

    def connection_string_for(self, key: tuple[str, str]) -> str:
        return f"Endpoint=sb://127.0.0.1:{self.amqp_port};SharedAccessKeyName={key[0]};SharedAccessKey={key[1]};UseDevelopmentEmulator=true"

    @property
    def connection_string(self) -> str:
        """Manage, Send, Listen."""
        return self.connection_string_for(MANAGE_KEY)

    @property
    def send_connection_string(self) -> str:
        """Send only: the namespace API refuses it (401)."""
        return self.connection_string_for(SEND_KEY)

    def config(self, **extra: Any) -> dict[str, Any]:
        """Resource Manager mode (and the Manage connection string for sending)."""
        base = {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP, "namespace": self.namespace,
                "management_endpoint": self.management_endpoint, "connection_string": self.connection_string}
        return {**base, **extra}

    def namespace_config(self, **extra: Any) -> dict[str, Any]:
        """Namespace-API mode: nothing but a connection string."""
        return {"connection_string": self.connection_string, **extra}

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "REQUESTS_CA_BUNDLE": str(self.ca),
                "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential"}

    # --- test hooks ----------------------------------------------------------------------

    def _arm(self, method: str, path: str, body: Any = None, token: bool = False) -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.ca))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.management_endpoint + path, data=data, method=method, headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def arm_requests(self) -> dict[str, Any]:
        return dict(self._arm("GET", "/_peer/stats")[1])

    def namespace_api_requests(self) -> dict[str, int]:
        """Requests to the namespace management API since the last reset, by kind."""
        return dict(self.arm_requests()["namespace_api"])

    def arm_writes(self) -> list[str]:
        """The queue PUTs and DELETEs since the last reset, as "METHOD name" (the URL's casing)."""
        return list(self.arm_requests()["log"])

    def listed_queue_names(self) -> list[str]:
        """Names as the queue list answers them (the first page)."""
        return [q["name"] for q in self._arm("GET", self.queue_path(), token=True)[1]["value"]]

    def reset_arm_requests(self) -> None:
        self._arm("POST", "/_peer/reset", {})

    def arm_faults(self, **faults: Any) -> None:
        self._arm("POST", "/_peer/faults", faults)

    def queue_path(self, name: str = "") -> str:
        base = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ServiceBus/namespaces/{self.namespace}/queues"
        return f"{base}/{name}?api-version=2026-01-01" if name else f"{base}?api-version=2026-01-01"

    def put_queue(self, name: str, **properties: Any) -> tuple[int, Any]:
        """Change things 'outside dstream', as someone in the portal would."""
        return self._arm("PUT", self.queue_path(name), {"properties": properties}, token=True)

    def get_queue(self, name: str) -> dict[str, Any] | None:
        status, body = self._arm("GET", self.queue_path(name), token=True)
        return body if status == 200 else None

    def delete_queue(self, name: str) -> int:
        return self._arm("DELETE", self.queue_path(name), token=True)[0]

    def queues(self) -> dict[str, dict[str, Any]]:
        namespace = json.loads((self.dir / "model.json").read_text())["namespaces"][self.namespace.lower()]
        return {name: {k: v for k, v in props.items() if k != "peerIncarnation"} for name, props in namespace["queues"].items()}

    def amqp_stats(self) -> dict[str, Any]:
        time.sleep(0.25)  # the peer rewrites its stats every 0.1 s
        try:
            return dict(json.loads((self.dir / "stats.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def amqp_control(self, **switches: int) -> None:
        path = self.dir / "control.json"
        tmp = self.dir / "control.json.tmp"
        tmp.write_text(json.dumps(switches))
        os.replace(tmp, path)
        time.sleep(0.01)

    def receive(self, queue: str, expect: int, timeout: float = 20.0) -> list[Any]:
        """Receive (peek-lock, then complete) through the real SDK until `expect` arrived or nothing more comes."""
        from azure.servicebus import ServiceBusClient

        got: list[Any] = []
        deadline = time.monotonic() + timeout
        with ServiceBusClient.from_connection_string(self.connection_string, retry_total=1) as client, \
                client.get_queue_receiver(queue, max_wait_time=1, prefetch_count=200) as receiver:
            while time.monotonic() < deadline:
                batch = receiver.receive_messages(max_message_count=200, max_wait_time=1 if len(got) < expect else 0.5)
                if not batch:
                    if len(got) >= expect:
                        break
                    continue
                for message in batch:
                    receiver.complete_message(message)
                got.extend(batch)
        return got
