"""The namespace's own management API for asb-queues (ServiceBusAdministrationClient), imported only when used.

The mode for teams that hold a SAS connection string with Manage rights (or
`fully_qualified_namespace` plus an Entra identity with a Service Bus data
role) and no Resource Manager access. Same interface as management.Management,
same REST-JSON shape of a queue ({"name", "id", "properties": {camelCase}}), so
the plan, the diff and the rendering do not know which API answered.

One namespace read ($namespaceinfo: the tier) and one paged feed of queues
(the SDK pages by 100) per plan; PUT (create, or update with If-Match: *) and
DELETE per change; status reads one paged runtime-properties feed.
Errors become CommandFailed with the queue, the operation and the service's
detail; a key without Manage is one line saying so. Never a key or a token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from providers import helper as h
from providers.asb_queues import settings, transport
from providers.asb_queues.errors import azure_call, first_line, scrub
from providers.asb_queues.management import RETRIES

T = TypeVar("T")
_DETAIL = re.compile(r"<Detail>(.*?)</Detail>", re.S)
_TRACKING = re.compile(r"\s*(To know more visit|TrackingId:).*$", re.S)
MISSING_MANAGE = ("the {what} key has no Manage right, which plan, init, destroy and status need "
                  "(the namespace answered: {detail})")
MANAGE_HINT = ("give connection_string a key with Manage (e.g. RootManageSharedAccessKey) and put the Send-only key in "
               "send_connection_string, which run uses")


def service_detail(exc: Any) -> str:
    """The service's <Detail> text without its tracking suffix (never the XML around it)."""
    detail = getattr(getattr(exc, "model", None), "detail", None)
    if not detail:
        response = getattr(exc, "response", None)
        try:
            body = response.text() if response is not None else ""
        except Exception:  # noqa: BLE001 - a body that cannot be read: fall back to the message
            body = ""
        match = _DETAIL.search(body or "")
        detail = match.group(1) if match else first_line(exc)
    return scrub(_TRACKING.sub("", " ".join(str(detail).split())).strip().rstrip("."))


class NamespaceManagement:
    def __init__(self, config: dict[str, Any]):
        from azure.servicebus.management import ServiceBusAdministrationClient

        self.config = config
        self.credential: Any = None
        text = config.get("connection_string")
        if text:
            self.host = settings.connection_host(text)
            self.key_name = settings.connection_key_name(text) or "connection_string"
            try:
                self.client = ServiceBusAdministrationClient.from_connection_string(text, retry_total=RETRIES, **transport.client_options())
            except (ValueError, TypeError):
                raise h.CommandFailed("connection_string is not a valid Service Bus connection string", key="connection_string") from None
        else:
            from azure.identity import DefaultAzureCredential

            self.host = settings.data_plane_host(config)
            self.key_name = ""
            self.credential = DefaultAzureCredential()
            self.client = ServiceBusAdministrationClient(self.host, self.credential, retry_total=RETRIES, **transport.client_options())
        self.ns = self.host

    def call(self, what: str, fn: Callable[[], T], key: str | None = None) -> T:
        return azure_call(
            fn,
            unauthorized=lambda exc: self._unauthorized(what, exc),
            refused=lambda exc: h.CommandFailed(f"the namespace {self.host} refused {what}: {exc.status_code}: {service_detail(exc)}", key=key),
            unreachable=lambda exc: h.CommandFailed(f"cannot reach the namespace {self.host} for {what}: {scrub(first_line(exc))}",
                                                    key="connection_string"))

    def _unauthorized(self, what: str, exc: Any) -> Exception:
        detail = service_detail(exc)
        if "claims required" in detail and self.key_name:
            return h.CommandFailed(MISSING_MANAGE.format(what=f"connection_string ({self.key_name})", detail=detail),
                                   hint=MANAGE_HINT, key="connection_string")
        if "claims required" in detail:
            return h.CommandFailed(f"the Azure identity may not manage namespace {self.host} ({detail})",
                                   hint="grant it the Azure Service Bus Data Owner role on the namespace, or use a Manage connection_string")
        return h.CommandFailed(f"the namespace {self.host} refused the credentials for {what}: {detail}",
                               hint="check the connection string's key (or sign in for DefaultAzureCredential)", key="connection_string")

    def tier(self) -> str:
        info = self.call(f"reading namespace {self.host}", self.client.get_namespace_properties)
        sku = str(getattr(info, "messaging_sku", None) or "Standard")
        return next((t for t in settings.TIERS if t.lower() == sku.lower()), "Standard")

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue of the namespace, keyed by folded name: one paged feed (names listed lower-cased)."""
        def fetch() -> dict[str, dict[str, Any]]:
            return {settings.fold(str(q.name)): self.rest(q) for q in self.client.list_queues()}

        return self.call(f"listing the queues of {self.host}", fetch)

    def counts(self) -> dict[str, dict[str, Any]]:
        """Status and message counts per queue (folded name): the queue feed (QueueRuntimeProperties has no status) and the runtime one."""
        def fetch() -> dict[str, dict[str, Any]]:
            status = {settings.fold(str(q.name)): str(getattr(q.status, "value", q.status) or "Unknown") for q in self.client.list_queues()}
            found: dict[str, dict[str, Any]] = {}
            for q in self.client.list_queues_runtime_properties():
                name = settings.fold(str(q.name))
                found[name] = {"status": status.get(name, "Unknown"), "active_messages": q.active_message_count or 0,
                               "dead_letter_messages": q.dead_letter_message_count or 0,
                               "scheduled_messages": q.scheduled_message_count or 0, "size_bytes": q.size_in_bytes or 0}
            return found

        return self.call(f"listing the queues of {self.host}", fetch)

    def put(self, name: str, attrs: dict[str, Any], create: bool = True) -> dict[str, Any]:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        from azure.servicebus.management import QueueProperties

        managed: dict[str, Any] = {key: settings.to_arm_duration(attrs[key]) if kind == "duration" else attrs[key]
                   for key, (_, kind, _, _) in settings.QUEUE_KEYS.items() if key in attrs}
        everything: dict[str, Any] = {**{key: None for key in PROPERTY_ARGS}, **managed}
        try:
            if create:
                made = self.call(f"creating queue {name}", lambda: self.client.create_queue(name, **managed), key="queue")
                return self.rest(made, name)
            self.call(f"updating queue {name}", lambda: self.client.update_queue(QueueProperties(name, **everything)), key="queue")
            return {"name": name, "id": self.resource_id(name)}
        except ResourceExistsError:
            raise h.CommandFailed(f"queue {name} already exists in namespace {self.host} (made outside this plan)",
                                    hint="run dstream plan again", key="queue") from None
        except ResourceNotFoundError:
            raise h.CommandFailed(f"queue {name} no longer exists in namespace {self.host} (deleted outside this plan)",
                                    hint="run dstream plan again", key="queue") from None

    def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.call(f"deleting queue {name}", lambda: self.client.delete_queue(name))
        except ResourceNotFoundError:
            pass

    def resource_id(self, name: str) -> str:
        return settings.namespace_resource_id(self.host, name)

    def rest(self, queue: Any, name: str | None = None) -> dict[str, Any]:
        """QueueProperties -> the REST-JSON shape settings.from_arm reads (durations as seconds)."""
        props: dict[str, Any] = {}
        for key, (arm, kind, _, _) in settings.QUEUE_KEYS.items():
            value = getattr(queue, key, None)
            if value is not None:
                props[arm] = value.total_seconds() if kind == "duration" and hasattr(value, "total_seconds") else value
        listed = name or str(queue.name)
        return {"name": listed, "id": self.resource_id(listed), "properties": props}

    def close(self) -> None:
        self.client.close()
        if self.credential is not None:
            self.credential.close()


# Every keyword QueueProperties requires; those dstream does not manage stay None (left out of the PUT).
PROPERTY_ARGS = ("authorization_rules", "auto_delete_on_idle", "dead_lettering_on_message_expiration", "default_message_time_to_live",
                 "duplicate_detection_history_time_window", "availability_status", "enable_batched_operations", "enable_express",
                 "enable_partitioning", "lock_duration", "max_delivery_count", "max_size_in_megabytes", "requires_duplicate_detection",
                 "requires_session", "status", "forward_to", "user_metadata", "forward_dead_lettered_messages_to", "max_message_size_in_kilobytes")
