"""Snapshots: every row of a table, keyset-paged by its key, before the table's changes are streamed.

The argument (docs/mssql-cdc.md#snapshots): L, the stream's position, is fixed before the first
chunk is read, so every chunk is read at a time >= L; the changes after L are streamed once the
last snapshot row is acknowledged. A consumer that upserts snapshot rows and applies the changes
after them converges to the table, because CDC rows carry full row images. While a snapshot runs,
every position the stream reports is still L plus a `snapshot` object (the last key sent and the
counters), so a checkpoint never moves past L before the snapshot is acknowledged.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from providers import helper as h
from providers.mssql_cdc import catalog as cat
from providers.mssql_cdc.encode import compile_obj, js
from providers.mssql_cdc.values import formatter

SQL_KEYS = ("SELECT i.index_id, i.name, i.is_primary_key, c.name AS column_name, c.is_nullable, ic.key_ordinal "
            "FROM sys.indexes AS i JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id "
            "JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id "
            "WHERE i.object_id = ? AND i.is_unique = 1 AND i.is_disabled = 0 AND i.has_filter = 0 AND ic.key_ordinal > 0 "
            "ORDER BY i.is_primary_key DESC, i.index_id, ic.key_ordinal")
SQL_ROWS = "SELECT SUM(p.rows) AS approx_rows FROM sys.partitions AS p WHERE p.object_id = ? AND p.index_id IN (0, 1)"
SQL_SNAPSHOT_ALLOWED = "SELECT snapshot_isolation_state FROM sys.databases WHERE name = DB_NAME()"
PROGRESS_EVERY = 1.0  # seconds between progress lines on stderr


def now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


def requested(reason: str) -> dict[str, Any]:
    """The marker of a snapshot to take: positions that carry it resume as "snapshot, then changes after lsn"."""
    return {"requested": reason, "at": now_text()}


def key_columns(db: Any, table: cat.Table) -> list[str]:
    """The primary key, else a unique index over non-nullable columns (unfiltered, enabled); else one clear error."""
    indexes: dict[int, list[tuple[str, bool]]] = {}
    for r in db.query(SQL_KEYS, table.object_id):
        indexes.setdefault(r[0], []).append((r[3], bool(r[4])))
    for cols in indexes.values():  # primary key first
        if not any(nullable for _, nullable in cols):
            return [c for c, _ in cols]
    raise h.CommandFailed(f"cannot snapshot {table.schema}.{table.name}: it has no primary key and no unique index on non-nullable columns",
                          hint="add a primary key (or a unique index on NOT NULL columns), or leave the table out of snapshots "
                               '(snapshot = "none")', key="snapshot")


def approx_rows(db: Any, table: cat.Table) -> int | None:
    """Row count from sys.partitions (metadata, no scan of the table)."""
    value = db.query(SQL_ROWS, table.object_id)[0][0]
    return None if value is None else int(value)


def snapshot_allowed(db: Any) -> bool:
    return bool(db.query(SQL_SNAPSHOT_ALLOWED)[0][0] == 1)


@dataclass
class Chunker:
    """The SQL and encoders of one table's snapshot: captured columns (as change rows carry them), then key columns not captured."""

    table: cat.Table
    inst: cat.Instance
    keys: list[str]

    def __post_init__(self) -> None:
        captured = [c.name for c in self.inst.columns]
        lower = [c.lower() for c in captured]
        self.extra = [k for k in self.keys if k.lower() not in lower]
        names = captured + self.extra
        self.key_at = [[n.lower() for n in names].index(k.lower()) for k in self.keys]
        fmts = [formatter(c.type, c.scale) for c in self.inst.columns]
        by_name = {c.name.lower(): c for c in self.inst.columns}
        self.key_types = [by_name[k.lower()].type if k.lower() in by_name else "" for k in self.keys]
        self.key_fmts = [formatter(t, by_name[k.lower()].scale) if t else _json_any for k, t in zip(self.keys, self.key_types, strict=True)]
        self.obj = compile_obj([js(c.name) + ":" for c in self.inst.columns], fmts, at=0)
        cols = ", ".join("t." + cat.quote(n) for n in names)
        source = f"{cat.quote(self.table.schema)}.{cat.quote(self.table.name)}"
        order = ", ".join("t." + cat.quote(k) for k in self.keys)
        self.first_sql = f"SELECT TOP (?) {cols} FROM {source} AS t ORDER BY {order}"
        self.next_sql = f"SELECT TOP (?) {cols} FROM {source} AS t WHERE {keyset(self.keys)} ORDER BY {order}"

    def query(self, after: list[Any] | None, size: int) -> tuple[str, list[Any]]:
        if after is None:
            return self.first_sql, [size]
        values = [bind(v, t) for v, t in zip(after, self.key_types, strict=True)]
        params: list[Any] = [size]
        for i in range(len(values)):
            params += values[:i] + [values[i]]
        return self.next_sql, params

    def key_json(self, row: Any) -> str:
        return ",".join(f(row[i]) if row[i] is not None else "null" for f, i in zip(self.key_fmts, self.key_at, strict=True))


def keyset(keys: list[str]) -> str:
    """(k1 > ?) OR (k1 = ? AND k2 > ?) OR ...: rows after the last key, in key order."""
    terms = []
    for i, k in enumerate(keys):
        eq = [f"t.{cat.quote(p)} = ?" for p in keys[:i]]
        terms.append("(" + " AND ".join([*eq, f"t.{cat.quote(k)} > ?"]) + ")")
    return " OR ".join(terms)


def bind(value: Any, sql_type: str) -> Any:
    """A key value from a position (as the encoder wrote it) back to what the driver binds for that column."""
    if value is None:
        return None
    if sql_type in ("binary", "varbinary"):
        return base64.b64decode(value)
    if sql_type in ("decimal", "numeric", "money", "smallmoney"):
        return Decimal(value)
    return value


def _json_any(value: Any) -> str:
    if isinstance(value, bytes):
        return js(base64.b64encode(value).decode())
    return json.dumps(value if isinstance(value, (int, float, str, bool)) else str(value), ensure_ascii=False)


class Progress:
    """One line on stderr at most every PROGRESS_EVERY seconds, and at the end."""

    def __init__(self, label: str, log: Callable[[str], None]):
        self.label = label
        self.log = log
        self.last = 0.0

    def show(self, marker: dict[str, Any], done: bool = False) -> None:
        now = time.monotonic()
        if not done and now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        self.log(f"{self.label}: snapshot {'done' if done else 'running'}: {describe(marker)}")


def describe(marker: dict[str, Any]) -> str:
    rows, total = int(marker.get("rows", 0)), marker.get("total")
    pct = f" ({min(100, math.floor(100 * rows / total))}%)" if total else ""
    rate = rows_per_second(marker)
    return (f"{rows} of ~{total if total is not None else '?'} rows{pct}, {marker.get('chunks', 0)} chunks"
            + (f", {rate:.0f} rows/s" if rate is not None else ""))


def rows_per_second(marker: dict[str, Any]) -> float | None:
    try:
        started = dt.datetime.fromisoformat(str(marker["started"]).replace("Z", "+00:00"))
        at = dt.datetime.fromisoformat(str(marker["at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    seconds = (at - started).total_seconds()
    return marker.get("rows", 0) / seconds if seconds > 0 else None


def progress(marker: dict[str, Any] | None) -> dict[str, Any] | None:
    """What status shows of a snapshot from a checkpoint's marker: rows, chunks, percent, rows/s."""
    if not isinstance(marker, dict):
        return None
    if "id" not in marker:
        return {"state": "requested", "reason": marker.get("requested"), "requested_at": marker.get("at")}
    total, rows = marker.get("total"), int(marker.get("rows", 0))
    rate = rows_per_second(marker)
    return {"state": "running", "reason": marker.get("reason"), "rows": rows, "chunks": marker.get("chunks", 0), "approx_total": total,
            "percent": min(100, math.floor(100 * rows / total)) if total else None, "rows_per_second": round(rate, 1) if rate else None,
            "started": marker.get("started")}


class TableSnapshot:
    """Reads one table's snapshot chunk by chunk and writes its rows; the caller owns the connection and the stream.

    `head` is the stream's position L as JSON members (without braces): every row's position is
    L plus the snapshot marker, so resuming from any acknowledged row continues after its key.
    """

    def __init__(self, db: Any, chunker: Chunker, marker: dict[str, Any], stream: str, head: str, chunk_size: int,
                 write: Callable[[bytes], None], stopping: Callable[[], bool], progress: Progress):
        self.db, self.chunker, self.marker = db, chunker, dict(marker)
        self.chunk_size, self.write, self.stopping, self.progress = chunk_size, write, stopping, progress
        t, inst = chunker.table, chunker.inst
        self.prefix = ('{"data":', f',"metadata":{{"TableName":{js(t.name)},"Schema":{js(t.schema)},"CaptureInstance":{js(inst.name)},'
                       f'"OperationType":"Snapshot","LSN":{js(head_lsn(head))},"SnapshotID":{js(str(marker["id"]))}}},"stream":{js(stream)},'
                       f'"position":{{{head},"snapshot":{{')

    def fetch(self, after: list[Any] | None) -> list[Any]:
        sql, params = self.chunker.query(after, self.chunk_size)
        return list(self.db.query(sql, *params))

    def run(self) -> bool:
        """True when the last chunk was written (the snapshot is complete); False when stopped before.

        The next chunk is read on a helper thread while this one is encoded and written (the
        driver releases the GIL while it waits for the server): its keyset starts after this
        chunk's last key, known as soon as the rows are in. A prefetched chunk is dropped on a stop."""
        ahead: ChunkPrefetch | None = None
        try:
            while not self.stopping():
                rows = ahead.get() if ahead is not None else self.fetch(self.marker.get("after"))
                ahead = None
                if len(rows) == self.chunk_size:
                    ahead = ChunkPrefetch(self.fetch, json.loads(f"[{self.chunker.key_json(rows[-1])}]"))
                if self.step(rows):
                    return True
            return False
        finally:
            if ahead is not None:
                ahead.wait()  # the connection is free again before the caller uses it

    def step(self, rows: list[Any]) -> bool:
        """Write one chunk; True when it was the last."""
        self.marker["at"] = now_text()
        self.marker["chunks"] = int(self.marker.get("chunks", 0)) + 1
        if rows:
            self.emit(rows)
        if len(rows) < self.chunk_size:
            self.progress.show(self.marker, done=True)
            return True
        self.progress.show(self.marker)
        return False

    def emit(self, rows: list[Any]) -> None:
        m = self.marker
        data, meta = self.prefix
        fixed = ",".join(f"{js(k)}:{json.dumps(m[k], separators=(',', ':'))}" for k in ("id", "reason", "started", "total", "at", "chunks"))
        obj, key_json, n = self.chunker.obj, self.chunker.key_json, int(m.get("rows", 0))
        out = []
        key = ""
        for row in rows:
            n += 1
            key = key_json(row)
            out.append(f'{data}{obj(row)}{meta}{fixed},"rows":{n},"after":[{key}]}}}}}}\n')
        self.write("".join(out).encode())
        m["rows"] = n
        m["after"] = json.loads(f"[{key}]")


class ChunkPrefetch:
    """One chunk read on a daemon thread; get() returns its rows or raises the driver's error."""

    def __init__(self, fetch: Callable[[list[Any]], list[Any]], after: list[Any]):
        self.rows: list[Any] | None = None
        self.error: BaseException | None = None
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fetch, after), name="mssql-snapshot-prefetch", daemon=True)
        self.thread.start()
        self.running.wait()  # as reader.Prefetch: let it reach the driver before encoding takes the GIL

    def _run(self, fetch: Callable[[list[Any]], list[Any]], after: list[Any]) -> None:
        try:
            self.running.set()
            self.rows = fetch(after)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self.error = exc

    def wait(self) -> None:
        while self.thread.is_alive():
            self.thread.join(0.5)

    def get(self) -> list[Any]:
        self.wait()
        if self.error is not None:
            raise self.error
        assert self.rows is not None
        return self.rows


def head_lsn(head: str) -> str:
    return str(json.loads("{" + head + "}")["lsn"])


def fresh(reason: str, total: int | None) -> dict[str, Any]:
    """The marker of a snapshot that starts now (its id tells two snapshots of one table apart, e.g. in message ids)."""
    started = now_text()
    return {"id": started, "reason": reason, "started": started, "total": total, "at": started, "chunks": 0, "rows": 0, "after": None}
