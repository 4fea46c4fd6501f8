"""Configuration of mssql-cdc: fields, validation, table patterns, driver choice."""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from providers import helper as h

FIELDS = [
    h.Field("connection_string", str, required=True, help="ODBC connection string, e.g. DRIVER={ODBC Driver 18 for SQL Server};SERVER=...;DATABASE=...;UID=...;PWD=..."),
    h.Field("tables", list, required=True, help='tables to read: ["Persons", "dbo.Orders", "sales.*"] (schema defaults to dbo)'),
    h.Field("start", str, default="latest", help="where to start without a checkpoint: latest, earliest, or an ISO-8601 time"),
    h.Field("poll_interval_min", float, default=0.5, help="seconds between polls while changes keep coming"),
    h.Field("poll_interval_max", float, default=10.0, help="longest wait between polls when idle or failing (backoff with jitter)"),
    h.Field("page_size", int, default=5000, help="change rows per query (at most two pages are held in memory)"),
    h.Field("max_transactions_per_pass", int, default=0, help="cap on transactions read per pass (0 = no cap)"),
    h.Field("on_gap", str, default="fail", help='"fail" (default) or "skip": accept a range lost to CDC cleanup, with a warning'),
    h.Field("manage_cdc", bool, default=False, help="init enables CDC where it is missing; destroy disables only what dstream enabled"),
    h.Field("query_timeout", int, default=60, help="seconds before a query is abandoned (then retried)"),
    h.Field("authentication", str, default="connection_string",
            help='"connection_string" (default: UID/PWD or the driver\'s own Authentication= in connection_string) or "azure": '
                 'an Entra ID token from DefaultAzureCredential (ODBC Driver 17/18 only)'),
    h.Field("snapshot", str, default="none", help='"none" (default), "initial" (every row of a table before its changes, the first time it is '
            'streamed) or "when_needed" (also again when its checkpoint fell behind the capture instance\'s minimum LSN)'),
    h.Field("snapshot_chunk_size", int, default=5000, help="rows per snapshot read (keyset on the primary key; one short read each)"),
]
SNAPSHOT_MODES = ("none", "initial", "when_needed")
AUTHENTICATIONS = ("connection_string", "azure")
CREDENTIAL_KEYS = ("uid", "user id", "user", "pwd", "password", "authentication", "trusted_connection")  # the driver refuses them next to a token

PREFERRED_DRIVERS = ("ODBC Driver 18 for SQL Server", "ODBC Driver 17 for SQL Server", "FreeTDS")
NAME_PART = re.compile(r"\[(?:[^\]]|\]\])+\]|[^.\[\]]+")


@dataclass(frozen=True)
class Settings:
    connection_string: str
    patterns: tuple[tuple[str, str], ...]  # (schema, table) each may hold * and ?
    start: str
    start_time: dt.datetime | None
    poll_min: float
    poll_max: float
    page_size: int
    max_transactions: int
    on_gap: str
    manage_cdc: bool
    query_timeout: int
    authentication: str = "connection_string"
    snapshot: str = "none"
    snapshot_chunk_size: int = 5000


def split_name(text: str) -> tuple[str, str]:
    """'Persons' -> (dbo, Persons); 'sales.[Order Lines]' -> (sales, Order Lines). Raises ValueError."""
    parts = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = NAME_PART.match(text, pos)
        if not m:
            raise ValueError(text)
        part = m.group()
        parts.append(part[1:-1].replace("]]", "]") if part.startswith("[") else part.strip())
        pos = m.end()
        if pos < len(text):
            if text[pos] != ".":
                raise ValueError(text)
            pos += 1
    if len(parts) == 1:
        parts.insert(0, "dbo")
    if len(parts) != 2 or not all(parts):
        raise ValueError(text)
    return parts[0], parts[1]


def settings(config: dict[str, Any]) -> Settings:
    tables = config["tables"]
    if not tables or not all(isinstance(t, str) and t.strip() for t in tables):
        raise h.CommandFailed("tables must be a non-empty list of table names", key="tables")
    patterns = []
    for t in tables:
        try:
            patterns.append(split_name(t))
        except ValueError:
            raise h.CommandFailed(f"table name {t!r} is not of the form table, schema.table or schema.* ([brackets] quote dots)", key="tables") from None
    start = config["start"].strip()
    start_time = None
    if start.lower() in ("latest", "earliest"):
        start = start.lower()
    else:
        try:
            start_time = iso_time(start)
        except ValueError:
            raise h.CommandFailed(f"start must be latest, earliest or an ISO-8601 time, not {start!r}", key="start") from None
        start = "time"
    if config["on_gap"] not in ("fail", "skip"):
        raise h.CommandFailed(f"on_gap must be \"fail\" or \"skip\", not {config['on_gap']!r}", key="on_gap")
    if config["page_size"] < 2 or config["page_size"] > 100_000:
        raise h.CommandFailed("page_size must be between 2 and 100000", key="page_size")
    if not 0 < config["poll_interval_min"] <= config["poll_interval_max"]:
        raise h.CommandFailed("poll intervals must satisfy 0 < poll_interval_min <= poll_interval_max", key="poll_interval_min")
    if config["snapshot"] not in SNAPSHOT_MODES:
        raise h.CommandFailed(f"snapshot must be one of {', '.join(SNAPSHOT_MODES)}, not {config['snapshot']!r}", key="snapshot")
    if not 1 <= config["snapshot_chunk_size"] <= 100_000:
        raise h.CommandFailed("snapshot_chunk_size must be between 1 and 100000", key="snapshot_chunk_size")
    if config["max_transactions_per_pass"] < 0:
        raise h.CommandFailed("max_transactions_per_pass must be >= 0", key="max_transactions_per_pass")
    authentication = config.get("authentication", "connection_string")
    if authentication not in AUTHENTICATIONS:
        raise h.CommandFailed(f"authentication must be \"connection_string\" or \"azure\", not {authentication!r}", key="authentication")
    if authentication == "azure":
        given = sorted({k.strip() for k, _ in connection_keys(config["connection_string"]) if k.strip().lower() in CREDENTIAL_KEYS})
        if given:
            raise h.CommandFailed(f"connection_string holds {', '.join(given)} but authentication = \"azure\" signs in with an Entra ID token",
                                  hint="remove them from connection_string, or use authentication = \"connection_string\"", key="connection_string")
    return Settings(config["connection_string"], tuple(patterns), start, start_time, config["poll_interval_min"], config["poll_interval_max"],
                    config["page_size"], config["max_transactions_per_pass"], config["on_gap"], config["manage_cdc"], max(1, config["query_timeout"]),
                    authentication, snapshot=config["snapshot"], snapshot_chunk_size=config["snapshot_chunk_size"])


def is_pattern(schema: str, table: str) -> bool:
    return any(c in schema + table for c in "*?")


def matches(pattern: tuple[str, str], schema: str, table: str) -> bool:
    return fnmatch.fnmatchcase(schema.lower(), pattern[0].lower()) and fnmatch.fnmatchcase(table.lower(), pattern[1].lower())


def stream_name(schema: str, table: str) -> str:
    return table if schema.lower() == "dbo" else f"{schema}.{table}"


def connection_keys(connection_string: str) -> list[tuple[str, str]]:
    """key=value pairs of an ODBC connection string ({...} values may hold ';')."""
    out = []
    for m in re.finditer(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)\s*(?:;|$)", connection_string):
        out.append((m.group(1), m.group(2)))
    return out


def with_driver(connection_string: str, log: Any) -> str:
    """The connection string, naming the best installed driver when it names none."""
    if any(k.strip().lower() == "driver" for k, _ in connection_keys(connection_string)):
        return connection_string
    import pyodbc

    installed = list(pyodbc.drivers())
    for name in PREFERRED_DRIVERS:
        if name in installed:
            log(f"connection_string names no DRIVER: using {name!r} (installed: {', '.join(installed)})")
            return f"DRIVER={{{name}}};" + connection_string
    raise h.CommandFailed(
        f"connection_string names no DRIVER and no SQL Server ODBC driver is installed (pyodbc.drivers() = {installed!r})",
        hint="install Microsoft ODBC Driver 18 for SQL Server (package msodbcsql18) or FreeTDS (Debian/Ubuntu: apt-get install tdsodbc), "
             "or name one with DRIVER={...} in connection_string",
        key="connection_string")


_FRACTION = re.compile(r"(T\d{2}:\d{2}:\d{2})\.(\d+)")


def iso_time(text: str) -> dt.datetime:
    """An ISO-8601 time as 3.11's fromisoformat reads it, on 3.10 too: a trailing Z, and
    a fraction of any length (3.10 takes only 3 or 6 digits)."""
    text = text.replace("Z", "+00:00").replace("z", "+00:00")
    text = _FRACTION.sub(lambda m: f"{m.group(1)}.{(m.group(2) + '000000')[:6]}", text)
    return dt.datetime.fromisoformat(text)
