"""TDS 7.4 wire format for the test peer: packets, tokens, type encoders and decoders.

Only what FreeTDS and Microsoft ODBC Driver 18 (through pyodbc) need to talk
to a SQL Server: PRELOGIN, LOGIN7, SQL batch, RPC, transaction-manager
requests, and result sets of the common SQL Server types.
"""

from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

# packet types
SQL_BATCH, RPC, REPLY, ATTENTION, TM_REQUEST, LOGIN7, PRELOGIN = 0x01, 0x03, 0x04, 0x06, 0x0E, 0x10, 0x12
HEADER = struct.Struct(">BBHHBB")
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])  # SQL_Latin1_General_CP1_CI_AS

# tokens
COLMETADATA, ROW, DONE, DONEPROC, DONEINPROC = 0x81, 0xD1, 0xFD, 0xFE, 0xFF
ERROR, INFO, LOGINACK, ENVCHANGE, FEATUREEXTACK, RETURNSTATUS, RETURNVALUE = 0xAA, 0xAB, 0xAD, 0xE3, 0xAE, 0x79, 0xAC
DONE_MORE, DONE_ERROR, DONE_COUNT, DONE_ATTN = 0x01, 0x02, 0x10, 0x20


def packets(ptype: int, payload: bytes, size: int) -> list[bytes]:
    """Split a message into packets of at most `size` bytes."""
    chunk = size - HEADER.size
    out = []
    parts = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        out.append(HEADER.pack(ptype, 1 if last else 0, len(part) + HEADER.size, 0, (n + 1) & 0xFF, 0) + part)
    return out


# --- writing helpers -----------------------------------------------------------


def b_varchar(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return bytes([len(data) // 2]) + data


def us_varchar(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return struct.pack("<H", len(data) // 2) + data


def b_varbyte(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def done(token: int, status: int, count: int = 0, curcmd: int = 0xC1) -> bytes:
    return struct.pack("<BHHQ", token, status, curcmd, count)


def error_token(number: int, message: str, severity: int = 16, state: int = 1, info: bool = False) -> bytes:
    body = struct.pack("<iBB", number, state, severity) + us_varchar(message) + b_varchar("tdspeer") + b_varchar("") + struct.pack("<i", 1)
    return struct.pack("<BH", INFO if info else ERROR, len(body)) + body


def envchange(kind: int, new: bytes, old: bytes) -> bytes:
    body = bytes([kind]) + new + old
    return struct.pack("<BH", ENVCHANGE, len(body)) + body


def loginack() -> bytes:
    body = bytes([1]) + bytes([0x74, 0x00, 0x00, 0x04]) + b_varchar("Microsoft SQL Server") + bytes([16, 0, 0x10, 0x68])
    return struct.pack("<BH", LOGINACK, len(body)) + body


# PRELOGIN options (MS-TDS 2.2.6.5) and the ENCRYPTION values
PL_VERSION, PL_ENCRYPTION, PL_INSTOPT, PL_THREADID, PL_MARS, PL_TRACEID, PL_FEDAUTHREQUIRED, PL_TERMINATOR = 0, 1, 2, 3, 4, 5, 6, 0xFF
ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0, 1, 2, 3
FEATURE_FEDAUTH, FEATURE_TERMINATOR = 0x02, 0xFF
FEDAUTH_LIBRARY_SECURITYTOKEN = 0x01


def parse_prelogin(data: bytes) -> dict[int, bytes]:
    """Option token -> value of a client's PRELOGIN."""
    options: dict[int, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != PL_TERMINATOR:
        token, offset, length = struct.unpack_from(">BHH", data, pos)
        options[token] = data[offset:offset + length]
        pos += 5
    return options


def negotiate_encryption(client: int, can_encrypt: bool, force: bool) -> int:
    """The server's ENCRYPTION answer (MS-TDS 2.2.6.5 table): what the client asked, what the server has and requires."""
    if not can_encrypt:
        return ENCRYPT_NOT_SUP
    if client == ENCRYPT_NOT_SUP:
        return ENCRYPT_REQ if force else ENCRYPT_NOT_SUP  # with REQ the client must give up: SQL Server then ends the connection
    if client == ENCRYPT_OFF:
        return ENCRYPT_REQ if force else ENCRYPT_OFF  # OFF: the login packet alone is encrypted
    return ENCRYPT_ON


def prelogin_reply(encryption: int = ENCRYPT_NOT_SUP, fedauth_required: bool | None = None) -> bytes:
    options = [(PL_VERSION, bytes([16, 0, 0x10, 0x68, 0, 0])), (PL_ENCRYPTION, bytes([encryption])), (PL_INSTOPT, b"\x00"), (PL_THREADID, b""),
               (PL_MARS, b"\x00")]
    if fedauth_required is not None:  # answered only when the client sent it
        options.append((PL_FEDAUTHREQUIRED, b"\x01" if fedauth_required else b"\x00"))
    offset = len(options) * 5 + 1
    head, data = b"", b""
    for token, value in options:
        head += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return head + b"\xff" + data


def parse_login7(data: bytes) -> dict[str, Any]:
    (_, _, packet_size) = struct.unpack_from("<III", data, 0)
    flags3 = data[27]

    def field(index: int) -> tuple[int, int]:
        return struct.unpack_from("<HH", data, 36 + 4 * index)  # type: ignore[return-value]

    def text(index: int) -> str:
        off, length = field(index)
        return data[off:off + 2 * length].decode("utf-16-le", "replace")

    info: dict[str, Any] = {"packet_size": packet_size, "user": text(1), "app": text(3), "database": text(8), "feature_ext": bool(flags3 & 0x10),
                            "features": {}}
    if info["feature_ext"]:
        ext_offset, ext_length = field(5)
        if ext_length >= 4:
            info["features"] = parse_feature_ext(data, struct.unpack_from("<I", data, ext_offset)[0])
    return info


def parse_feature_ext(data: bytes, pos: int) -> dict[int, bytes]:
    """FeatureId -> FeatureData of LOGIN7's FeatureExt block (MS-TDS 2.2.6.4)."""
    features: dict[int, bytes] = {}
    while pos < len(data) and data[pos] != FEATURE_TERMINATOR:
        feature, length = struct.unpack_from("<BI", data, pos)
        features[feature] = data[pos + 5:pos + 5 + length]
        pos += 5 + length
    return features


def fedauth_token(feature: bytes) -> tuple[int, str | None]:
    """(library, token) of a FEDAUTH feature: bFedAuthLibrary is the upper 7 bits of the first byte, fFedAuthEcho the lowest;
    SECURITYTOKEN data is a DWORD length and the token in UTF-16-LE (then an optional 32-byte nonce)."""
    library = feature[0] >> 1
    if library != FEDAUTH_LIBRARY_SECURITYTOKEN or len(feature) < 5:
        return library, None
    length = struct.unpack_from("<I", feature, 1)[0]
    return library, feature[5:5 + length].decode("utf-16-le", "replace")


# --- SQL types -------------------------------------------------------------------

INT_SIZES = {"tinyint": 1, "smallint": 2, "int": 4, "bigint": 8}
TYPE_RE = re.compile(r"^\s*(\w+)\s*(?:\(\s*(max|\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$", re.I)


@dataclass(frozen=True)
class SqlType:
    name: str
    length: int = 0  # characters or bytes; -1 = max
    precision: int = 0
    scale: int = 0

    @classmethod
    def parse(cls, text: str) -> SqlType:
        m = TYPE_RE.match(text)
        if not m:
            raise ValueError(f"unknown type {text!r}")
        name = m.group(1).lower()
        a, b = m.group(2), m.group(3)
        if name in ("decimal", "numeric"):
            return cls(name, 0, int(a or 18), int(b or 0))
        if name == "money":
            return cls(name, 0, 19, 4)
        if name in ("datetime2", "datetimeoffset", "time"):
            return cls(name, 0, 0, 7 if a is None else int(a))
        if name in ("nvarchar", "varchar", "varbinary", "nchar", "char", "binary"):
            return cls(name, -1 if (a or "").lower() == "max" else int(a or 1))
        if name in INT_SIZES or name in ("bit", "float", "real", "date", "datetime", "uniqueidentifier", "ntext", "text", "image", "xml"):
            return cls(name)
        raise ValueError(f"unsupported type {text!r}")

    def sql(self) -> str:
        if self.name in ("decimal", "numeric"):
            return f"{self.name}({self.precision},{self.scale})"
        if self.name in ("datetime2", "datetimeoffset", "time"):
            return f"{self.name}({self.scale})"
        if self.length:
            return f"{self.name}({'max' if self.length < 0 else self.length})"
        return self.name

    @property
    def affinity(self) -> str:
        """The SQLite storage type (INT, not INTEGER: a key column must not become the rowid)."""
        if self.name in INT_SIZES or self.name == "bit":
            return "INT"
        if self.name in ("float", "real"):
            return "REAL"
        if self.name in ("varbinary", "binary", "image"):
            return "BLOB"
        return "TEXT"

    @property
    def max_length(self) -> int:
        if self.name in INT_SIZES:
            return INT_SIZES[self.name]
        if self.length < 0:
            return -1
        if self.name in ("nvarchar", "nchar"):
            return 2 * self.length
        if self.length:
            return self.length
        return {"bit": 1, "float": 8, "real": 4, "money": 8, "date": 3, "datetime": 8, "uniqueidentifier": 16, "datetime2": 8, "datetimeoffset": 10,
                "time": 5, "decimal": dec_size(self.precision), "numeric": dec_size(self.precision)}.get(self.name, 16)

    @property
    def is_lob(self) -> bool:
        return self.length < 0 or self.name in ("ntext", "text", "image", "xml")


def dec_size(precision: int) -> int:
    return 5 if precision <= 9 else 9 if precision <= 19 else 13 if precision <= 28 else 17


def time_len(scale: int) -> int:
    return 3 if scale <= 2 else 4 if scale <= 4 else 5


def type_info(t: SqlType) -> bytes:
    n = t.name
    if n in INT_SIZES:
        return bytes([0x26, INT_SIZES[n]])
    if n == "bit":
        return b"\x68\x01"
    if n == "float":
        return b"\x6d\x08"
    if n == "real":
        return b"\x6d\x04"
    if n in ("decimal", "numeric"):
        return bytes([0x6A if n == "decimal" else 0x6C, dec_size(t.precision), t.precision, t.scale])
    if n == "money":
        return b"\x6e\x08"
    if n in ("nvarchar", "nchar", "ntext", "xml"):
        code = 0xEF if n == "nchar" else 0xE7
        return bytes([code]) + struct.pack("<H", 0xFFFF if t.is_lob else 2 * t.length) + COLLATION
    if n in ("varchar", "char", "text"):
        code = 0xAF if n == "char" else 0xA7
        return bytes([code]) + struct.pack("<H", 0xFFFF if t.is_lob else t.length) + COLLATION
    if n in ("varbinary", "binary", "image"):
        code = 0xAD if n == "binary" else 0xA5
        return bytes([code]) + struct.pack("<H", 0xFFFF if t.is_lob else t.length)
    if n == "datetime2":
        return bytes([0x2A, t.scale])
    if n == "datetimeoffset":
        return bytes([0x2B, t.scale])
    if n == "time":
        return bytes([0x29, t.scale])
    if n == "date":
        return b"\x28"
    if n == "datetime":
        return b"\x6f\x08"
    if n == "uniqueidentifier":
        return b"\x24\x10"
    raise ValueError(f"no TDS encoding for {n}")


def colmetadata(columns: list[tuple[str, SqlType]]) -> bytes:
    out = [struct.pack("<BH", COLMETADATA, len(columns))]
    for name, t in columns:
        out.append(struct.pack("<IH", 0, 0x0001) + type_info(t) + b_varchar(name))
    return b"".join(out)


# canonical text forms the engine stores: 'YYYY-MM-DD HH:MM:SS.fffffff' (+ ' +HH:MM' for datetimeoffset)
DT_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?\s*(?:([+-])(\d{2}):?(\d{2})|Z)?$")
DAYS_1900 = 693595  # days from 0001-01-01 to 1900-01-01


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 0001-01-01 (proleptic Gregorian), valid for all of 1..9999."""
    import datetime as _dt

    return _dt.date(y, m, d).toordinal() - 1


def split_datetime(text: str) -> tuple[int, int, int, int]:
    """(days since 0001-01-01, seconds of day, 100ns units, offset minutes) of a canonical value."""
    m = DT_RE.match(text)
    if not m:
        raise ValueError(f"bad date/time {text!r}")
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    secs = int(m.group(4) or 0) * 3600 + int(m.group(5) or 0) * 60 + int(m.group(6) or 0)
    frac = int((m.group(7) or "").ljust(7, "0"))
    offset = 0
    if m.group(8):
        offset = (int(m.group(9)) * 60 + int(m.group(10))) * (1 if m.group(8) == "+" else -1)
    return days_from_civil(y, mo, d), secs, frac, offset


def time_time_bytes(secs: int, frac7: int, scale: int) -> bytes:
    units = secs * 10**scale + frac7 // 10 ** (7 - scale)
    return units.to_bytes(time_len(scale), "little")


def encode_value(t: SqlType, v: Any) -> bytes:
    n = t.name
    if v is None:
        if n in ("nvarchar", "nchar", "varchar", "char", "varbinary", "binary", "ntext", "text", "image", "xml"):
            return b"\xff" * 8 if t.is_lob else b"\xff\xff"
        return b"\x00"
    if n in INT_SIZES:
        size = INT_SIZES[n]
        return bytes([size]) + int(v).to_bytes(size, "little", signed=True)
    if n == "bit":
        return b"\x01" + (b"\x01" if v else b"\x00")
    if n == "float":
        return b"\x08" + struct.pack("<d", float(v))
    if n == "real":
        return b"\x04" + struct.pack("<f", float(v))
    if n in ("decimal", "numeric"):
        unscaled = int(Decimal(str(v)).scaleb(t.scale, context=Context(prec=80)).to_integral_value())
        size = dec_size(t.precision)
        return bytes([size, 1 if unscaled >= 0 else 0]) + abs(unscaled).to_bytes(size - 1, "little")
    if n == "money":
        raw = int(Decimal(str(v)).scaleb(4, context=Context(prec=80)).to_integral_value())
        return b"\x08" + struct.pack("<iI", raw >> 32, raw & 0xFFFFFFFF)
    if n in ("nvarchar", "nchar", "ntext", "xml", "varchar", "char", "text", "varbinary", "binary", "image"):
        if n in ("varbinary", "binary", "image"):
            data = bytes(v)
        elif n in ("varchar", "char", "text"):
            data = str(v).encode("cp1252", "replace")
        else:
            data = str(v).encode("utf-16-le")
        if t.is_lob:
            return struct.pack("<Q", len(data)) + (struct.pack("<I", len(data)) + data if data else b"") + b"\x00\x00\x00\x00"
        return struct.pack("<H", len(data)) + data
    if n == "uniqueidentifier":
        return b"\x10" + uuid.UUID(str(v)).bytes_le
    if n == "date":
        days, _, _, _ = split_datetime(str(v))
        return b"\x03" + days.to_bytes(3, "little")
    if n == "time":
        _, secs, frac, _ = split_datetime("0001-01-01 " + str(v))
        body = time_time_bytes(secs, frac, t.scale)
        return bytes([len(body)]) + body
    if n in ("datetime2", "datetimeoffset"):
        days, secs, frac, offset = split_datetime(str(v))
        if n == "datetimeoffset":  # sent in UTC, with the offset
            total = days * 86400 + secs - offset * 60
            days, secs = divmod(total, 86400)
        body = time_time_bytes(secs, frac, t.scale) + days.to_bytes(3, "little")
        if n == "datetimeoffset":
            body += struct.pack("<h", offset)
        return bytes([len(body)]) + body
    if n == "datetime":
        days, secs, frac, _ = split_datetime(str(v))
        ticks = round((secs * 10_000_000 + frac) * 300 / 10_000_000)
        return b"\x08" + struct.pack("<iI", days - DAYS_1900, ticks)
    raise ValueError(f"cannot encode {n}")


def row(types: list[SqlType], values: tuple[Any, ...] | list[Any]) -> bytes:
    return b"\xd1" + b"".join(encode_value(t, v) for t, v in zip(types, values, strict=True))


# --- reading requests --------------------------------------------------------------


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        if len(out) != n:
            raise ValueError("truncated request")
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def b_varchar(self) -> str:
        n = self.u8()
        return self.take(2 * n).decode("utf-16-le")

    def us_varchar(self) -> str:
        n = self.u16()
        return self.take(2 * n).decode("utf-16-le")

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def skip_all_headers(self) -> None:
        total = struct.unpack_from("<I", self.data, self.pos)[0]
        self.pos += total

    def plp(self) -> bytes | None:
        total = struct.unpack("<Q", self.take(8))[0]
        if total == 0xFFFFFFFFFFFFFFFF:
            return None
        parts = []
        while True:
            n = self.u32()
            if n == 0:
                break
            parts.append(self.take(n))
        return b"".join(parts)


FIXED = {0x30: ("tinyint", 1), 0x32: ("bit", 1), 0x34: ("smallint", 2), 0x38: ("int", 4), 0x7F: ("bigint", 8), 0x3E: ("float", 8), 0x3B: ("real", 4),
         0x3D: ("datetime", 8), 0x3C: ("money", 8), 0x1F: ("null", 0)}


def read_param_value(r: Reader) -> tuple[str, Any]:
    """TYPE_INFO plus value of one RPC parameter: (declared type, python value)."""
    code = r.u8()
    if code in FIXED:
        name, size = FIXED[code]
        return name, decode_fixed(name, r.take(size)) if size else None
    if code in (0x26, 0x68, 0x6D, 0x6E, 0x6F, 0x24):
        r.u8()
        n = r.u8()
        raw = r.take(n)
        if not n:
            return "null", None
        if code == 0x26:
            return "int", int.from_bytes(raw, "little", signed=True)
        if code == 0x68:
            return "bit", raw[0]
        if code == 0x6D:
            return "float", struct.unpack("<d" if n == 8 else "<f", raw)[0]
        if code == 0x6E:
            return "money", decode_fixed("money", raw)
        if code == 0x6F:
            return "datetime", decode_fixed("datetime", raw)
        return "uniqueidentifier", str(uuid.UUID(bytes_le=raw)).upper()
    if code in (0x6A, 0x6C, 0x37, 0x3F):
        r.u8()
        r.u8()
        scale = r.u8()
        n = r.u8()
        if not n:
            return "decimal", None
        raw = r.take(n)
        unscaled = int.from_bytes(raw[1:], "little") * (1 if raw[0] else -1)
        return "decimal", str(Decimal(unscaled).scaleb(-scale))
    if code in (0x28, 0x29, 0x2A, 0x2B):
        scale = 0 if code == 0x28 else r.u8()
        n = r.u8()
        if not n:
            return "datetime2", None
        return "datetime2", decode_datetime(code, scale, r.take(n))
    if code in (0xE7, 0xA7, 0xEF, 0xAF, 0xA5, 0xAD):
        maxlen = r.u16()
        if code not in (0xA5, 0xAD):
            r.take(5)
        if maxlen == 0xFFFF:
            raw = r.plp()
        else:
            n = r.u16()
            raw = None if n == 0xFFFF else r.take(n)
        if raw is None:
            return "null", None
        if code in (0xE7, 0xEF):
            return "nvarchar", raw.decode("utf-16-le")
        if code in (0xA7, 0xAF):
            return "varchar", raw.decode("cp1252", "replace")
        return "varbinary", raw
    if code in (0x63, 0x23, 0x22):
        r.u32()
        if code != 0x22:
            r.take(5)
        n = r.u32()
        if n == 0xFFFFFFFF:
            return "null", None
        raw = r.take(n)
        if code == 0x63:
            return "nvarchar", raw.decode("utf-16-le")
        if code == 0x23:
            return "varchar", raw.decode("cp1252", "replace")
        return "varbinary", raw
    raise ValueError(f"unsupported parameter type 0x{code:02x}")


def decode_fixed(name: str, raw: bytes) -> Any:
    if name in ("tinyint", "smallint", "int", "bigint"):
        return int.from_bytes(raw, "little", signed=name != "tinyint")
    if name == "bit":
        return raw[0]
    if name in ("float", "real"):
        return struct.unpack("<d" if len(raw) == 8 else "<f", raw)[0]
    if name == "money":
        hi, lo = struct.unpack("<iI", raw) if len(raw) == 8 else (0, struct.unpack("<i", raw)[0])
        return str(Decimal((hi << 32) | lo).scaleb(-4))
    if name == "datetime":
        days, ticks = struct.unpack("<iI", raw)
        import datetime as _dt

        base = _dt.datetime(1900, 1, 1) + _dt.timedelta(days=days)
        units = round(ticks * 10_000_000 / 300)
        secs, frac = divmod(units, 10_000_000)
        return f"{base.year:04d}-{base.month:02d}-{base.day:02d} {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{frac:07d}"
    raise ValueError(name)


def decode_datetime(code: int, scale: int, raw: bytes) -> str:
    import datetime as _dt

    tl = 0 if code == 0x28 else time_len(scale)
    units = int.from_bytes(raw[:tl], "little") if tl else 0
    frac7 = (units % 10**scale) * 10 ** (7 - scale)
    secs = units // 10**scale
    if code == 0x29:
        return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{frac7:07d}"
    days = int.from_bytes(raw[tl:tl + 3], "little")
    offset = struct.unpack("<h", raw[tl + 3:tl + 5])[0] if code == 0x2B else 0
    if code == 0x2B:
        total = days * 86400 + secs + offset * 60
        days, secs = divmod(total, 86400)
    date = _dt.date.fromordinal(days + 1)
    if code == 0x28:
        return f"{date.year:04d}-{date.month:02d}-{date.day:02d}"
    text = f"{date.year:04d}-{date.month:02d}-{date.day:02d} {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{frac7:07d}"
    if code == 0x2B:
        sign = "+" if offset >= 0 else "-"
        text += f" {sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return text
