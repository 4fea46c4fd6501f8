"""The namespace model both test peers share: one JSON file, written by the ARM peer.

{"namespaces": {"<name>": {"sku": "Standard", "location": "westeurope",
                           "queues": {"<queue>": {<ARM queue properties, camelCase>, "peerIncarnation": <id>}}}}}

The ARM peer owns the file (writes it atomically after every change); the AMQP
peer only reads it, to know which queues exist, the namespace tier (message
size limit) and each queue's duplicate detection settings.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

TIER_MESSAGE_BYTES = {"Basic": 256 * 1024, "Standard": 256 * 1024, "Premium": 1024 * 1024}
INCARNATION = "peerIncarnation"  # in each queue's properties, never in ARM replies: which creation of the queue this is
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def load(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {"namespaces": {}}


def save(path: Path, model: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(model, indent=1, sort_keys=True))
    os.replace(tmp, path)


def seconds(text: str) -> float:
    """ISO 8601 duration (days/hours/minutes/seconds) in seconds."""
    match = _DURATION.match(text or "")
    if not match or text in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    days, hours, minutes, secs = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)


def namespace(model: dict[str, Any], name: str) -> dict[str, Any]:
    """The ARM peer keys namespaces by lower-case name: Service Bus names ignore case."""
    return dict(model.get("namespaces", {}).get(name.lower(), {}))


def find_queue(namespace: dict[str, Any], name: str) -> tuple[str, dict[str, Any]] | None:
    """Queue names are case-insensitive in Service Bus."""
    for existing, props in namespace.get("queues", {}).items():
        if existing.lower() == name.lower():
            return existing, props
    return None
