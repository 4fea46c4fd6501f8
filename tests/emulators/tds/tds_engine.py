"""The peer's database: tables in SQLite, a CDC model that behaves like SQL Server's.

Schemas are attached in-memory SQLite databases (dbo, cdc, sys, ...). DML sent
over the wire is executed on SQLite; each changed row becomes change rows in
every capture instance of its table (insert 2, delete 1, update 3+4, key
change 1+2 with one seqval), and each committed transaction that changed a
captured table gets one commit LSN and one cdc.lsn_time_mapping row.

Reads follow SQL Server's isolation levels (docs: "SET TRANSACTION ISOLATION LEVEL",
"Snapshot isolation in SQL Server"). All sessions share one SQLite database, so a
writer's uncommitted rows are in the table; a reader never sees another session's:
- READ COMMITTED (the default, READ_COMMITTED_SNAPSHOT off) waits until no other session
  holds uncommitted changes to a table it reads (SQL Server blocks on the locked rows only;
  the peer blocks on the table: stricter for the reader, same results). It gives up after
  LOCK_WAIT seconds with Msg 1222, as SQL Server does with SET LOCK_TIMEOUT.
- READ COMMITTED with READ_COMMITTED_SNAPSHOT ON reads the last committed version, per statement.
- SNAPSHOT reads the committed state as of the transaction's first data access (not its BEGIN
  TRAN, as in SQL Server), through row versions kept while snapshot transactions are open. The
  SET itself always succeeds; the first data access fails with Msg 3952 unless
  ALLOW_SNAPSHOT_ISOLATION is ON (SQL Server's documented behaviour).
A version read replaces the table by a view: the table without the rows changed since the
snapshot, plus those rows as they were (`_as_of`).
"""

from __future__ import annotations

import bisect
import itertools
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tds_catalog import CT_META_HEAD, CT_META_TAIL, FUNCTION_TYPES, NOCASE, SYSTEM_TABLES, SYSTEM_TYPE_IDS, coerce, infer_type, now_text
from tds_sql import SqlError, Tok, Translator, parse_exec, quote, significant, split_statements, tokenize
from tds_wire import SqlType

ZERO_LSN = bytes(10)
LOCK_WAIT = 30.0  # seconds a READ COMMITTED read waits for another session's uncommitted changes
ISOLATION_LEVELS = ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SNAPSHOT", "SERIALIZABLE")


@dataclass
class Table:
    schema: str
    name: str
    object_id: int
    columns: list[tuple[str, SqlType]]
    pk: list[str]
    instances: list[Instance] = field(default_factory=list)

    @property
    def sqlite_name(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    def col_type(self, name: str) -> SqlType | None:
        for c, t in self.columns:
            if c.lower() == name.lower():
                return t
        return None


@dataclass
class Instance:
    name: str
    object_id: int
    source: Table
    columns: list[tuple[str, SqlType]]
    start_lsn: bytes | None
    create_date: str


@dataclass
class Result:
    columns: list[tuple[str, SqlType]] | None = None  # None: no result set (DML, DDL)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    count: int | None = None
    tran: str | None = None  # 'begin' / 'commit' / 'rollback' ENVCHANGE to send


@dataclass
class Session:
    spid: int
    in_tran: bool = False
    pending: list[tuple[Instance, int, bytes, int, bytes, list[Any]]] = field(default_factory=list)
    undo: list[tuple[str, Table, int, tuple[Any, ...] | None]] = field(default_factory=list)
    command_id: int = 0
    begin_lsn: bytes = ZERO_LSN
    begin_time: str = ""
    prepared: dict[int, tuple[list[str], str]] = field(default_factory=dict)
    isolation: str = "READ COMMITTED"
    snapshot_seq: int | None = None  # the commit sequence a SNAPSHOT transaction reads as of, from its first data access
    writes: list[tuple[int, Table, int, tuple[Any, ...] | None]] = field(default_factory=list)  # (op, table, rowid, before) uncommitted


def lsn_bytes(n: int) -> bytes:
    return n.to_bytes(10, "big")


class Engine:
    def __init__(self, database: str = "dstream"):
        self.lock = threading.RLock()
        self.database = database
        self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self.cdc_enabled = False
        self.schemas: dict[str, tuple[int, str]] = {}
        self.tables: dict[tuple[str, str], Table] = {}
        self.instances: dict[str, Instance] = {}
        self.ids = itertools.count(245575913, 16)
        self.schema_ids = itertools.count(5)
        self.lsn_counter = 0x0000002A_00000100_0001
        self.max_lsn: bytes | None = None
        self.mapping: list[tuple[bytes, str]] = []  # (start_lsn, tran_end_time), ascending
        self.tran_ids = itertools.count(0x1000)
        self.stalled: list[tuple[bytes, bytes, str, str, list[Any]]] = []
        self.unmapped: list[tuple[bytes, bytes, str, str]] = []
        self.stall = False
        self.last_create = ""
        self.commit_delay = 0.0
        self.allow_snapshot = False
        self.read_committed_snapshot = False
        self.sessions: dict[int, Session] = {}
        self.commit_seq = 0
        self.ops = itertools.count(1)
        self.versions: list[tuple[int, int, Table, int, tuple[Any, ...] | None]] = []  # (commit seq, op, table, rowid, before)
        self.changed = threading.Condition(self.lock)  # commits and rollbacks wake READ COMMITTED readers
        self.view_ids = itertools.count(1)
        for schema in ("sys", "cdc"):
            self.db.execute(f"ATTACH DATABASE ':memory:' AS {schema}")
        for (schema, name), cols in SYSTEM_TABLES.items():
            body = ", ".join(f"{quote(c)} {t.affinity}{' COLLATE NOCASE' if c in NOCASE else ''}" for c, t in cols)
            self.db.execute(f"CREATE TABLE {schema}.{name} ({body})")
        self.schemas = {"sys": (4, "sys"), "cdc": (3, "cdc")}
        self.db.execute("INSERT INTO sys.schemas VALUES (4, 'sys', 1), (3, 'cdc', 1)")
        self._attach("dbo")
        self.db.execute("CREATE UNIQUE INDEX cdc.lsn_time_mapping_pk ON lsn_time_mapping(start_lsn)")
        self.db.execute("INSERT INTO sys.databases VALUES (?, 5, 0, ?, 0, 'OFF', 0)", (database, now_text()))
        self._register_functions()

    # --- helpers --------------------------------------------------------------------

    def _attach(self, schema: str) -> None:
        self.db.execute(f"ATTACH DATABASE ':memory:' AS {quote(schema)}")
        sid = {"sys": 4, "cdc": 3, "dbo": 1}.get(schema) or next(self.schema_ids)
        self.schemas[schema.lower()] = (sid, schema)
        if schema != "sys":
            self.db.execute("INSERT INTO sys.schemas VALUES (?, ?, 1)", (sid, schema))

    def new_lsn(self) -> bytes:
        self.lsn_counter += 0x10
        return lsn_bytes(self.lsn_counter)

    def _create_date(self) -> str:
        text = now_text()
        if text <= self.last_create:  # instances are told apart by create_date: keep it increasing
            base = self.last_create[:-3]
            text = base + f"{int(self.last_create[-3:]) + 1:03d}"
        self.last_create = text
        return text

    def _register_functions(self) -> None:
        f = self.db.create_function
        f("fn_cdc_get_max_lsn", 0, lambda: self.max_lsn)
        f("fn_cdc_get_min_lsn", 1, self._min_lsn)
        f("fn_cdc_increment_lsn", 1, lambda b: lsn_bytes(int.from_bytes(b, "big") + 1) if b is not None else None)
        f("fn_cdc_decrement_lsn", 1, lambda b: lsn_bytes(int.from_bytes(b, "big") - 1) if b is not None else None)
        f("fn_cdc_map_time_to_lsn", 2, self._map_time_to_lsn)
        f("fn_cdc_map_lsn_to_time", 1, lambda b: next((t for lsn, t in self.mapping if lsn == b), None))
        f("OBJECT_NAME", 1, lambda i: self._object(i, 1))
        f("OBJECT_SCHEMA_NAME", 1, lambda i: self._object(i, 0))
        f("OBJECT_ID", 1, self._object_id)
        f("SCHEMA_NAME", 1, lambda i: next((n for s, n in self.schemas.values() if s == i), None))
        f("DB_NAME", 0, lambda: self.database)
        f("SYSDATETIME", 0, lambda: now_text(digits=7))
        f("SYSUTCDATETIME", 0, lambda: now_text(True, 7))
        f("GETDATE", 0, lambda: now_text())
        f("GETUTCDATE", 0, lambda: now_text(True))
        f("NEWID", 0, lambda: str(uuid.uuid4()).upper())
        f("QUOTENAME", 1, lambda s: None if s is None else "[" + s.replace("]", "]]") + "]")

    def _min_lsn(self, name: Any) -> bytes:
        inst = self.instances.get(str(name).lower())
        return (inst.start_lsn or ZERO_LSN) if inst else ZERO_LSN

    def _map_time_to_lsn(self, op: str, time: str) -> bytes | None:
        op = op.lower()
        times = [t for _, t in self.mapping]
        if op == "largest less than or equal":
            i = bisect.bisect_right(times, time) - 1
        elif op == "largest less than":
            i = bisect.bisect_left(times, time) - 1
        elif op == "smallest greater than":
            i = bisect.bisect_right(times, time)
        elif op == "smallest greater than or equal":
            i = bisect.bisect_left(times, time)
        else:
            raise ValueError(op)
        return self.mapping[i][0] if 0 <= i < len(self.mapping) else None

    def _objects(self) -> dict[int, tuple[str, str]]:
        out = {t.object_id: (t.schema, t.name) for t in self.tables.values()}
        out.update({i.object_id: ("cdc", f"{i.name}_CT") for i in self.instances.values()})
        return out

    def _object(self, oid: Any, part: int) -> str | None:
        found = self._objects().get(oid)
        return found[part] if found else None

    def _object_id(self, name: Any) -> int | None:
        toks = [t for t in significant(tokenize(str(name))) if t.is_ident]
        schema, table = (toks[0].name, toks[1].name) if len(toks) == 2 else ("dbo", toks[0].name) if toks else ("", "")
        found = self.tables.get((schema.lower(), table.lower()))
        return found.object_id if found else None

    def table(self, name_toks: list[Tok]) -> Table:
        names = [t.name for t in name_toks if t.is_ident]
        schema, name = (names[-2], names[-1]) if len(names) >= 2 else ("dbo", names[-1])
        found = self.tables.get((schema.lower(), name.lower()))
        if not found:
            raise SqlError(208, f"Invalid object name '{'.'.join(names)}'.")
        return found

    # --- statements ---------------------------------------------------------------

    def execute(self, session: Session, sql: str, params: list[Any] | None = None, names: list[str] | None = None) -> list[Result]:
        with self.lock:
            self.sessions[session.spid] = session
            results = []
            translator = Translator(names, {"@@spid": str(session.spid), "@@trancount": str(int(session.in_tran)),
                                            "@@version": "'Microsoft SQL Server 2022 (tdspeer)'", "@@servername": "'tdspeer'"})
            for stmt in split_statements(tokenize(sql)):
                results.append(self._statement(session, stmt, params or [], translator))
            return results

    def _statement(self, session: Session, stmt: list[Tok], params: list[Any], tr: Translator) -> Result:
        sig = significant(stmt)
        head = sig[0].upper
        named = {f"p{i}": v for i, v in enumerate(params, 1)}
        second = sig[1].upper if len(sig) > 1 else ""
        if head in ("SELECT", "WITH"):
            return self._select(session, stmt, named, tr)
        if head in ("INSERT", "UPDATE", "DELETE"):
            return self._dml(session, head, stmt, named, tr)
        if head == "BEGIN" and second in ("TRAN", "TRANSACTION"):
            self.begin(session)
            return Result(tran="begin")
        if head == "COMMIT":
            self.commit(session)
            return Result(tran="commit")
        if head == "ROLLBACK":
            self.rollback(session)
            return Result(tran="rollback")
        if head in ("EXEC", "EXECUTE"):
            proc, args = parse_exec(stmt)
            return self.procedure(session, proc, args)
        if head == "CREATE" and second == "TABLE":
            return self._create_table(sig)
        if head == "CREATE" and second == "SCHEMA":
            if sig[2].name.lower() in self.schemas:
                raise SqlError(2714, f"There is already an object named '{sig[2].name}' in the database.")
            self._attach(sig[2].name)
            return Result()
        if head == "ALTER" and second == "TABLE":
            return self._alter_table(sig)
        if head == "DROP" and second == "TABLE":
            tab = self.table(sig[2:])
            for inst in list(tab.instances):
                self._drop_instance(inst)
            self.db.execute(f"DROP TABLE {tab.sqlite_name}")
            self.db.execute("DELETE FROM sys.tables WHERE object_id = ?", (tab.object_id,))
            self.db.execute("DELETE FROM sys.columns WHERE object_id = ?", (tab.object_id,))
            self.db.execute("DELETE FROM sys.indexes WHERE object_id = ?", (tab.object_id,))
            self.db.execute("DELETE FROM sys.index_columns WHERE object_id = ?", (tab.object_id,))
            del self.tables[(tab.schema.lower(), tab.name.lower())]
            return Result()
        if head == "SET" and second == "TRANSACTION":
            return self._set_isolation(session, sig)
        if head == "ALTER" and second == "DATABASE":
            return self._alter_database(sig)
        if head == "CREATE" and "INDEX" in [t.upper for t in sig[1:4]]:
            return self._create_index(sig)
        if head in ("SET", "USE", "DECLARE", "PRINT"):
            return Result()
        raise SqlError(102, f"Incorrect syntax near '{sig[0].text}'.", 15)

    def _sqlite(self, sql: str, params: list[Any] | dict[str, Any]) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            text = str(exc)
            if "UNIQUE" in text or "PRIMARY" in text:
                raise SqlError(2627, f"Violation of PRIMARY KEY constraint. Cannot insert duplicate key ({text}).", 14) from None
            if "NOT NULL" in text:
                raise SqlError(515, f"Cannot insert the value NULL into column ({text}); column does not allow nulls.") from None
            raise SqlError(547, text) from None
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if text.startswith("no such table:"):
                raise SqlError(208, f"Invalid object name '{text.split(':', 1)[1].strip()}'.") from None
            if text.startswith("no such column:"):
                raise SqlError(207, f"Invalid column name '{text.split(':', 1)[1].strip()}'.") from None
            raise SqlError(102, f"Incorrect syntax ({text}).", 15) from None
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
            raise SqlError(8144, f"Procedure or function has too many arguments specified ({exc}).") from None

    # --- SELECT -----------------------------------------------------------------------

    def _refs(self, sig: list[Tok]) -> dict[str, list[tuple[str, SqlType]]]:
        """alias/table name -> columns of each table named after FROM or JOIN."""
        refs: dict[str, list[tuple[str, SqlType]]] = {}
        for i, t in enumerate(sig):
            if t.upper not in ("FROM", "JOIN") or i + 1 >= len(sig) or not sig[i + 1].is_ident:
                continue
            j = i + 1
            names = [sig[j].name]
            while j + 2 < len(sig) and sig[j + 1].text == "." and sig[j + 2].is_ident:
                names.append(sig[j + 2].name)
                j += 2
            schema, name = (names[-2], names[-1]) if len(names) >= 2 else ("dbo", names[-1])
            if schema.lower() == "cdc" and not self.cdc_enabled:
                raise SqlError(208, f"Invalid object name 'cdc.{name}'.")
            cols = SYSTEM_TABLES.get((schema.lower(), name.lower()))
            if cols is None:
                tab = self.tables.get((schema.lower(), name.lower()))
                if tab is None and schema.lower() == "cdc" and name.lower().endswith("_ct"):
                    inst = self.instances.get(name[:-3].lower())
                    cols = CT_META_HEAD + inst.columns + CT_META_TAIL if inst else None
                elif tab is not None:
                    cols = tab.columns
            if cols is None:
                raise SqlError(208, f"Invalid object name '{'.'.join(names)}'.")
            alias = name
            k = j + 1
            if k < len(sig) and sig[k].upper == "AS":
                k += 1
            if k < len(sig) and sig[k].is_ident and sig[k].upper not in KEYWORDS:
                alias = sig[k].name
            refs[alias.lower()] = cols
            refs.setdefault(name.lower(), cols)
        return refs

    def _select(self, session: Session, stmt: list[Tok], params: dict[str, Any], tr: Translator) -> Result:
        sig = significant(stmt)
        refs = self._refs(sig)
        if refs:
            self._check_snapshot_allowed(session)
        if any(t.is_ident and t.name.lower() == "partitions" for t in sig):
            self._refresh_partitions()
        views: list[str] = []
        try:
            sql = tr.render(self._versioned(session, stmt, views))
            cursor = self._sqlite(sql, params)
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
        finally:
            for view in views:
                self.db.execute(f"DROP VIEW temp.{quote(view)}")
                self.db.execute(f"DROP TABLE temp.{quote(view + '_rows')}")
            if session.isolation == "SNAPSHOT" and not session.in_tran:
                session.snapshot_seq = None  # an autocommit statement is its own snapshot transaction
                self._prune_versions()
        hinted = self._select_types(sig, refs)
        columns = []
        for i, name in enumerate(names):
            t = hinted[i] if i < len(hinted) and len(hinted) == len(names) else None
            columns.append((name, t or infer_type([r[i] for r in rows])))
        return Result(columns, [tuple(fix(t, v) for (_, t), v in zip(columns, r, strict=True)) for r in rows], count=len(rows))

    def _select_types(self, sig: list[Tok], refs: dict[str, list[tuple[str, SqlType]]]) -> list[SqlType | None]:
        start = next(i for i, t in enumerate(sig) if t.upper == "SELECT") + 1
        if start < len(sig) and sig[start].upper == "TOP":
            start += 1
            if sig[start].text == "(":
                while sig[start].text != ")":
                    start += 1
            start += 1
        items: list[list[Tok]] = [[]]
        depth = 0
        for t in sig[start:]:
            if depth == 0 and t.upper == "FROM":
                break
            depth += t.text == "("
            depth -= t.text == ")"
            if depth == 0 and t.text == ",":
                items.append([])
            else:
                items[-1].append(t)
        out: list[SqlType | None] = []
        for item in items:
            if len(item) >= 3 and item[-2].upper == "AS":
                item = item[:-2]
            if item and item[-1].text == "*":
                table = refs.get(item[0].name.lower()) if len(item) == 3 else next(iter(refs.values()), None)
                out.extend(t for _, t in (table or []))
                continue
            out.append(self._expr_type(item, refs))
        return out

    def _expr_type(self, item: list[Tok], refs: dict[str, list[tuple[str, SqlType]]]) -> SqlType | None:
        if len(item) > 2 and item[0].upper == "SYS" and item[1].text == ".":
            item = item[2:]
        if len(item) == 3 and item[1].text == "." and item[0].is_ident and item[2].is_ident:
            return lookup(refs.get(item[0].name.lower()), item[2].name)
        if len(item) == 1 and item[0].is_ident:
            for cols in refs.values():
                found = lookup(cols, item[0].name)
                if found:
                    return found
            return None
        words = [t for t in item if t.kind == "word"]
        if words and len(item) > 1 and item[item.index(words[0]) + 1].text == "(" if words else False:
            fname = words[0].text.lower()
            if fname == "sys" and len(words) > 1:
                fname = words[1].text.lower()
            if fname in ("max", "min", "isnull", "coalesce"):
                inner = item[item.index(words[0]) + 2:]
                depth, arg = 0, []
                for t in inner:
                    if t.text in ("(",):
                        depth += 1
                    if t.text == ")" and depth == 0 or t.text == "," and depth == 0:
                        break
                    if t.text == ")":
                        depth -= 1
                    arg.append(t)
                return self._expr_type(arg, refs)
            return FUNCTION_TYPES.get(fname)
        return None

    # --- isolation and row versions ---------------------------------------------------

    def _check_snapshot_allowed(self, session: Session) -> None:
        if session.isolation == "SNAPSHOT" and not self.allow_snapshot:
            raise SqlError(3952, f"Snapshot isolation transaction failed accessing database '{self.database}' because snapshot isolation is not "
                                 "allowed in this database. Use ALTER DATABASE to allow snapshot isolation.")

    def _table_refs(self, stmt: list[Tok]) -> list[tuple[int, int, Table, bool]]:
        """User tables named after FROM or JOIN: (first token, end token, table, has an alias)."""
        out = []
        for i, t in enumerate(stmt):
            if t.upper not in ("FROM", "JOIN"):
                continue
            j = next_significant(stmt, i + 1)
            if j >= len(stmt) or not stmt[j].is_ident:
                continue
            names, end = [stmt[j].name], j + 1
            while True:
                k = next_significant(stmt, end)
                if k < len(stmt) and stmt[k].text == "." and next_significant(stmt, k + 1) < len(stmt) and stmt[next_significant(stmt, k + 1)].is_ident:
                    m = next_significant(stmt, k + 1)
                    names.append(stmt[m].name)
                    end = m + 1
                    continue
                break
            schema, name = (names[-2], names[-1]) if len(names) >= 2 else ("dbo", names[-1])
            tab = self.tables.get((schema.lower(), name.lower()))
            if tab is None:
                continue
            k = next_significant(stmt, end)
            alias = k < len(stmt) and (stmt[k].upper == "AS" or (stmt[k].is_ident and stmt[k].upper not in KEYWORDS))
            out.append((j, end, tab, alias))
        return out

    def _versioned(self, session: Session, stmt: list[Tok], views: list[str]) -> list[Tok]:
        """The statement reading what its isolation level lets it see: each user table it reads is
        waited for (locking READ COMMITTED) or replaced by a view of its rows as of the read point."""
        refs = self._table_refs(stmt)
        if not refs or session.isolation == "READ UNCOMMITTED":
            return stmt
        if session.isolation == "SNAPSHOT":
            if session.snapshot_seq is None:
                session.snapshot_seq = self.commit_seq
            after: int | None = session.snapshot_seq
        elif session.isolation == "READ COMMITTED" and self.read_committed_snapshot:
            after = None  # statement-level: every commit so far is visible, no other session's pending change is
        else:
            self._wait_for_writers(session, [tab for _, _, tab, _ in refs])
            return stmt
        out = list(stmt)
        for start, end, tab, alias in reversed(refs):
            image = self._as_of(session, tab, after)
            if not image:
                continue
            view = self._view(tab, image)
            views.append(view)
            repl = [Tok("bracket", f"[{view}]")]
            if not alias:
                repl += [Tok("ws", " "), Tok("word", "AS"), Tok("ws", " "), Tok("bracket", f"[{tab.name}]")]
            out[start:end] = repl
        return out

    def _wait_for_writers(self, session: Session, tables: list[Table]) -> None:
        deadline = time.monotonic() + LOCK_WAIT
        while any(t is tab for other in self.sessions.values() if other is not session for _, t, _, _ in other.writes for tab in tables):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SqlError(1222, "Lock request time out period exceeded.")
            self.changed.wait(left)

    def _as_of(self, session: Session, tab: Table, committed_after: int | None) -> dict[int, tuple[Any, ...] | None]:
        """rowid -> the row as the reader must see it (None: absent), for each row changed by a change it must
        not see: committed after its snapshot, or not committed by another session. The oldest such change's
        before-image is the row as it was."""
        hidden = [(op, rowid, before) for seq, op, t, rowid, before in self.versions if t is tab and committed_after is not None and seq > committed_after]
        for other in self.sessions.values():
            if other is not session:
                hidden += [(op, rowid, before) for op, t, rowid, before in other.writes if t is tab]
        image: dict[int, tuple[Any, ...] | None] = {}
        for _, rowid, before in sorted(hidden, key=lambda h: h[0]):
            image.setdefault(rowid, before)
        return image

    def _view(self, tab: Table, image: dict[int, tuple[Any, ...] | None]) -> str:
        view = f"dstream_asof_{next(self.view_ids)}"
        rows_table = quote(view + "_rows")
        cols = ", ".join(quote(c) for c, _ in tab.columns)
        self.db.execute(f"CREATE TEMP TABLE {rows_table} (dstream_rowid INTEGER PRIMARY KEY, dstream_present INT, {cols})")
        blank = (None,) * len(tab.columns)
        self.db.executemany(f"INSERT INTO temp.{rows_table} VALUES ({', '.join('?' * (len(tab.columns) + 2))})",
                            [(rowid, int(before is not None), *(before if before is not None else blank)) for rowid, before in image.items()])
        self.db.execute(f"CREATE TEMP VIEW {quote(view)} AS SELECT {cols} FROM {tab.sqlite_name} WHERE rowid NOT IN "
                        f"(SELECT dstream_rowid FROM temp.{rows_table}) UNION ALL SELECT {cols} FROM temp.{rows_table} WHERE dstream_present = 1")
        return view

    def _prune_versions(self) -> None:
        """Versions every open snapshot can already see are not needed any more."""
        open_at = [s.snapshot_seq for s in self.sessions.values() if s.snapshot_seq is not None]
        low = min(open_at) if open_at else self.commit_seq
        self.versions = [v for v in self.versions if v[0] > low]

    def _refresh_partitions(self) -> None:
        """sys.partitions.rows: SQL Server keeps it as metadata; the peer counts when it is read."""
        self.db.execute("DELETE FROM sys.partitions")
        rows = []
        for tab in self.tables.values():
            n = self.db.execute(f"SELECT COUNT(*) FROM {tab.sqlite_name}").fetchone()[0]
            for (index_id,) in self.db.execute("SELECT index_id FROM sys.indexes WHERE object_id = ?", (tab.object_id,)).fetchall():
                rows.append((72057594038000000 + tab.object_id * 100 + index_id, tab.object_id, index_id, 1, n))
        self.db.executemany("INSERT INTO sys.partitions VALUES (?, ?, ?, ?, ?)", rows)

    def _set_isolation(self, session: Session, sig: list[Tok]) -> Result:
        words = " ".join(t.upper or t.text for t in sig[2:])
        level = words[len("ISOLATION LEVEL "):] if words.startswith("ISOLATION LEVEL ") else ""
        if level not in ISOLATION_LEVELS:
            raise SqlError(102, f"Incorrect syntax near '{sig[-1].text}'.", 15)
        session.isolation = level
        return Result()

    def _alter_database(self, sig: list[Tok]) -> Result:
        """ALTER DATABASE name|CURRENT SET ALLOW_SNAPSHOT_ISOLATION | READ_COMMITTED_SNAPSHOT ON|OFF [WITH ...]."""
        if len(sig) < 6 or sig[3].upper != "SET" or sig[5].upper not in ("ON", "OFF"):
            raise SqlError(102, f"Incorrect syntax near '{sig[min(len(sig) - 1, 3)].text}'.", 15)
        if sig[2].upper != "CURRENT" and sig[2].name.lower() != self.database.lower():
            raise SqlError(5011, f"User does not have permission to alter database '{sig[2].name}', the database does not exist, or the database is not in a state that allows access checks.", 14)
        on = sig[5].upper == "ON"
        if sig[4].upper == "ALLOW_SNAPSHOT_ISOLATION":
            self.allow_snapshot = on
            self.db.execute("UPDATE sys.databases SET snapshot_isolation_state = ?, snapshot_isolation_state_desc = ?", (int(on), "ON" if on else "OFF"))
        elif sig[4].upper == "READ_COMMITTED_SNAPSHOT":
            self.read_committed_snapshot = on
            self.db.execute("UPDATE sys.databases SET is_read_committed_snapshot_on = ?", (int(on),))
        else:
            raise SqlError(5058, f"Option '{sig[4].text}' cannot be set in database '{self.database}'.")
        return Result()

    # --- DML ---------------------------------------------------------------------------

    def _dml(self, session: Session, head: str, stmt: list[Tok], params: dict[str, Any], tr: Translator) -> Result:
        sig = significant(stmt)
        i = 1
        if head in ("INSERT", "DELETE") and i < len(sig) and sig[i].upper in ("INTO", "FROM"):
            i += 1
        name_toks = [sig[i]]
        while i + 2 < len(sig) and sig[i + 1].text == ".":
            name_toks += [sig[i + 1], sig[i + 2]]
            i += 2
        tab = self.table(name_toks)
        self._check_snapshot_allowed(session)
        auto = not session.in_tran
        if auto:
            self.begin(session)
        session.command_id += 1
        self.db.execute("SAVEPOINT stmt")
        try:
            count = self._dml_rows(session, head, tab, stmt, sig, params, tr)
            self.db.execute("RELEASE stmt")
        except Exception:
            self.db.execute("ROLLBACK TO stmt")
            self.db.execute("RELEASE stmt")
            if auto:
                self.rollback(session)
            raise
        if auto:
            self.commit(session)
        return Result(count=count)

    def _dml_rows(self, session: Session, head: str, tab: Table, stmt: list[Tok], sig: list[Tok], params: dict[str, Any], tr: Translator) -> int:
        names = [c for c, _ in tab.columns]
        base = tr.next_param
        sql = tr.render(stmt)
        if head == "INSERT":
            rows = self._sqlite(sql + " RETURNING rowid, *", params).fetchall()
            for r in rows:
                after = self._normalize(tab, r[0], list(r[1:]))
                self._wrote(session, "insert", tab, r[0], None)
                self._capture(session, tab, None, after, set(names))
            return len(rows)
        where = self._where(stmt, tr, base)
        before = {r[0]: list(r[1:]) for r in self._sqlite(f"SELECT rowid, * FROM {tab.sqlite_name}" + (f" WHERE {where}" if where else ""),
                                                          params).fetchall()}
        if head == "DELETE":
            rows = self._sqlite(sql + " RETURNING rowid", params).fetchall()
            for (rowid,) in rows:
                self._wrote(session, "delete", tab, rowid, tuple(before[rowid]))
                self._capture(session, tab, before[rowid], None, set(names))
            return len(rows)
        assigned = self._assigned(sig)
        rows = self._sqlite(sql + " RETURNING rowid, *", params).fetchall()
        for r in rows:
            after = self._normalize(tab, r[0], list(r[1:]))
            self._wrote(session, "update", tab, r[0], tuple(before[r[0]]))
            self._capture(session, tab, before[r[0]], after, assigned)
        return len(rows)

    def _wrote(self, session: Session, kind: str, tab: Table, rowid: int, before: tuple[Any, ...] | None) -> None:
        session.undo.append((kind, tab, rowid, before))
        session.writes.append((next(self.ops), tab, rowid, before))

    @staticmethod
    def _where(stmt: list[Tok], tr: Translator, base: int) -> str:
        """The WHERE clause alone, its parameters numbered as in the whole statement."""
        depth, before = 0, base
        for i, t in enumerate(stmt):
            depth += t.text == "("
            depth -= t.text == ")"
            if depth == 0 and t.upper == "WHERE":
                return Translator(tr.param_names, tr.variables, before).render(stmt[i + 1:])
            before += t.kind == "param"
        return ""

    @staticmethod
    def _assigned(sig: list[Tok]) -> set[str]:
        out, depth, expect = set(), 0, False
        for t in sig:
            if t.upper == "SET" and depth == 0:
                expect = True
                continue
            if depth == 0 and t.upper in ("WHERE", "FROM"):
                break
            depth += t.text == "("
            depth -= t.text == ")"
            if expect and t.is_ident:
                out.add(t.name)
                expect = False
            elif depth == 0 and t.text == ",":
                expect = True
        return out

    def _normalize(self, tab: Table, rowid: int, values: list[Any]) -> list[Any]:
        fixed = [coerce(t, v, c) for (c, t), v in zip(tab.columns, values, strict=True)]
        if fixed != values:
            sets = ", ".join(f"{quote(c)} = ?" for c, _ in tab.columns)
            self._sqlite(f"UPDATE {tab.sqlite_name} SET {sets} WHERE rowid = ?", [*fixed, rowid])
        for (c, _t), v in zip(tab.columns, fixed, strict=True):
            if v is None and c in tab.pk:
                raise SqlError(515, f"Cannot insert the value NULL into column '{c}', table '{self.database}.{tab.schema}.{tab.name}'; column does not allow nulls.")
        return fixed

    def _capture(self, session: Session, tab: Table, before: list[Any] | None, after: list[Any] | None, assigned: set[str]) -> None:
        if not tab.instances:
            return
        names = [c.lower() for c, _ in tab.columns]
        seqval = self.new_lsn()
        assigned_l = {a.lower() for a in assigned}
        key_change = before is not None and after is not None and any(
            before[names.index(k.lower())] != after[names.index(k.lower())] for k in tab.pk)
        for inst in tab.instances:
            cols = inst.columns

            def pick(values: list[Any] | None, op: int, cols: list[tuple[str, SqlType]] = cols) -> list[Any]:
                out = []
                for c, t in cols:
                    v = values[names.index(c.lower())] if values is not None and c.lower() in names else None
                    if t.is_lob and (op == 3 or (op == 4 and c.lower() not in assigned_l)):
                        v = None  # unchanged large values are not logged
                    out.append(v)
                return out

            full = mask(len(cols), range(1, len(cols) + 1))
            if before is None:
                session.pending.append((inst, 2, seqval, session.command_id, full, pick(after, 2)))
            elif after is None:
                session.pending.append((inst, 1, seqval, session.command_id, full, pick(before, 1)))
            elif key_change:
                session.pending.append((inst, 1, seqval, session.command_id, full, pick(before, 1)))
                session.pending.append((inst, 2, seqval, session.command_id, full, pick(after, 2)))
            else:
                m = mask(len(cols), [k + 1 for k, (c, _) in enumerate(cols) if c.lower() in assigned_l])
                session.pending.append((inst, 3, seqval, session.command_id, m, pick(before, 3)))
                session.pending.append((inst, 4, seqval, session.command_id, m, pick(after, 4)))

    # --- transactions and capture ---------------------------------------------------------

    def begin(self, session: Session) -> None:
        if not session.in_tran:
            session.in_tran = True
            session.begin_lsn = self.new_lsn()
            session.begin_time = now_text()
            session.command_id = 0

    def commit(self, session: Session) -> None:
        if not session.in_tran:
            return
        if session.pending:
            commit_lsn = self.new_lsn()
            txn = (commit_lsn, session.begin_lsn, session.begin_time, now_text(), session.pending)
            if self.stall:
                self.stalled.append(txn)
            else:
                self._write_capture(*txn)
        if session.writes:
            self.commit_seq += 1
            if any(s.snapshot_seq is not None for s in self.sessions.values() if s is not session):
                self.versions += [(self.commit_seq, op, tab, rowid, before) for op, tab, rowid, before in session.writes]
        self._end_transaction(session)

    def _end_transaction(self, session: Session) -> None:
        session.in_tran = False
        session.pending = []
        session.undo = []
        session.writes = []
        if session.snapshot_seq is not None:
            session.snapshot_seq = None
            self._prune_versions()
        self.changed.notify_all()

    def rollback(self, session: Session) -> None:
        for kind, tab, rowid, values in reversed(session.undo):
            if kind == "insert":
                self.db.execute(f"DELETE FROM {tab.sqlite_name} WHERE rowid = ?", (rowid,))
            elif kind == "delete" and values is not None:
                cols = ", ".join(["rowid"] + [quote(c) for c, _ in tab.columns])
                self.db.execute(f"INSERT INTO {tab.sqlite_name} ({cols}) VALUES ({', '.join('?' * (len(values) + 1))})", (rowid, *values))
            elif values is not None:
                sets = ", ".join(f"{quote(c)} = ?" for c, _ in tab.columns)
                self.db.execute(f"UPDATE {tab.sqlite_name} SET {sets} WHERE rowid = ?", (*values, rowid))
        self._end_transaction(session)

    def _write_capture(self, commit_lsn: bytes, begin_lsn: bytes, begin_time: str, end_time: str, pending: list[Any], mapping: bool = True) -> None:
        rows_by_ct: dict[str, list[tuple[Any, ...]]] = {}
        for inst, op, seqval, cmd, m, values in pending:
            if self.instances.get(inst.name.lower()) is not inst:
                continue  # the instance was dropped before capture got here
            rows_by_ct.setdefault(inst.name, []).append((commit_lsn, None, seqval, op, m, *values, cmd))
        for name, rows in rows_by_ct.items():
            self.db.executemany(f"INSERT INTO cdc.{quote(name + '_CT')} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        if mapping:
            self._map(commit_lsn, begin_time, end_time, next(self.tran_ids).to_bytes(10, "big"), begin_lsn)
        else:
            self.unmapped.append((commit_lsn, begin_lsn, begin_time, end_time))

    def _map(self, lsn: bytes, begin_time: str, end_time: str, tran_id: bytes, begin_lsn: bytes) -> None:
        self.db.execute("INSERT INTO cdc.lsn_time_mapping VALUES (?, ?, ?, ?, ?)", (lsn, begin_time, end_time, tran_id, begin_lsn))
        self.mapping.append((lsn, end_time))
        self.max_lsn = lsn

    # --- DDL -------------------------------------------------------------------------

    def _create_table(self, sig: list[Tok]) -> Result:
        i = 2
        names = [sig[i].name]
        while sig[i + 1].text == ".":
            names.append(sig[i + 2].name)
            i += 2
        schema, name = (names[-2], names[-1]) if len(names) >= 2 else ("dbo", names[-1])
        if schema.lower() not in self.schemas or schema.lower() in ("sys", "cdc"):
            raise SqlError(2760, f'The specified schema name "{schema}" either does not exist or you do not have permission to use it.')
        if (schema.lower(), name.lower()) in self.tables:
            raise SqlError(2714, f"There is already an object named '{name}' in the database.")
        schema = self.schemas[schema.lower()][1]
        elements = split_top(sig[i + 2:-1])
        columns: list[tuple[str, SqlType]] = []
        notnull: set[str] = set()
        pk: list[str] = []
        for el in elements:
            if el[0].upper in ("CONSTRAINT", "PRIMARY"):
                k = next(j for j, t in enumerate(el) if t.text == "(")
                pk = [t.name for t in el[k:] if t.is_ident and t.upper not in ("ASC", "DESC")]
                continue
            cname = el[0].name
            tlen = 2 if len(el) > 1 else 1
            if len(el) > 2 and el[2].text == "(":
                tlen = next(j for j, t in enumerate(el) if t.text == ")") + 1
            try:
                ctype = SqlType.parse(" ".join(t.text for t in el[1:tlen]).replace(" (", "(").replace("( ", "(").replace(" )", ")").replace(" ,", ","))
            except ValueError as exc:
                raise SqlError(2715, f"Column, parameter, or variable #{len(columns) + 1}: Cannot find data type {el[1].text} ({exc}).") from None
            words = [t.upper for t in el[tlen:]]
            if "PRIMARY" in words:
                pk = [cname]
            if "NOT" in words or "PRIMARY" in words:
                notnull.add(cname)
            columns.append((cname, ctype))
        notnull.update(pk)
        body = [f"{quote(c)} {t.affinity}{' NOT NULL' if c in notnull else ''}" for c, t in columns]
        if pk:
            body.append(f"PRIMARY KEY ({', '.join(quote(c) for c in pk)})")
        self._sqlite(f"CREATE TABLE {quote(schema)}.{quote(name)} ({', '.join(body)})", [])
        tab = Table(schema, name, next(self.ids), columns, pk)
        self.tables[(schema.lower(), name.lower())] = tab
        self.db.execute("INSERT INTO sys.tables VALUES (?, ?, ?, 'U', 0, ?)", (tab.object_id, name, self.schemas[schema.lower()][0], now_text()))
        for n, (c, t) in enumerate(columns, 1):
            self._sys_column(tab, n, c, t, c not in notnull)
        if pk:  # a primary key is clustered unless said otherwise: index 1
            self._sys_index(tab, f"PK_{name}", 1, unique=True, primary=True, keys=[(c, False) for c in pk])
        else:
            self.db.execute("INSERT INTO sys.indexes VALUES (?, NULL, 0, 0, 'HEAP', 0, 0, 0, 0, 0)", (tab.object_id,))
        return Result()

    def _sys_index(self, tab: Table, name: str, index_id: int, unique: bool, primary: bool, keys: list[tuple[str, bool]],
                   included: tuple[str, ...] = (), filtered: bool = False) -> None:
        kind, desc = (1, "CLUSTERED") if index_id == 1 else (2, "NONCLUSTERED")
        self.db.execute("INSERT INTO sys.indexes VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)",
                        (tab.object_id, name, index_id, kind, desc, int(unique), int(primary), int(filtered)))
        ids = {c.lower(): n for n, (c, _) in enumerate(tab.columns, 1)}
        for n, (c, descending) in enumerate(keys, 1):
            self.db.execute("INSERT INTO sys.index_columns VALUES (?, ?, ?, ?, ?, ?, 0)", (tab.object_id, index_id, n, ids[c.lower()], n, int(descending)))
        for n, c in enumerate(included, len(keys) + 1):
            self.db.execute("INSERT INTO sys.index_columns VALUES (?, ?, ?, ?, 0, 0, 1)", (tab.object_id, index_id, n, ids[c.lower()]))

    def _create_index(self, sig: list[Tok]) -> Result:
        """CREATE [UNIQUE] [CLUSTERED | NONCLUSTERED] INDEX name ON table (col [ASC|DESC], ...) [INCLUDE (...)] [WHERE ...]."""
        i, words = 1, set()
        while sig[i].upper in ("UNIQUE", "CLUSTERED", "NONCLUSTERED"):
            words.add(sig[i].upper)
            i += 1
        name = sig[i + 1].name
        on = next(j for j, t in enumerate(sig) if t.upper == "ON")
        open_ = next(j for j, t in enumerate(sig) if j > on and t.text == "(")
        close = next(j for j, t in enumerate(sig) if j > open_ and t.text == ")")
        tab = self.table(sig[on + 1:open_])
        keys = [(el[0].name, len(el) > 1 and el[1].upper == "DESC") for el in split_top(sig[open_ + 1:close])]
        rest = sig[close + 1:]
        included: tuple[str, ...] = ()
        if rest and rest[0].upper == "INCLUDE":
            end = next(j for j, t in enumerate(rest) if t.text == ")")
            included = tuple(el[0].name for el in split_top(rest[2:end]))
            rest = rest[end + 1:]
        for c in [k for k, _ in keys] + list(included):
            if tab.col_type(c) is None:
                raise SqlError(1911, f"Column name '{c}' does not exist in the target table or view.")
        existing = {r[0]: r[1] for r in self.db.execute("SELECT index_id, name FROM sys.indexes WHERE object_id = ?", (tab.object_id,)).fetchall()}
        if any(n is not None and n.lower() == name.lower() for n in existing.values()):
            raise SqlError(1913, f"The operation failed because an index or statistics with name '{name}' already exists on table '{tab.schema}.{tab.name}'.")
        if "CLUSTERED" in words:
            if 1 in existing:
                raise SqlError(1902, f"Cannot create more than one clustered index on table '{tab.schema}.{tab.name}'. Drop the existing clustered index "
                                     f"'{existing[1]}' before creating another.")
            index_id = 1
        else:
            index_id = max([2, *(k + 1 for k in existing if k >= 2)])
        unique = "UNIQUE" in words
        filtered = bool(rest and rest[0].upper == "WHERE")
        if unique and not filtered:
            try:
                self.db.execute(f"CREATE UNIQUE INDEX {quote(tab.schema)}.{quote('ix_' + str(tab.object_id) + '_' + name)} ON {quote(tab.name)} "
                                f"({', '.join(quote(k) for k, _ in keys)})")
            except sqlite3.IntegrityError:
                raise SqlError(1505, f"The CREATE UNIQUE INDEX statement terminated because a duplicate key was found for the object name "
                                     f"'{tab.schema}.{tab.name}' and the index name '{name}'.") from None
        if index_id == 1:
            self.db.execute("DELETE FROM sys.indexes WHERE object_id = ? AND index_id = 0", (tab.object_id,))
        self._sys_index(tab, name, index_id, unique, False, keys, included, filtered)
        return Result()

    def _sys_column(self, tab: Table, n: int, c: str, t: SqlType, nullable: bool) -> None:
        tid = SYSTEM_TYPE_IDS[t.name]
        self.db.execute("INSERT INTO sys.columns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (tab.object_id, c, n, tid, tid, t.max_length, t.precision if t.name in ("decimal", "numeric", "money") else 0, t.scale, int(nullable)))

    def _alter_table(self, sig: list[Tok]) -> Result:
        k = next(j for j, t in enumerate(sig) if t.upper in ("ADD", "DROP"))
        tab = self.table(sig[2:k])
        if sig[k].upper == "DROP":
            j = k + 2 if sig[k + 1].upper == "COLUMN" else k + 1
            col = sig[j].name
            self._sqlite(f"ALTER TABLE {tab.sqlite_name} DROP COLUMN {quote(col)}", [])
            tab.columns = [(c, t) for c, t in tab.columns if c.lower() != col.lower()]
            self.db.execute("DELETE FROM sys.columns WHERE object_id = ? AND name = ?", (tab.object_id, col))
            return Result()
        el = sig[k + 1:]
        if el and el[0].upper == "COLUMN":
            el = el[1:]
        end = next((j for j, t in enumerate(el) if t.text == ")"), 1) + 1
        ctype = SqlType.parse("".join(t.text for t in el[1:end]))
        self._sqlite(f"ALTER TABLE {tab.sqlite_name} ADD COLUMN {quote(el[0].name)} {ctype.affinity}", [])
        tab.columns.append((el[0].name, ctype))
        self._sys_column(tab, len(tab.columns), el[0].name, ctype, True)
        return Result()

    # --- procedures -------------------------------------------------------------------

    def procedure(self, session: Session, proc: str, args: list[tuple[str | None, Any]]) -> Result:
        name = proc.lower().split(".")[-1]
        named = {k: v for k, v in args if k}
        positional = [v for k, v in args if not k]
        if name == "sp_cdc_enable_db":
            self.cdc_enabled = True
            self.db.execute("UPDATE sys.databases SET is_cdc_enabled = 1")
            return Result()
        if name == "sp_cdc_disable_db":
            for inst in list(self.instances.values()):
                self._drop_instance(inst)
            self.cdc_enabled = False
            self.db.execute("UPDATE sys.databases SET is_cdc_enabled = 0")
            return Result()
        if name == "sp_cdc_enable_table":
            return self._enable_table(named)
        if name == "sp_cdc_disable_table":
            if not self.cdc_enabled:
                raise SqlError(22901, f"The database '{self.database}' is not enabled for Change Data Capture.")
            tab = self.tables.get((str(named.get("@source_schema")).lower(), str(named.get("@source_name")).lower()))
            which = str(named.get("@capture_instance", "all")).lower()
            if tab is None:
                raise SqlError(22931, f"Source table '{named.get('@source_schema')}.{named.get('@source_name')}' does not exist in the current database.")
            chosen = [i for i in tab.instances if which in ("all", i.name.lower())]
            if not chosen:
                raise SqlError(22956, f"Could not find the capture instance '{named.get('@capture_instance')}' for the source table.")
            for inst in chosen:
                self._drop_instance(inst)
            return Result()
        if name == "sp_cdc_help_jobs":
            cols = [("job_id", SqlType("uniqueidentifier")), ("job_type", SqlType("nvarchar", 20)), ("job_name", SqlType("nvarchar", 128)),
                    ("maxtrans", SqlType("int")), ("maxscans", SqlType("int")), ("continuous", SqlType("bit")), ("pollinginterval", SqlType("bigint")),
                    ("retention", SqlType("bigint")), ("threshold", SqlType("bigint"))]
            rows = [(str(uuid.UUID(int=1)).upper(), "capture", f"cdc.{self.database}_capture", 500, 10, 1, 5, None, None),
                    (str(uuid.UUID(int=2)).upper(), "cleanup", f"cdc.{self.database}_cleanup", None, None, None, None, 4320, 5000)]
            return Result(cols, rows, count=2)
        if proc.lower().startswith("dstream_test."):
            return self.switch(name, named, positional)
        raise SqlError(2812, f"Could not find stored procedure '{proc}'.")

    def _enable_table(self, named: dict[str, Any]) -> Result:
        if not self.cdc_enabled:
            raise SqlError(22901, f"The database '{self.database}' is not enabled for Change Data Capture. Ensure that the correct database context is set, and then retry the operation.")
        if "@role_name" not in named:
            raise SqlError(201, "Procedure or function 'sp_cdc_enable_table' expects parameter '@role_name', which was not supplied.")
        schema, source = str(named.get("@source_schema")), str(named.get("@source_name"))
        tab = self.tables.get((schema.lower(), source.lower()))
        if tab is None:
            raise SqlError(22931, f"Source table '{schema}.{source}' does not exist in the current database. Ensure that the correct database context is set. Specify a valid schema and table name for the database.")
        ci = str(named.get("@capture_instance") or f"{tab.schema}_{tab.name}")
        if ci.lower() in self.instances:
            raise SqlError(22926, f"Could not create a capture instance because the capture instance name '{ci}' already exists in the current database. Specify an explicit unique name for the parameter @capture_instance.")
        if len(tab.instances) >= 2:
            raise SqlError(22962, f"Two capture instances already exist for source table '{tab.schema}.{tab.name}'. A table can have a maximum of two capture instances.")
        wanted = named.get("@captured_column_list")
        cols = tab.columns
        if wanted:
            want = [w.strip().strip("[]").lower() for w in str(wanted).split(",")]
            cols = [(c, t) for c, t in tab.columns if c.lower() in want]
        inst = Instance(ci, next(self.ids), tab, list(cols), self.new_lsn(), self._create_date())
        body = ", ".join(f"{quote(c)} {t.affinity}" for c, t in CT_META_HEAD + inst.columns + CT_META_TAIL)
        self.db.execute(f"CREATE TABLE cdc.{quote(ci + '_CT')} ({body})")
        self.db.execute(f"CREATE INDEX cdc.{quote(ci + '_CT_idx')} ON {quote(ci + '_CT')} (\"__$start_lsn\", \"__$command_id\", \"__$seqval\", \"__$operation\")")
        self.db.execute("INSERT INTO cdc.change_tables VALUES (?, 1, ?, ?, ?, NULL, ?, 0, ?, ?, 'PRIMARY', ?, 0)",
                        (inst.object_id, tab.object_id, ci, inst.start_lsn, int(bool(named.get("@supports_net_changes"))), named.get("@role_name"),
                         f"PK_{tab.name}" if tab.pk else None, inst.create_date))
        for n, (c, t) in enumerate(inst.columns, 1):
            self.db.execute("INSERT INTO cdc.captured_columns VALUES (?, ?, ?, ?, ?, 0)", (inst.object_id, c, n, t.name, n))
        tab.instances.append(inst)
        self.instances[ci.lower()] = inst
        self.db.execute("UPDATE sys.tables SET is_tracked_by_cdc = 1 WHERE object_id = ?", (tab.object_id,))
        return Result()

    def _drop_instance(self, inst: Instance) -> None:
        self.db.execute(f"DROP TABLE cdc.{quote(inst.name + '_CT')}")
        self.db.execute("DELETE FROM cdc.change_tables WHERE object_id = ?", (inst.object_id,))
        self.db.execute("DELETE FROM cdc.captured_columns WHERE object_id = ?", (inst.object_id,))
        inst.source.instances.remove(inst)
        del self.instances[inst.name.lower()]
        if not inst.source.instances:
            self.db.execute("UPDATE sys.tables SET is_tracked_by_cdc = 0 WHERE object_id = ?", (inst.source.object_id,))

    # --- test switches ---------------------------------------------------------------

    def switch(self, name: str, named: dict[str, Any], positional: list[Any]) -> Result:
        arg = positional[0] if positional else None
        if name == "tick":  # the capture job's dummy row while the database is idle
            lsn = self.new_lsn()
            self._map(lsn, now_text(), now_text(), b"\x00", ZERO_LSN)
            return Result()
        if name == "cleanup":  # raise the low-water mark, then delete older rows
            low = named.get("@low_water", arg)
            low = self.max_lsn if low is None else low
            if low is None:
                return Result()
            later = [lsn for lsn, _ in self.mapping if lsn >= low]
            new_min = later[0] if later else low
            only = str(named.get("@capture_instance", "")).lower()
            for inst in self.instances.values():
                if only and inst.name.lower() != only:
                    continue
                inst.start_lsn = new_min
                self.db.execute("UPDATE cdc.change_tables SET start_lsn = ? WHERE object_id = ?", (new_min, inst.object_id))
                self.db.execute(f"DELETE FROM cdc.{quote(inst.name + '_CT')} WHERE \"__$start_lsn\" < ?", (new_min,))
            if not only:
                self.db.execute("DELETE FROM cdc.lsn_time_mapping WHERE start_lsn < ?", (new_min,))
                self.mapping = [(lsn, t) for lsn, t in self.mapping if lsn >= new_min]
            return Result()
        if name == "stall_capture":  # 1: committed transactions wait; 0: capture catches up
            self.stall = bool(named.get("@on", arg))
            if not self.stall:
                for txn in self.stalled:
                    self._write_capture(*txn)
                self.stalled = []
                for lsn, begin_lsn, begin_time, end_time in self.unmapped:
                    self._map(lsn, begin_time, end_time, next(self.tran_ids).to_bytes(10, "big"), begin_lsn)
                self.unmapped = []
            return Result()
        if name == "capture_rows_only":  # stalled transactions reach the change tables, but not lsn_time_mapping
            for txn in self.stalled:
                self._write_capture(*txn, mapping=False)
            self.stalled = []
            return Result()
        if name == "max_lsn_info":
            return Result([("max_lsn", SqlType("binary", 10))], [(self.max_lsn,)], count=1)
        raise SqlError(2812, f"Could not find stored procedure 'dstream_test.{name}'.")


KEYWORDS = {"WHERE", "ON", "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "CROSS", "ORDER", "GROUP", "UNION", "HAVING", "WITH", "AS", "SET"}


def lookup(cols: list[tuple[str, SqlType]] | None, name: str) -> SqlType | None:
    for c, t in cols or []:
        if c.lower() == name.lower():
            return t
    return None


def mask(n: int, ordinals: Any) -> bytes:
    size = max(1, (n + 7) // 8)
    value = 0
    for k in ordinals:
        value |= 1 << (k - 1)
    return value.to_bytes(size, "big")


def next_significant(toks: list[Tok], i: int) -> int:
    while i < len(toks) and toks[i].kind == "ws":
        i += 1
    return i


def split_top(toks: list[Tok]) -> list[list[Tok]]:
    out: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        depth += t.text == "("
        depth -= t.text == ")"
        if depth == 0 and t.text == ",":
            out.append([])
        else:
            out[-1].append(t)
    return [e for e in out if e]


def fix(t: SqlType, v: Any) -> Any:
    """A stored value in the form the encoder of its declared type expects."""
    if v is None:
        return None
    if t.name == "binary" and isinstance(v, bytes) and t.length > 0:
        return v.ljust(t.length, b"\x00")
    if t.name in ("int", "bigint", "smallint", "tinyint", "bit") and not isinstance(v, int):
        return int(float(v))
    return v
