"""Resource Manager calls for asb-queues (azure-mgmt-servicebus), imported only when used.

`connect(config)` picks the API a task manages its queues through: this one when
the task names subscription_id + resource_group + namespace, else the
namespace's own management API (namespace_api.py), with the same interface.

One namespace GET for the tier, one paged list for every queue; PUT and DELETE
per change. azure-core retries 408/429/5xx and honours Retry-After. Errors
become CommandFailed with the queue, the operation and ARM's code; never a
token or a connection string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from providers import helper as h
from providers.asb_queues import settings, transport
from providers.asb_queues.errors import azure_call, first_line, scrub

T = TypeVar("T")
RETRIES = 8


class QueueApi(Protocol):
    """What the lifecycle and the run need from either management API."""

    def tier(self) -> str: ...
    def queues(self) -> dict[str, dict[str, Any]]: ...
    def counts(self) -> dict[str, dict[str, Any]]: ...
    def put(self, name: str, attrs: dict[str, Any], create: bool = True) -> dict[str, Any]: ...
    def delete(self, name: str) -> None: ...
    def resource_id(self, name: str) -> str: ...
    def close(self) -> None: ...


def connect(config: dict[str, Any]) -> QueueApi:
    """The management client of the task's mode (Management or namespace_api.NamespaceManagement)."""
    if settings.mode(config) == settings.RESOURCE_MANAGER:
        return Management(config)
    from providers.asb_queues.namespace_api import NamespaceManagement

    return NamespaceManagement(config)


class Management:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.rg = config["resource_group"]
        self.ns = config["namespace"]
        endpoint = config["management_endpoint"].rstrip("/")
        if not endpoint.startswith("https://"):
            raise h.CommandFailed(f"management_endpoint must be an https:// URL, not {endpoint!r}", key="management_endpoint")
        from azure.identity import DefaultAzureCredential
        from azure.mgmt.servicebus import ServiceBusManagementClient

        self.credential = DefaultAzureCredential()
        self.client = ServiceBusManagementClient(self.credential, config["subscription_id"], base_url=endpoint,
                                                 credential_scopes=[f"{endpoint}/.default"], retry_total=RETRIES, **transport.client_options())

    def call(self, what: str, fn: Callable[[], T], key: str | None = None) -> T:
        def refused(exc: Any) -> Exception:
            code = getattr(getattr(exc, "error", None), "code", None) or exc.status_code
            message = getattr(getattr(exc, "error", None), "message", None) or first_line(exc)
            return h.CommandFailed(f"Resource Manager refused {what}: {code}: {scrub(str(message))}", key=key)

        return azure_call(
            fn,
            unauthorized=lambda exc: h.CommandFailed(f"cannot authenticate to Azure for {what}: {scrub(first_line(exc))}",
                                                     hint="sign in (az login), or set the environment for DefaultAzureCredential"),
            refused=refused,
            unreachable=lambda exc: h.CommandFailed(
                f"cannot reach Resource Manager at {self.config['management_endpoint']} for {what}: {scrub(first_line(exc))}",
                key="management_endpoint"))

    def tier(self) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            namespace = self.call(f"reading namespace {self.ns}", lambda: self.client.namespaces.get(self.rg, self.ns))
        except ResourceNotFoundError:
            raise h.CommandFailed(f"Service Bus namespace {self.ns!r} not found in resource group {self.rg!r}", key="namespace") from None
        sku = getattr(getattr(namespace, "sku", None), "name", None) or "Standard"
        name = str(getattr(sku, "value", sku))
        return next((t for t in settings.TIERS if t.lower() == name.lower()), "Standard")

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue of the namespace, keyed by folded name, as REST JSON: one paged list (its names are lower-cased)."""
        def fetch() -> dict[str, dict[str, Any]]:
            return {settings.fold(str(q.name)): rest(q) for q in self.client.queues.list_by_namespace(self.rg, self.ns)}

        return self.call(f"listing the queues of {self.ns}", fetch)

    def counts(self) -> dict[str, dict[str, Any]]:
        """Status and message counts per queue (folded name), from the one paged list."""
        found: dict[str, dict[str, Any]] = {}
        for name, queue in self.queues().items():
            props = queue.get("properties") or {}
            counts = props.get("countDetails") or {}
            found[name] = {"status": props.get("status", "Unknown"), "active_messages": counts.get("activeMessageCount", 0),
                           "dead_letter_messages": counts.get("deadLetterMessageCount", 0),
                           "scheduled_messages": counts.get("scheduledMessageCount", 0), "size_bytes": props.get("sizeInBytes", 0)}
        return found

    def put(self, name: str, attrs: dict[str, Any], create: bool = True) -> dict[str, Any]:
        """Create or update (ARM's PUT is both: `create` only matters to the namespace API)."""
        body: Any = {"properties": settings.arm_properties(attrs)}  # REST JSON: exactly what ARM gets
        return rest(self.call(f"writing queue {name}", lambda: self.client.queues.create_or_update(self.rg, self.ns, name, body), key="queue"))

    def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.call(f"deleting queue {name}", lambda: self.client.queues.delete(self.rg, self.ns, name))
        except ResourceNotFoundError:
            pass

    def resource_id(self, name: str) -> str:
        return settings.resource_id(self.config, name)

    def close(self) -> None:
        self.client.close()
        self.credential.close()


def rest(model: Any) -> dict[str, Any]:
    """An SDK model as its REST JSON (durations stay ISO text, no timedelta rounding)."""
    if isinstance(model, dict):
        return model
    return dict(model.as_dict()) if hasattr(model, "as_dict") else dict(model)
