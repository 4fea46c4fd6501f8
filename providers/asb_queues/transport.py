"""Which certificate authorities asb-queues trusts for Service Bus, as users configure it.

azure-servicebus checks an AMQPS server against `connection_verify` (or an
ssl_context) and otherwise only against certifi's bundle: it ignores
SSL_CERT_FILE, so behind a TLS-inspecting proxy or with a private CA it fails
where every HTTPS tool works. The HTTP-based clients (azure-core over requests)
honour REQUESTS_CA_BUNDLE but not SSL_CERT_FILE. dstream gives every Service Bus
client, AMQP and management alike, the same bundle: REQUESTS_CA_BUNDLE, else
SSL_CERT_FILE, else the SDKs' defaults.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any

from providers import helper as h

CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")  # in order of precedence


def ca_bundle() -> str | None:
    """The CA bundle file the user named, or None for the SDKs' defaults. A named file that is missing is an error."""
    for name in CA_VARIABLES:
        path = os.environ.get(name, "").strip()
        if path:
            if not os.path.isfile(path):
                raise h.CommandFailed(f"{name} names {path!r}, which is not a readable file",
                                      hint=f"point {name} at a PEM bundle of the certificate authorities to trust, or unset it")
            return path
    return None


def client_options() -> dict[str, Any]:
    """Keyword arguments for any Service Bus client (ServiceBusClient, ServiceBusAdministrationClient, the ARM client)."""
    bundle = ca_bundle()
    return {"connection_verify": bundle} if bundle else {}


_VERIFY_REASON = re.compile(r"certificate verify failed: ([^(]+)")
UNTRUSTED_HINT = ("trust the certificate authority that signed it: put its PEM bundle in REQUESTS_CA_BUNDLE or SSL_CERT_FILE "
                  "(azure-servicebus does not read the system store)")


def certificate_failure(exc: BaseException, what: str) -> h.CommandFailed | None:
    """The one-line failure for a server certificate that is not trusted (never worth retrying), else None."""
    seen: BaseException | None = exc
    for _ in range(10):  # the SDK wraps the ssl error once or twice
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            found = _VERIFY_REASON.search(str(seen))
            reason = getattr(seen, "verify_message", None) or (found.group(1).strip() if found else "certificate verify failed")
            return h.CommandFailed(f"{what}: the Service Bus server's TLS certificate is not trusted ({reason})", hint=UNTRUSTED_HINT)
        seen = seen.__cause__ or seen.__context__
    return None


CREDENTIAL_HINT = ("give the identity DefaultAzureCredential signs in as (managed identity, AZURE_* variables, az login) the "
                   "Azure Service Bus Data Sender role on the namespace, or check the connection string's key and its Send right")


def credential_failure(exc: BaseException, what: str) -> h.CommandFailed | None:
    """The one-line failure for credentials Service Bus refused (a token refused or expired, a missing claim), else None."""
    from azure.servicebus import exceptions as e

    if not isinstance(exc, (e.ServiceBusAuthenticationError, e.ServiceBusAuthorizationError)):
        return None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    refusal = _token_refusal(exc)
    return h.CommandFailed(f"Service Bus refused the credentials for {what}: {refusal or text}", hint=CREDENTIAL_HINT)


def _token_refusal(exc: BaseException) -> str | None:
    """The put-token answer (status code and description) inside the SDK's wrapping, if there is one."""
    seen: object = exc
    for _ in range(10):
        description = getattr(seen, "status_description", None)
        if description:
            text = description.decode("utf-8", "replace") if isinstance(description, bytes) else str(description)
            return f"the token was refused (status {getattr(seen, 'status_code', '?')}: {text})"
        seen = getattr(seen, "inner_exception", None) or getattr(seen, "__cause__", None) or getattr(seen, "__context__", None)
        if seen is None:
            return None
    return None
