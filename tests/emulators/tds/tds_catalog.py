"""Catalog of the test peer: SQL types of system views, value coercion to canonical storage forms."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from tds_sql import SqlError
from tds_wire import DT_RE, INT_SIZES, SqlType

T = SqlType.parse
SYSNAME = T("nvarchar(128)")
LSN = T("binary(10)")

# system tables the peer keeps as real SQLite tables: (schema, name) -> columns
SYSTEM_TABLES: dict[tuple[str, str], list[tuple[str, SqlType]]] = {
    ("sys", "databases"): [("name", SYSNAME), ("database_id", T("int")), ("is_cdc_enabled", T("bit")), ("create_date", T("datetime")),
                           ("snapshot_isolation_state", T("tinyint")), ("snapshot_isolation_state_desc", T("nvarchar(60)")),
                           ("is_read_committed_snapshot_on", T("bit"))],
    # indexes: index_id 0 is the heap, 1 the clustered index (a primary key's by default), 2+ nonclustered
    ("sys", "indexes"): [("object_id", T("int")), ("name", SYSNAME), ("index_id", T("int")), ("type", T("tinyint")), ("type_desc", T("nvarchar(60)")),
                         ("is_unique", T("bit")), ("is_primary_key", T("bit")), ("is_unique_constraint", T("bit")), ("is_disabled", T("bit")),
                         ("has_filter", T("bit"))],
    ("sys", "index_columns"): [("object_id", T("int")), ("index_id", T("int")), ("index_column_id", T("int")), ("column_id", T("int")),
                               ("key_ordinal", T("tinyint")), ("is_descending_key", T("bit")), ("is_included_column", T("bit"))],
    # one row per index (heap or clustered, and each nonclustered index) with that index's row count, as SQL Server keeps it
    ("sys", "partitions"): [("partition_id", T("bigint")), ("object_id", T("int")), ("index_id", T("int")), ("partition_number", T("int")),
                            ("rows", T("bigint"))],
    ("sys", "schemas"): [("schema_id", T("int")), ("name", SYSNAME), ("principal_id", T("int"))],
    ("sys", "tables"): [("object_id", T("int")), ("name", SYSNAME), ("schema_id", T("int")), ("type", T("char(2)")), ("is_tracked_by_cdc", T("bit")),
                        ("create_date", T("datetime"))],
    ("sys", "columns"): [("object_id", T("int")), ("name", SYSNAME), ("column_id", T("int")), ("system_type_id", T("tinyint")),
                         ("user_type_id", T("int")), ("max_length", T("smallint")), ("precision", T("tinyint")), ("scale", T("tinyint")),
                         ("is_nullable", T("bit"))],
    ("cdc", "change_tables"): [("object_id", T("int")), ("version", T("int")), ("source_object_id", T("int")), ("capture_instance", SYSNAME),
                               ("start_lsn", LSN), ("end_lsn", LSN), ("supports_net_changes", T("bit")), ("has_drop_pending", T("bit")),
                               ("role_name", SYSNAME), ("index_name", SYSNAME), ("filegroup_name", SYSNAME), ("create_date", T("datetime")),
                               ("partition_switch", T("bit"))],
    ("cdc", "captured_columns"): [("object_id", T("int")), ("column_name", SYSNAME), ("column_id", T("int")), ("column_type", SYSNAME),
                                  ("column_ordinal", T("int")), ("is_computed", T("bit"))],
    ("cdc", "lsn_time_mapping"): [("start_lsn", LSN), ("tran_begin_time", T("datetime")), ("tran_end_time", T("datetime")), ("tran_id", T("varbinary(10)")),
                                  ("tran_begin_lsn", LSN)],
}
NOCASE = {"name", "capture_instance", "column_name", "role_name", "index_name"}
CT_META_HEAD = [("__$start_lsn", LSN), ("__$end_lsn", LSN), ("__$seqval", LSN), ("__$operation", T("int")), ("__$update_mask", T("varbinary(128)"))]
CT_META_TAIL = [("__$command_id", T("int"))]

SYSTEM_TYPE_IDS = {"tinyint": 48, "smallint": 52, "int": 56, "bigint": 127, "bit": 104, "float": 62, "real": 59, "decimal": 106, "numeric": 108,
                   "money": 60, "nvarchar": 231, "varchar": 167, "nchar": 239, "char": 175, "varbinary": 165, "binary": 173, "datetime2": 42,
                   "datetimeoffset": 43, "date": 40, "time": 41, "datetime": 61, "uniqueidentifier": 36, "ntext": 99, "text": 35, "image": 34,
                   "xml": 241}

FUNCTION_TYPES = {"fn_cdc_get_max_lsn": LSN, "fn_cdc_get_min_lsn": LSN, "fn_cdc_increment_lsn": LSN, "fn_cdc_decrement_lsn": LSN,
                  "fn_cdc_map_time_to_lsn": LSN, "fn_cdc_map_lsn_to_time": T("datetime"), "sysdatetime": T("datetime2(7)"),
                  "sysutcdatetime": T("datetime2(7)"), "getdate": T("datetime"), "getutcdate": T("datetime"), "db_name": SYSNAME,
                  "object_name": SYSNAME, "object_schema_name": SYSNAME, "schema_name": SYSNAME, "object_id": T("int"), "count": T("int"),
                  "count_big": T("bigint"), "newid": T("uniqueidentifier"), "quotename": T("nvarchar(258)")}

INT_RANGES = {n: (-(1 << (8 * s - 1)), (1 << (8 * s - 1)) - 1) for n, s in INT_SIZES.items()}
INT_RANGES["tinyint"] = (0, 255)


def now_text(utc: bool = False, digits: int = 3) -> str:
    t = dt.datetime.now(dt.UTC).replace(tzinfo=None) if utc else dt.datetime.now()
    text = t.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:20 + digits] if digits else text[:19]


def infer_type(values: list[Any]) -> SqlType:
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool) or isinstance(v, int):
            return T("bigint") if any(isinstance(x, int) and not -(1 << 31) <= x < (1 << 31) for x in values) else T("int")
        if isinstance(v, float):
            return T("float")
        if isinstance(v, bytes):
            return T("varbinary(max)") if any(isinstance(x, bytes) and len(x) > 8000 for x in values) else T("varbinary(8000)")
        return T("nvarchar(max)") if any(isinstance(x, str) and len(x) > 4000 for x in values) else T("nvarchar(4000)")
    return T("int")


def _round_units(total: int, scale: int) -> int:
    step = 10 ** (7 - scale)
    return (total + step // 2) // step * step


def _datetime_parts(text: str, what: str) -> tuple[int, int, int, int | None]:
    m = DT_RE.match(text.strip())
    if not m:
        raise SqlError(241, f"Conversion failed when converting {what} from character string.")
    try:
        days = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).toordinal()
    except ValueError:
        raise SqlError(242, "The conversion of a nvarchar data type to a datetime data type resulted in an out-of-range value.") from None
    secs = int(m.group(4) or 0) * 3600 + int(m.group(5) or 0) * 60 + int(m.group(6) or 0)
    frac = int((m.group(7) or "").ljust(7, "0"))
    offset = None
    if m.group(8):
        offset = (int(m.group(9)) * 60 + int(m.group(10))) * (1 if m.group(8) == "+" else -1)
    elif text.strip().endswith("Z"):
        offset = 0
    return days, secs, frac, offset


def _format(days: int, units: int, scale: int) -> str:
    extra, units = divmod(units, 86400 * 10**7)
    date = dt.date.fromordinal(days + extra)
    secs, frac = divmod(units, 10**7)
    text = f"{date.year:04d}-{date.month:02d}-{date.day:02d} {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    if scale:
        text += "." + f"{frac:07d}"[:scale]
    return text


def coerce(t: SqlType, v: Any, column: str = "") -> Any:
    """A value as the peer stores it for a column of type t (raises SqlError like SQL Server)."""
    if v is None:
        return None
    n = t.name
    try:
        if n in INT_SIZES or n == "bit":
            if isinstance(v, bytes):
                raise SqlError(257, f"Implicit conversion from data type varbinary to {n} is not allowed.")
            number = int(Decimal(str(v)).to_integral_value(rounding="ROUND_DOWN")) if not isinstance(v, int) else v
            if n == "bit":
                return 1 if number else 0
            lo, hi = INT_RANGES[n]
            if not lo <= number <= hi:
                raise SqlError(8115 if n != "int" else 248, f"Arithmetic overflow error converting expression to data type {n}.")
            return number
        if n in ("float", "real"):
            return float(v)
        if n in ("decimal", "numeric", "money"):
            d = Decimal(str(v)).quantize(Decimal(1).scaleb(-t.scale), rounding=ROUND_HALF_UP, context=Context(prec=80))
            if d.adjusted() + 1 > t.precision - t.scale:
                raise SqlError(8115, f"Arithmetic overflow error converting {type(v).__name__} to data type numeric.")
            return format(d, "f")
    except (InvalidOperation, ValueError):
        raise SqlError(8114, f"Error converting data type nvarchar to {n}.") from None
    if n in ("nvarchar", "nchar", "varchar", "char", "ntext", "text", "xml"):
        if isinstance(v, bytes):
            raise SqlError(257, f"Implicit conversion from data type varbinary to {n} is not allowed.")
        s = v if isinstance(v, str) else format(v, "f") if isinstance(v, Decimal) else str(v)
        if t.length > 0 and len(s) > t.length:
            raise SqlError(2628, f"String or binary data would be truncated in table, column '{column}'.")
        if n in ("nchar", "char"):
            s = s.ljust(t.length)
        return s
    if n in ("varbinary", "binary", "image"):
        if not isinstance(v, bytes):
            raise SqlError(257, f"Implicit conversion from data type {type(v).__name__} to {n} is not allowed. Use the CONVERT function to run this query.")
        if t.length > 0 and len(v) > t.length:
            raise SqlError(2628, f"String or binary data would be truncated in table, column '{column}'.")
        return v.ljust(t.length, b"\x00") if n == "binary" else v
    if n == "uniqueidentifier":
        try:
            return str(uuid.UUID(str(v))).upper()
        except ValueError:
            raise SqlError(8169, "Conversion failed when converting from a character string to uniqueidentifier.") from None
    if n in ("datetime2", "datetimeoffset", "datetime", "date"):
        days, secs, frac, offset = _datetime_parts(str(v), "date and/or time")
        if n == "date":
            return _format(days, 0, 0)[:10]
        if n == "datetime":
            ticks = round((secs * 10**7 + frac) * 300 / 10**7)
            ms = round(ticks * 1000 / 300)
            return _format(days, ms * 10**4, 3)
        text = _format(days, _round_units(secs * 10**7 + frac, t.scale), t.scale)
        if n == "datetimeoffset":
            off = offset or 0
            text += f" {'+' if off >= 0 else '-'}{abs(off) // 60:02d}:{abs(off) % 60:02d}"
        return text
    if n == "time":
        _, secs, frac, _ = _datetime_parts("0001-01-01 " + str(v), "time")
        return _format(1, _round_units(secs * 10**7 + frac, t.scale), t.scale)[11:]
    raise SqlError(2715, f"Column, parameter, or variable: cannot find data type {n}.")
