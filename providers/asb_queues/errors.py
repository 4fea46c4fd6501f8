"""How asb-queues turns azure-core's exceptions into one-line CommandFailed errors, never a secret.

Both management APIs (management.py, namespace_api.py) and the sender share this:
each says what its failures mean; `azure_call` sorts the exceptions into them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Explain = Callable[[Any], Exception]
_SECRET = re.compile(r"(SharedAccessKey=|SharedAccessSignature=|Bearer\s+|accessToken[\"']?\s*[:=]\s*[\"']?)[^;\s\"']+", re.I)


def scrub(text: str) -> str:
    """Remove anything shaped like a key, signature or token from a message."""
    return _SECRET.sub(lambda m: m.group(1) + "***", text)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def azure_call(fn: Callable[[], T], *, unauthorized: Explain, refused: Explain, unreachable: Explain) -> T:
    """`fn()`, with a refused credential, an HTTP error and an unreachable endpoint each raised as the
    caller's explanation (without the SDK's chained traceback). A missing entity stays
    ResourceNotFoundError: whether that is an error is the caller's to say."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError, ServiceRequestError

    try:
        return fn()
    except ResourceNotFoundError:
        raise
    except ClientAuthenticationError as exc:  # a subclass of HttpResponseError: sorted first
        raise unauthorized(exc) from None
    except HttpResponseError as exc:
        raise refused(exc) from None
    except ServiceRequestError as exc:
        raise unreachable(exc) from None
