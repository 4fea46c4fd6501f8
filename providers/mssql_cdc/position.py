"""Positions: the full ordering key of the last emitted change, plus the capture instance identity.

A change is ordered by (__$start_lsn, __$command_id, __$seqval, __$operation).
Two boundary forms need no change: "before L" (nothing at LSN L emitted yet)
and "after L" (everything up to and including LSN L emitted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_INT = 2_147_483_647
LOW_SEQ = bytes(10)
HIGH_SEQ = b"\xff" * 10


@dataclass(frozen=True, order=True)
class Key:
    lsn: bytes
    command_id: int
    seqval: bytes
    operation: int

    @classmethod
    def before(cls, lsn: bytes) -> Key:
        return cls(lsn, -1, LOW_SEQ, -1)

    @classmethod
    def after(cls, lsn: bytes) -> Key:
        return cls(lsn, MAX_INT, HIGH_SEQ, MAX_INT)

    @property
    def is_after(self) -> bool:
        return self.command_id == MAX_INT

    @property
    def is_before(self) -> bool:
        return self.command_id == -1

    def params(self) -> list[Any]:
        """Parameters of the keyset predicate: lsn >= L, then the tuple comparison."""
        return [self.lsn, self.lsn, self.lsn, self.command_id, self.command_id, self.seqval, self.seqval, self.operation]


@dataclass(frozen=True)
class Identity:
    """Who wrote a position: a capture instance is (name, change-table object_id, create_date)."""

    name: str
    object_id: int
    create_date: str

    def same(self, other: Identity) -> bool:
        return self.name.lower() == other.name.lower() and self.object_id == other.object_id and self.create_date == other.create_date


def to_json(key: Key, ident: Identity, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"lsn": key.lsn.hex()}
    if key.is_before:
        out["before"] = True
    elif not key.is_after:
        out.update(command_id=key.command_id, seqval=key.seqval.hex(), operation=key.operation)
    out.update(capture_instance=ident.name, object_id=ident.object_id, create_date=ident.create_date)
    if extra:
        out.update(extra)
    return out


def from_json(value: Any) -> tuple[Key, Identity | None, dict[str, Any]]:
    """(key, identity or None, extra fields such as last_gap). Raises ValueError on a foreign position."""
    if not isinstance(value, dict) or not isinstance(value.get("lsn"), str):
        raise ValueError(f"not an mssql-cdc position: {value!r}")
    lsn = bytes.fromhex(value["lsn"])
    if len(lsn) != 10:
        raise ValueError(f"LSN {value['lsn']!r} is not 10 bytes")
    if value.get("before"):
        key = Key.before(lsn)
    elif "command_id" in value:
        key = Key(lsn, int(value["command_id"]), bytes.fromhex(value["seqval"]), int(value["operation"]))
    else:
        key = Key.after(lsn)
    ident = None
    if value.get("capture_instance"):
        ident = Identity(str(value["capture_instance"]), int(value.get("object_id") or 0), str(value.get("create_date") or ""))
    extra = {k: v for k, v in value.items() if k == "last_gap"}
    return key, ident, extra


def dec(lsn: bytes) -> bytes:
    """The LSN value just below (a comparison bound, not necessarily a real LSN)."""
    return (int.from_bytes(lsn, "big") - 1).to_bytes(10, "big")
