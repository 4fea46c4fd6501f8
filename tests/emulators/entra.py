"""A stand-in Azure CLI that mints Entra-ID-shaped access tokens, for azure-identity's real AzureCliCredential.

`write_az(directory, lifetime=...)` writes `directory/bin/az`. azure-identity runs
`az account get-access-token --output json --resource R [--tenant T]` and reads
`accessToken` and `expires_on` (azure/identity/_credentials/azure_cli.py,
parse_token). Each call prints a new token: a JWT (header.payload.signature,
base64url) whose claims are the ones Azurite's `--oauth basic` checks in
node_modules/azurite/dist/src/blob/authentication/BlobTokenAuthenticator.js:
`nbf`, `exp` and `iat` present and now within [nbf, exp]; `iss` starting with
https://sts.windows.net/; `aud` https://storage.azure.com (the resource asked
for; the signature is not checked). Every token it hands out is appended to
`directory/issued.jsonl` (token, aud, exp), so tests can count refreshes and scan
outputs for the token values.

`mode` = "ok" | "logged-out" (exit 1 with the CLI's real "Please run 'az login'"
text, which azure-identity turns into CredentialUnavailableError) | "audience"
(tokens for another audience, which Azurite refuses). Rewrite the `mode` file
to switch while a process runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TENANT = "00000000-0000-0000-0000-000000000001"
SUBSCRIPTION = "00000000-0000-0000-0000-00000000c0de"

SCRIPT = r'''#!{python}
import base64, json, secrets, sys, time
from pathlib import Path

HOME = Path({home!r})
LIFETIME = {lifetime!r}
args = sys.argv[1:]
if args[:2] != ["account", "get-access-token"]:
    sys.stderr.write("stand-in az: unsupported: " + " ".join(args) + "\n")
    sys.exit(2)
mode = (HOME / "mode").read_text().strip()
if mode == "logged-out":
    sys.stderr.write("ERROR: Please run 'az login' to setup account.\n")
    sys.exit(1)
resource = args[args.index("--resource") + 1] if "--resource" in args else "https://management.core.windows.net/"
audience = "https://wrong.example.com" if mode == "audience" else resource.rstrip("/")

def part(doc):
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

now = int(time.time())
exp = now + LIFETIME
claims = {{"aud": audience, "iss": "https://sts.windows.net/{tenant}/", "iat": now, "nbf": now, "exp": exp,
          "oid": "11111111-2222-3333-4444-555555555555", "tid": "{tenant}", "jti": secrets.token_hex(8)}}
token = part({{"alg": "RS256", "typ": "JWT"}}) + "." + part(claims) + "." + secrets.token_urlsafe(32)
with open(HOME / "issued.jsonl", "a") as log:
    log.write(json.dumps({{"token": token, "aud": audience, "exp": exp}}) + "\n")
print(json.dumps({{"accessToken": token, "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(exp)), "expires_on": exp,
                  "subscription": "{subscription}", "tenant": "{tenant}", "tokenType": "Bearer"}}))
'''


class StandInAz:
    """The stand-in `az` in `directory`: `bin` for PATH, `issued()` for the tokens it handed out."""

    def __init__(self, directory: Path, lifetime: int = 3600, mode: str = "ok"):
        self.home = Path(directory)
        self.bin = self.home / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.set_mode(mode)
        az = self.bin / "az"
        az.write_text(SCRIPT.format(python=sys.executable, home=str(self.home), lifetime=lifetime, tenant=TENANT, subscription=SUBSCRIPTION))
        az.chmod(0o755)

    def set_mode(self, mode: str) -> None:
        assert mode in ("ok", "logged-out", "audience"), mode
        (self.home / "mode").write_text(mode + "\n")

    def issued(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in (self.home / "issued.jsonl").read_text().splitlines()]
        except FileNotFoundError:
            return []

    def tokens(self) -> list[str]:
        return [entry["token"] for entry in self.issued()]
