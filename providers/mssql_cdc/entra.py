"""Sign in to Azure SQL with an Entra ID access token from DefaultAzureCredential.

The token goes to ODBC Driver 17/18 as the pre-connect attribute SQL_COPT_SS_ACCESS_TOKEN (1256):
a 4-byte little-endian length, then the token in UTF-16-LE (the ACCESSTOKEN struct of msodbcsql's
docs). The driver sends it in LOGIN7's FEDAUTH feature (security-token library). The token only
ever lives in memory: not in the connection string, not in a log line, not in an error.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from providers import helper as h

SQL_COPT_SS_ACCESS_TOKEN = 1256
SQL_SCOPE = "https://database.windows.net/.default"
HINT = ("DefaultAzureCredential tries, in order: AZURE_CLIENT_ID/AZURE_TENANT_ID with AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH, "
        "workload identity (AZURE_FEDERATED_TOKEN_FILE), managed identity, then the Azure CLI (az login)")


def access_token_struct(token: str) -> bytes:
    data = token.encode("utf-16-le")
    return struct.pack("<I", len(data)) + data


def refuse_freetds(connection_string: str) -> None:
    """FreeTDS has no way to send an access token: say so before trying."""
    if "freetds" in connection_string.lower() or "libtdsodbc" in connection_string.lower():
        raise h.CommandFailed("authentication = \"azure\" needs Microsoft ODBC Driver 17 or 18 for SQL Server: FreeTDS cannot sign in with an Entra ID token",
                              hint="install msodbcsql18 and name it with DRIVER={ODBC Driver 18 for SQL Server}", key="connection_string")


def summary(exc: Exception) -> str:
    """One line of azure-identity's error: what each credential it tried said ("AzureCliCredential: Please run 'az login' ...")."""
    lines = [x.strip() for x in str(getattr(exc, "message", None) or exc).splitlines() if x.strip()]
    tried = [x for x in lines if ":" in x and x.split(":", 1)[0].endswith("Credential")]
    return "; ".join(tried) if tried else (lines[0] if lines else type(exc).__name__)


class TokenSource:
    """One DefaultAzureCredential per provider process; a token asked for at each (re)connect (the credential caches and renews it)."""

    def __init__(self) -> None:
        self.credential: Any = None

    def attrs_before(self) -> dict[int, bytes]:
        from azure.core.exceptions import ClientAuthenticationError

        if self.credential is None:
            from azure.identity import DefaultAzureCredential

            logging.getLogger("azure.identity").setLevel(logging.ERROR)  # its multi-line warning would repeat the one-line error below
            self.credential = DefaultAzureCredential()
        try:
            token = self.credential.get_token(SQL_SCOPE).token
        except ClientAuthenticationError as exc:  # CredentialUnavailableError is one too
            raise h.CommandFailed(f"cannot get an Entra ID token for Azure SQL: {summary(exc)}", hint=HINT, key="authentication") from None
        return {SQL_COPT_SS_ACCESS_TOKEN: access_token_struct(token)}
