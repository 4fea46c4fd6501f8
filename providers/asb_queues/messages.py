"""From one input line to the parts of one Service Bus message (standard library only).

- body: the change line itself (the change as JSON, byte for byte);
- message_id: deterministic from the stream and the change position (<= 128 chars),
  so a resend after a crash or a lost connection is a duplicate Service Bus drops;
- application properties for routing and filtering: table, schema, operation, lsn, stream;
- session_id: none, the table, or the primary key values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from providers import helper as h
from providers import protocol as p

MAX_ID = 128


@dataclass(frozen=True)
class Change:
    lineno: int
    stream: str
    body: bytes
    position: Any
    message_id: str
    properties: dict[str | bytes, Any]
    session_id: str | None


def message_id(stream: str, position: Any, metadata: dict[str, Any], raw: bytes) -> str:
    """`<stream>@<position JSON>` when short and plain; otherwise a SHA-256 of it. Without a position: LSN/Seq/operation, else the content."""
    if position is not None:
        basis = f"{stream}@{p.position_key(position)}"
    elif metadata.get("LSN") is not None:
        keys = {k: metadata.get(k) for k in ("LSN", "Seq", "OperationID", "OperationType")}
        basis = f"{stream}@{json.dumps(keys, sort_keys=True, separators=(',', ':'))}"
    else:
        basis = f"{stream}@sha256:{hashlib.sha256(raw).hexdigest()}"
    if len(basis) <= MAX_ID and basis.isascii() and basis.isprintable():
        return basis
    return "sha256:" + hashlib.sha256(basis.encode()).hexdigest()


def properties(stream: str, metadata: dict[str, Any]) -> dict[str | bytes, Any]:
    values = {"table": metadata.get("TableName") or stream, "schema": metadata.get("Schema"), "operation": metadata.get("OperationType"),
              "lsn": metadata.get("LSN"), "stream": stream}
    return {k: (v if isinstance(v, int) and not isinstance(v, bool) else str(v)) for k, v in values.items() if v is not None}


def session(mode: str, stream: str, envelope: dict[str, Any], keys: list[str] | None, lineno: int) -> str | None:
    if mode == "none":
        return None
    metadata = envelope.get("metadata") or {}
    if mode == "table":
        value = str(metadata.get("TableName") or stream)
    else:
        data = envelope.get("data") or {}
        if not keys:
            raise h.CommandFailed(f"session_id = primary_key, but no key columns are known for table {stream!r} (input line {lineno})",
                                    hint="set primary_keys = { <table> = [\"<column>\", ...] }", key="primary_keys")
        missing = [k for k in keys if k not in data]
        if missing:
            raise h.CommandFailed(f"change for table {stream!r} at input line {lineno} lacks key column(s) {', '.join(missing)} for its session id",
                                    key="primary_keys")
        value = "|".join(json.dumps(data[k], separators=(",", ":")) if not isinstance(data[k], str) else data[k] for k in keys)
    return value if len(value) <= MAX_ID else "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def build(raw: bytes, lineno: int, stream: str, position: Any, envelope: dict[str, Any], mode: str, keys: list[str] | None) -> Change:
    metadata = envelope.get("metadata") or {}
    return Change(lineno, stream, raw, position, message_id(stream, position, metadata, raw), properties(stream, metadata),
                  session(mode, stream, envelope, keys, lineno))
