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
    h.Field("subscription_id", str, required=True, help="Azure subscription that holds the namespace"),
    h.Field("resource_group", str, required=True, help="resource group of the namespace"),
    h.Field("namespace", str, required=True, help="Service Bus namespace name (without .servicebus.windows.net)"),
    h.Field("management_endpoint", str, default=DEFAULT_ENDPOINT, help="Resource Manager endpoint (sovereign clouds use other hosts)"),
    h.Field("connection_string", str, default=None, help="SAS connection string for sending; default: the Azure credential"),
    h.Field("fully_qualified_namespace", str, default=None, help="data-plane host when sending with the Azure credential (default <namespace>.servicebus.windows.net)"),
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
