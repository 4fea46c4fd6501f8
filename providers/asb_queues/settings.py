"""asb-queues configuration: fields, the queue { } block, durations, queue names, desired attributes.

Standard library only (the Azure SDKs are imported lazily elsewhere).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from providers import helper as h

RESOURCE = "queue"
DEFAULT_ENDPOINT = "https://management.azure.com"
INFINITE = "infinite"
INFINITE_ISO = "P10675199DT2H48M5.4775807S"  # what Azure stores for "never"
INFINITE_SECONDS = 10_000 * 86400.0  # anything longer is "infinite" (Azure's is ~29,227 years)
TIERS = ("Basic", "Standard", "Premium")
TIER_BATCH_BYTES = {"Basic": 256 * 1024, "Standard": 256 * 1024, "Premium": 1024 * 1024}
SESSION_MODES = ("none", "table", "primary_key")

FIELDS = [
    h.Field("subscription_id", str, default=None, help="Azure subscription of the namespace (Resource Manager mode, with resource_group and namespace)"),
    h.Field("resource_group", str, default=None, help="resource group of the namespace (Resource Manager mode)"),
    h.Field("namespace", str, default=None, help="Service Bus namespace name (without .servicebus.windows.net)"),
    h.Field("management_endpoint", str, default=DEFAULT_ENDPOINT, help="Resource Manager endpoint (sovereign clouds use other hosts)"),
    h.Field("connection_string", str, default=None, help="SAS connection string: manages the queues when there is no Resource Manager scope (needs Manage), and sends unless send_connection_string is set"),
    h.Field("send_connection_string", str, default=None, help="SAS connection string that run sends with (a Send-only key is enough)"),
    h.Field("fully_qualified_namespace", str, default=None, help="data-plane host for the Azure credential (default <namespace>.servicebus.windows.net)"),
    h.Field("queue_name", str, default="{table}_cdc_events", help="queue name per stream: {table}, {schema}, {stream}"),
    h.Field("queue", (dict, list), default=None, help="queue properties block"),
    h.Field("session_id", str, default="none", help="message session id: none, table or primary_key"),
    h.Field("primary_keys", dict, default=None, help="key columns per table when session_id = primary_key and the input does not report them"),
    h.Field("max_batch_bytes", int, default=0, help="batch size limit in bytes (default and maximum: the tier's, 256 KB Standard, 1 MB Premium)"),
    h.Field("create_queues_on_demand", bool, default=False, help="create the queue when a change arrives for a stream without one"),
    h.Field("adopt_existing", bool, default=False, help="take over existing queues that are not in state"),
    h.Field("parallelism", int, default=8, help="queues created, changed or deleted at the same time"),
    h.Field("send_timeout", (int, float), default=300, help="seconds to keep retrying a send that Service Bus refuses (throttling, lost connection)"),
]

# queue { } keys -> (ARM property name, kind, default, immutable)
QUEUE_KEYS: dict[str, tuple[str, str, Any, bool]] = {
    "max_size_in_megabytes": ("maxSizeInMegabytes", "int", 1024, False),
    "lock_duration": ("lockDuration", "duration", "PT1M", False),
    "max_delivery_count": ("maxDeliveryCount", "int", 10, False),
    "default_message_time_to_live": ("defaultMessageTimeToLive", "duration", INFINITE, False),
    "dead_lettering_on_message_expiration": ("deadLetteringOnMessageExpiration", "bool", False, False),
    "enable_partitioning": ("enablePartitioning", "bool", False, True),
    "requires_session": ("requiresSession", "bool", False, True),
    "requires_duplicate_detection": ("requiresDuplicateDetection", "bool", True, True),
    "duplicate_detection_history_time_window": ("duplicateDetectionHistoryTimeWindow", "duration", "PT1H", False),
}
DURATION_KEYS = frozenset(k for k, v in QUEUE_KEYS.items() if v[1] == "duration")
IMMUTABLE = frozenset({"queue"} | {k for k, v in QUEUE_KEYS.items() if v[3]})
INFORMATIONAL = frozenset({"tier"})  # recorded, never a reason to change anything
NAMES = frozenset({"queue"})  # entity names: Service Bus ignores their case
BASIC_DEFAULT_TTL = "P14D"

_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.I)
_SHORT = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$", re.I)
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,258}[A-Za-z0-9])?$")


ARM_SCOPE = ("subscription_id", "resource_group", "namespace")
RESOURCE_MANAGER, NAMESPACE_API = "resource-manager", "namespace-api"
NO_MODE = ("asb-queues needs one of: subscription_id + resource_group + namespace (Resource Manager), "
           "connection_string (a SAS key with Manage), or fully_qualified_namespace / namespace (the Azure credential)")


# --- which management API -----------------------------------------------------------------


def mode(config: Mapping[str, Any]) -> str:
    """Resource Manager when the task names the ARM scope; else the namespace's own management API."""
    given = [k for k in ARM_SCOPE if config.get(k)]
    if given and len(given) < 3 and given != ["namespace"]:
        missing = [k for k in ARM_SCOPE if not config.get(k)]
        raise h.CommandFailed(f"Resource Manager mode needs subscription_id, resource_group and namespace together: {', '.join(missing)} missing",
                                hint="set them all, or remove subscription_id and resource_group to manage through connection_string", key=missing[0])
    if len(given) == 3:
        return RESOURCE_MANAGER
    if config.get("connection_string"):
        connection_host(str(config["connection_string"]))
        return NAMESPACE_API
    if config.get("fully_qualified_namespace") or config.get("namespace"):
        return NAMESPACE_API
    raise h.CommandFailed(NO_MODE, hint="see docs/asb-queues.md, 'Two management modes'", key="connection_string")


def connection_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def connection_host(text: str, key: str = "connection_string") -> str:
    """host[:port] of a connection string's Endpoint (sb://host/); never echoes the string (it holds a key)."""
    endpoint = connection_fields(text).get("endpoint", "")
    host = endpoint.split("://", 1)[-1].strip("/")
    if not endpoint.lower().startswith("sb://") or not host:
        raise h.CommandFailed(f"{key} is not a Service Bus connection string (it needs Endpoint=sb://<namespace>.servicebus.windows.net/)", key=key)
    return host


def connection_key_name(text: str) -> str:
    return connection_fields(text).get("sharedaccesskeyname", "")


def data_plane_host(config: Mapping[str, Any]) -> str:
    if config.get("fully_qualified_namespace"):
        return str(config["fully_qualified_namespace"])
    if config.get("namespace"):
        return f"{config['namespace']}.servicebus.windows.net"
    raise h.CommandFailed(NO_MODE, hint="to send, give send_connection_string or connection_string, or fully_qualified_namespace", key="connection_string")


def namespace_label(config: Mapping[str, Any]) -> str:
    """The namespace as errors name it: its name, else the host a connection string points to."""
    if config.get("namespace"):
        return str(config["namespace"])
    text = config.get("connection_string")
    return connection_host(str(text)) if text else data_plane_host(config)


def send_connection_string(config: Mapping[str, Any]) -> str | None:
    """What run sends with: the Send key when given, else the lifecycle's connection string (else the credential)."""
    value = config.get("send_connection_string") or config.get("connection_string")
    return str(value) if value else None


def namespace_resource_id(host: str, queue: str) -> str:
    """A queue's id in namespace-API mode: its management URL (namespace host and queue)."""
    return f"https://{host}/{queue}"


def resource_id(config: Mapping[str, Any], queue: str) -> str:
    """A queue's id in state, without calling Azure: the ARM id, or the namespace URL of the queue."""
    if mode(config) == RESOURCE_MANAGER:
        return (f"/subscriptions/{config['subscription_id']}/resourceGroups/{config['resource_group']}"
                f"/providers/Microsoft.ServiceBus/namespaces/{config['namespace']}/queues/{queue}")
    text = config.get("connection_string")
    return namespace_resource_id(connection_host(str(text)) if text else data_plane_host(config), queue)


# --- durations --------------------------------------------------------------------------


def seconds(value: Any) -> float:
    """A duration as seconds: ISO 8601 ("PT5M"), short ("5m", "30s", "7d"), a number of seconds, or "infinite"."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.lower() == INFINITE:
        return float("inf")
    match = _ISO.match(text)
    if match and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
        days, hours, minutes, secs = (float(g or 0) for g in match.groups())
        total = days * 86400 + hours * 3600 + minutes * 60 + secs
        return float("inf") if total >= INFINITE_SECONDS else total
    short = _SHORT.match(text)
    if short:
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[short.group(2).lower()]
        return float(short.group(1)) * scale
    raise ValueError(f"not a duration: {value!r} (use ISO 8601 like PT5M, or 30s, 5m, 1h, 7d)")


def canonical(value: Any) -> str:
    """The one text form recorded in state and shown in plans: Azure's ISO form, or "infinite"."""
    total = seconds(value)
    if total == float("inf"):
        return INFINITE
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = (f"{int(hours)}H" if hours else "") + (f"{int(minutes)}M" if minutes else "") + (f"{round(secs, 3):g}S" if secs else "")
    if not days and not clock:
        return "PT0S"
    return "P" + (f"{int(days)}D" if days else "") + ("T" + clock if clock else "")


def to_arm_duration(value: Any) -> str:
    text = canonical(value)
    return INFINITE_ISO if text == INFINITE else text


def equal(attr: str, a: Any, b: Any) -> bool:
    """The diff's equality: durations as values (the infinite TTL quirk), names ignoring case, the tier never differs."""
    if attr in INFORMATIONAL:
        return True
    if attr in NAMES and isinstance(a, str) and isinstance(b, str):
        return fold(a) == fold(b)
    if attr in DURATION_KEYS and a is not None and b is not None:
        try:
            x, y = seconds(a), seconds(b)
        except ValueError:
            return bool(a == b)
        return x == y or abs(x - y) < 0.001
    return bool(a == b)


# --- the queue { } block ---------------------------------------------------------------


def queue_block(config: Mapping[str, Any]) -> dict[str, Any]:
    """python-hcl2 gives nested blocks as one-element lists; a plain object is accepted too."""
    raw = config.get("queue")
    if raw is None:
        return {}
    if isinstance(raw, list):
        if len(raw) != 1 or not isinstance(raw[0], dict):
            raise h.CommandFailed("there must be at most one queue { } block", key="queue")
        raw = raw[0]
    block: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in QUEUE_KEYS:
            import difflib

            close = difflib.get_close_matches(key, list(QUEUE_KEYS), n=1)
            raise h.CommandFailed(f"unknown queue property '{key}'", hint=f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(QUEUE_KEYS)}", key="queue")
        kind = QUEUE_KEYS[key][1]
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise h.CommandFailed(f"queue property '{key}' must be a whole number, not {value!r}", key="queue")
        if kind == "bool" and not isinstance(value, bool):
            raise h.CommandFailed(f"queue property '{key}' must be true or false, not {value!r}", key="queue")
        if kind == "duration":
            try:
                value = canonical(value)
            except ValueError as exc:
                raise h.CommandFailed(f"queue property '{key}': {exc}", key="queue") from None
        block[key] = value
    return block


def check_ranges(attrs: Mapping[str, Any]) -> None:
    """Service Bus limits, checked before any call (ARM would refuse them one by one)."""
    rules = [
        ("lock_duration", 5, 300, "between 5 seconds and 5 minutes"),
        ("duplicate_detection_history_time_window", 20, 7 * 86400, "between 20 seconds and 7 days"),
    ]
    for key, low, high, text in rules:
        if not low <= seconds(attrs[key]) <= high:
            raise h.CommandFailed(f"queue property '{key}' = {attrs[key]} must be {text}", key="queue")
    if seconds(attrs["default_message_time_to_live"]) < 1:
        raise h.CommandFailed("queue property 'default_message_time_to_live' must be at least 1 second", key="queue")
    if attrs["max_delivery_count"] < 1:
        raise h.CommandFailed("queue property 'max_delivery_count' must be at least 1", key="queue")
    if attrs["max_size_in_megabytes"] < 1024:
        raise h.CommandFailed("queue property 'max_size_in_megabytes' must be at least 1024", key="queue")


def check_tier(tier: str, block: Mapping[str, Any], session_mode: str) -> None:
    """Basic tier: no duplicate detection, no sessions, no TTL. Said once, before anything is created."""
    if tier != "Basic":
        return
    refused = [key for key in ("requires_duplicate_detection", "requires_session") if block.get(key)]
    if "default_message_time_to_live" in block and seconds(block["default_message_time_to_live"]) != seconds(BASIC_DEFAULT_TTL):
        refused.append("default_message_time_to_live")
    if refused:
        raise h.CommandFailed(f"the namespace is Basic tier, which does not support {', '.join(refused)}",
                                hint="remove them from the queue block, or upgrade the namespace to Standard", key="queue")
    if session_mode != "none":
        raise h.CommandFailed("the namespace is Basic tier, which has no sessions: session_id must be none", key="session_id")


# --- names and desired queues --------------------------------------------------------------


def fold(name: str) -> str:
    """The form names are compared in. Service Bus names ignore case, and Resource Manager
    lists them lower-cased whatever their spelling at creation; streams follow their queues."""
    return name.lower()


def resource_key(key: tuple[str, str]) -> tuple[str, str]:
    """The diff's key normaliser: a resource's (type, stream) matched ignoring case."""
    return key[0], fold(key[1])


def queue_name(template: str, stream: Mapping[str, Any]) -> str:
    name = str(stream.get("name", ""))
    values = {"table": stream.get("table") or name, "schema": stream.get("schema") or "", "stream": name}
    try:
        queue = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise h.CommandFailed(f"queue_name template {template!r} is invalid: {exc}", hint="use {table}, {schema} and {stream}", key="queue_name") from None
    if not _QUEUE_NAME.match(queue):
        raise h.CommandFailed(
            f"queue name {queue!r} (stream {name!r}) breaks Service Bus naming rules",
            hint="1-260 letters, digits, periods, hyphens and underscores, starting and ending with a letter or digit", key="queue_name")
    return queue


def queue_names(config: Mapping[str, Any], streams: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[str, str]:
    """stream -> queue, refusing two streams on one queue, or two streams whose names differ only in case (names ignore case)."""
    result: dict[str, str] = {}
    queues: dict[str, str] = {}
    names: dict[str, str] = {}
    for stream in streams:
        name = str(stream["name"])
        queue = queue_name(config["queue_name"], stream)
        if fold(queue) in queues:
            raise h.CommandFailed(f"streams {queues[fold(queue)]!r} and {name!r} both map to queue {queue!r} (queue names are case-insensitive)",
                                    hint="make queue_name tell them apart, e.g. {schema}_{table}_cdc_events", key="queue_name")
        if fold(name) in names:
            raise h.CommandFailed(f"streams {names[fold(name)]!r} and {name!r} differ only in case, which asb-queues cannot tell apart (names are case-insensitive)")
        queues[fold(queue)] = names[fold(name)] = name
        result[name] = queue
    return result


def session_mode(config: Mapping[str, Any]) -> str:
    mode = config["session_id"].strip().lower().replace(" ", "_").replace("-", "_")
    if mode not in SESSION_MODES:
        raise h.CommandFailed(f"session_id must be one of none, table, primary_key, not {config['session_id']!r}", key="session_id")
    return str(mode)


def attributes(config: Mapping[str, Any], queue: str, tier: str) -> dict[str, Any]:
    """The desired attributes of one queue: the block over Service Bus' defaults for the tier."""
    block = queue_block(config)
    mode = session_mode(config)
    check_tier(tier, block, mode)
    attrs: dict[str, Any] = {"queue": queue}
    for key, (_, _, default, _) in QUEUE_KEYS.items():
        attrs[key] = block.get(key, default)
    if tier == "Basic":
        attrs["requires_duplicate_detection"] = False
        attrs["default_message_time_to_live"] = block.get("default_message_time_to_live", BASIC_DEFAULT_TTL)
    if not attrs["requires_duplicate_detection"] and "duplicate_detection_history_time_window" not in block:
        attrs["duplicate_detection_history_time_window"] = "PT10M"  # Azure's default, shown as it is
    if attrs["requires_session"] and mode == "none":
        raise h.CommandFailed("requires_session = true needs session_id = table or primary_key (Service Bus refuses messages without one)", key="session_id")
    for key in DURATION_KEYS:
        attrs[key] = canonical(attrs[key])
    check_ranges(attrs)
    attrs["tier"] = tier
    return attrs


def arm_properties(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes -> the ARM queue properties body (camelCase, ISO durations)."""
    props: dict[str, Any] = {}
    for key, (arm, kind, _, _) in QUEUE_KEYS.items():
        if key in attrs:
            props[arm] = to_arm_duration(attrs[key]) if kind == "duration" else attrs[key]
    return props


def from_arm(queue: Mapping[str, Any], tier: str, name: str | None = None) -> dict[str, Any]:
    """A live ARM queue (REST JSON) -> attributes, read-only fields left out. `name`: the spelling
    configured or in state, kept over the lower-cased one Resource Manager lists."""
    props = queue.get("properties") or {}
    listed = str(queue.get("name"))
    attrs: dict[str, Any] = {"queue": name if name is not None and fold(name) == fold(listed) else listed}
    for key, (arm, kind, default, _) in QUEUE_KEYS.items():
        value = props.get(arm, default)
        attrs[key] = canonical(value) if kind == "duration" and value is not None else value
    attrs["tier"] = tier
    return attrs
