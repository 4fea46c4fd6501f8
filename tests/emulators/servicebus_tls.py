"""The Service Bus peers as the Azure credential meets them: AMQPS on 5671 of a loopback address, Entra tokens.

`EntraPeers(tmp)` is `AzurePeers` (Resource Manager over HTTPS, the AMQP peer,
one model) plus what sending without a connection string needs:
- the AMQP peer also serves TLS on <host>:5671, where <host> is a loopback
  address of its own (127.x.y.z): with a token credential the SDK dials
  fully_qualified_namespace:5671 and drops any port it is given;
- one trustme CA signs both servers' certificates (ARM's for 127.0.0.1, the
  AMQP peer's for <host>); `env(trust=...)` hands it over as users do, through
  REQUESTS_CA_BUNDLE or SSL_CERT_FILE, or not at all;
- a stand-in `az` (AzureCliCredential runs `az account get-access-token
  --output json --resource R`) that mints a fresh HS256 JWT per call for the
  Service Bus resource (aud = the resource as asked, exp = now + lifetime,
  signed with a key the AMQP peer checks), and the ARM peer's static token for
  any other resource. Every call is logged (DIR/az-calls.log: resource, expiry, the token)
  so tests can count refreshes and scan for leaks. No token is a test constant.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from servicebus_peers import TOKEN, AzurePeers

AMQPS_PORT = 5671  # fixed: the SDK always dials it with a token credential
HTTPS_PORT = 443  # fixed: ServiceBusAdministrationClient(fqns, credential) dials https://<fqns>


def loopback_with_free_amqps_port() -> str:
    """A 127.x.y.z of our own whose ports 5671 and 443 are free (other tests and helpers pick theirs at random too)."""
    for _ in range(200):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(2, 254)}"
        if all(port_free(host, port) for port in (AMQPS_PORT, HTTPS_PORT)):
            return host
    raise RuntimeError("no loopback address with free ports 5671 and 443")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def make_certificates(directory: Path, *hosts: str) -> tuple[Path, Path, Path]:
    """One CA (ca.pem) and one server certificate for every host (cert.pem, key.pem)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*hosts)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


AZ_SCRIPT = """\
#!{python}
# Stand-in Azure CLI for tests: `az account get-access-token --output json --resource R`.
import base64, hashlib, hmac, json, sys, time

args = sys.argv[1:]
if args[:2] != ["account", "get-access-token"] or "--resource" not in args:
    print("stand-in az: unsupported: " + " ".join(args), file=sys.stderr)
    sys.exit(2)
resource = args[args.index("--resource") + 1]
now = int(time.time())
if "servicebus" in resource:
    lifetime = int(open({lifetime_file!r}).read().strip())
    key = open({key_file!r}, "rb").read().strip()
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({{"alg": "HS256", "typ": "JWT"}}).encode())
    body = b64(json.dumps({{"aud": resource, "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000001/",
                          "nbf": now - 60, "iat": now - 60, "exp": now + lifetime, "oid": "stand-in"}}).encode())
    token = head + "." + body + "." + b64(hmac.new(key, (head + "." + body).encode(), hashlib.sha256).digest())
    expires = now + lifetime
else:
    token, expires = {arm_token!r}, now + 3600
with open({log_file!r}, "a") as log:
    log.write(json.dumps({{"resource": resource, "at": now, "expires_on": expires, "token": token}}) + "\\n")
print(json.dumps({{"accessToken": token, "expires_on": expires, "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)),
                  "subscription": "00000000-0000-0000-0000-00000000c0de", "tenant": "00000000-0000-0000-0000-000000000001",
                  "tokenType": "Bearer"}}))
"""


def write_minting_az(directory: Path, key_file: Path, lifetime_file: Path, log_file: Path) -> Path:
    bin_dir = directory / "entra-bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(AZ_SCRIPT.format(python=sys.executable, key_file=str(key_file), lifetime_file=str(lifetime_file), log_file=str(log_file),
                                   arm_token=TOKEN))
    az.chmod(0o755)
    return bin_dir


class EntraPeers(AzurePeers):
    """AzurePeers whose AMQP peer also speaks TLS on <host>:5671 and checks Entra tokens minted by a stand-in az."""

    def __init__(self, directory: Path, token_lifetime: int = 3600, namespace_api_tls: bool = False, **kwargs: Any):
        super().__init__(directory, **kwargs)
        self.host = loopback_with_free_amqps_port()
        self.ca, cert, key = make_certificates(self.dir, "127.0.0.1", "localhost", self.host)  # the ARM peer reads the same paths
        self.key_file = self.dir / "jwt.key"
        self.key_file.write_text(secrets.token_hex(32))
        self.lifetime_file = self.dir / "token-lifetime"
        self.set_token_lifetime(token_lifetime)
        self.az_log = self.dir / "az-calls.log"
        self.bin = write_minting_az(self.dir, self.key_file, self.lifetime_file, self.az_log)
        # the AMQP peer as AzurePeers starts it, plus the TLS listener and the key Entra tokens are checked with
        self.amqp.argv += ["--tls", f"{self.host}:{AMQPS_PORT}", "--cert", str(cert), "--key", str(key), "--jwt-key-file", str(self.key_file)]
        if namespace_api_tls:  # the namespace management API on https://<host> (443), Entra JWTs checked with the same key
            self.arm.argv += ["--namespace-api-tls", f"{self.host}:{HTTPS_PORT}", "--jwt-key-file", str(self.key_file)]

    def set_token_lifetime(self, seconds: int) -> None:
        """How long the tokens the stand-in az mints from now on live (negative: already expired)."""
        self.lifetime_file.write_text(str(seconds))

    def config(self, **extra: Any) -> dict[str, Any]:
        """An output config that holds no secret: Resource Manager coordinates and the namespace's host."""
        base = super().config(fully_qualified_namespace=self.host)
        del base["connection_string"]
        return {**base, **extra}

    def credential_namespace_config(self, **extra: Any) -> dict[str, Any]:
        """Namespace-API mode with the Azure credential: nothing but the namespace's host (needs namespace_api_tls=True)."""
        return {"fully_qualified_namespace": self.host, **extra}

    def env(self, trust: str = "requests") -> dict[str, str]:
        """What a process needs: the stand-in az on PATH, the CLI credential, and the CA as `trust` says."""
        env = {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential"}
        if trust == "requests":
            env["REQUESTS_CA_BUNDLE"] = str(self.ca)
        elif trust == "ssl":
            env["SSL_CERT_FILE"] = str(self.ca)
        elif trust != "none":
            raise ValueError(f"trust must be requests, ssl or none, not {trust!r}")
        return env

    def az_calls(self, resource_part: str = "servicebus") -> list[dict[str, Any]]:
        try:
            lines = self.az_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [call for call in map(json.loads, lines) if resource_part in call["resource"]]

    def jwt_key(self) -> bytes:
        return self.key_file.read_bytes().strip()


def scrubbed_environment(extra: dict[str, str]) -> dict[str, str]:
    """os.environ without any CA or credential setting of the outer shell, plus `extra`."""
    drop = {"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE"}
    base = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AZURE_")}
    return {**base, **extra}

