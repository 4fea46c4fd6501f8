"""Typed values: how each SQL Server type becomes JSON text, exactly.

decimal/money -> string; datetime2/datetimeoffset/time -> ISO-8601 text at the
column's precision (pyodbc's own datetime would drop the 7th digit);
binary -> base64; uniqueidentifier -> text; NULL -> null.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import struct
from collections.abc import Callable
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

SQL_TYPE_TIMESTAMP, SQL_SS_TIME2, SQL_SS_TIMESTAMPOFFSET = 93, -154, -155
TIMESTAMP = struct.Struct("<hHHHHHI")
TIMESTAMPOFFSET = struct.Struct("<hHHHHHIhh")
TIME2 = struct.Struct("<HHHxxI")
LOB_TYPES = frozenset({"text", "ntext", "image", "xml"})
Formatter = Callable[[Any], str]


def _timestamp(raw: bytes | None) -> str | None:
    """SQL_TIMESTAMP_STRUCT (datetime2) or the 8-byte datetime / 4-byte smalldatetime a driver hands over raw."""
    if raw is None:
        return None
    if len(raw) == 16:
        y, mo, d, h, mi, s, ns = _unpack_timestamp(raw)
        return _TIMESTAMP_TEXT % (y, mo, d, h, mi, s, ns // 100)
    if len(raw) == 8:
        return _datetime(raw)
    if len(raw) == 4:
        days, minutes = struct.unpack("<HH", raw)
        return _from_days(days, minutes * 600_000_000)
    raise ValueError(f"unexpected timestamp of {len(raw)} bytes")


_TIMESTAMP_TEXT = "%04d-%02d-%02dT%02d:%02d:%02d.%07d"
_unpack_timestamp = TIMESTAMP.unpack


def _datetime(raw: bytes) -> str:
    """An 8-byte datetime: days since 1900-01-01 and 1/300 s ticks."""
    days, ticks = struct.unpack("<iI", raw)
    return _from_days(days, round(ticks * 1000 / 300) * 10_000)


_EPOCH_1900 = dt.date(1900, 1, 1)


def _from_days(days: int, units: int) -> str:
    date = _EPOCH_1900 + dt.timedelta(days=days)
    secs, frac = divmod(units, 10_000_000)
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{frac:07d}"


def _offset(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    y, mo, d, h, mi, s, ns, th, tm = TIMESTAMPOFFSET.unpack(raw)
    sign = "-" if th < 0 or tm < 0 else "+"
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ns // 100:07d}{sign}{abs(th):02d}:{abs(tm):02d}"


def _time(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    h, mi, s, ns = TIME2.unpack(raw)
    return f"{h:02d}:{mi:02d}:{s:02d}.{ns // 100:07d}"


def install_converters(conn: Any) -> None:
    """Date/time values arrive as text with all 7 fractional digits; the column formatter trims them."""
    conn.add_output_converter(SQL_TYPE_TIMESTAMP, _timestamp)
    conn.add_output_converter(SQL_SS_TIMESTAMPOFFSET, _offset)
    conn.add_output_converter(SQL_SS_TIME2, _time)


def _trim(scale: int) -> Callable[[str], str]:
    """'...SS.fffffff' cut to `scale` digits (no dot for 0); an offset suffix is kept."""

    def cut(text: str) -> str:
        dot = text.index(".")
        tail = text[dot + 8:]
        return text[:dot + 1 + scale] + tail if scale else text[:dot] + tail

    return cut


def _str(v: Any) -> str:
    return encode_basestring(v) if isinstance(v, str) else encode_basestring(str(v))


def _decimal(v: Any) -> str:
    return '"' + (format(v, "f") if isinstance(v, Decimal) else str(v)) + '"'


def _float(v: Any) -> str:
    f = float(v)
    return repr(f) if math.isfinite(f) else "null"


def _binary(v: Any) -> str:
    return '"' + base64.b64encode(v).decode("ascii") + '"'


def _bool(v: Any) -> str:
    return "true" if v else "false"


def _int(v: Any) -> str:
    return str(int(v))


def formatter(column_type: str, scale: int | None) -> Formatter:
    """JSON text for a non-NULL value of this SQL Server type."""
    t = column_type.lower()
    if t in ("int", "bigint", "smallint", "tinyint"):
        return _int
    if t == "bit":
        return _bool
    if t in ("decimal", "numeric", "money", "smallmoney"):
        return _decimal
    if t in ("float", "real"):
        return _float
    if t in ("binary", "varbinary", "image", "timestamp", "rowversion"):
        return _binary
    if t in ("datetime2", "datetimeoffset", "time"):
        cut = _trim(7 if scale is None else scale)
        return lambda v: '"' + cut(v) + '"'
    if t == "datetime":
        cut = _trim(3)
        return lambda v: '"' + cut(v) + '"'
    if t == "smalldatetime":
        return lambda v: '"' + v[:19] + '"'
    if t == "date":
        return lambda v: '"' + (v.isoformat() if hasattr(v, "isoformat") else str(v)[:10]) + '"'
    return _str


def is_lob(column_type: str, max_length: int | None) -> bool:
    return column_type.lower() in LOB_TYPES or max_length == -1
