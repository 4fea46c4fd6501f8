"""The reader's fixed set of SQL statements and the catalog they discover.

Identifiers that enter SQL text are validated against the catalog first and
bracket-quoted; every value is a bound parameter (LSNs as 10-byte binary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from providers import helper as h
from providers.mssql_cdc.config import Settings, is_pattern, matches, stream_name

SQL_DB = "SELECT name, is_cdc_enabled FROM sys.databases WHERE name = DB_NAME()"
SQL_TABLES = ("SELECT s.name AS schema_name, t.name AS table_name, t.object_id, t.is_tracked_by_cdc "
              "FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id")
SQL_INSTANCES = ("SELECT ct.capture_instance, ct.object_id, ct.source_object_id, ct.start_lsn, ct.create_date, "
                 "sys.fn_cdc_get_min_lsn(ct.capture_instance) AS min_lsn FROM cdc.change_tables AS ct ORDER BY ct.source_object_id, ct.create_date")
SQL_COLUMNS = ("SELECT cc.object_id, cc.column_name, cc.column_ordinal, cc.column_type, c.scale, c.max_length "
               "FROM cdc.captured_columns AS cc JOIN cdc.change_tables AS ct ON ct.object_id = cc.object_id "
               "LEFT JOIN sys.columns AS c ON c.object_id = ct.source_object_id AND c.name = cc.column_name "
               "ORDER BY cc.object_id, cc.column_ordinal")
SQL_MAX_LSN = "SELECT sys.fn_cdc_get_max_lsn() AS max_lsn"
SQL_CAP_LSN = ("SELECT MAX(m.start_lsn) AS cap_lsn FROM (SELECT TOP (?) start_lsn FROM cdc.lsn_time_mapping "
               "WHERE start_lsn > ? AND tran_id <> 0x00 ORDER BY start_lsn) AS m")
SQL_TIME_LSN = "SELECT MIN(start_lsn) AS first_lsn FROM cdc.lsn_time_mapping WHERE tran_end_time >= ?"
SQL_LAG = "SELECT SYSDATETIME() AS now, MAX(tran_end_time) AS newest FROM cdc.lsn_time_mapping"
META = "c.__$start_lsn, c.__$seqval, c.__$operation, c.__$command_id, c.__$update_mask"
KEYSET = ("c.__$start_lsn >= ? AND (c.__$start_lsn > ? OR (c.__$start_lsn = ? AND (c.__$command_id > ? OR (c.__$command_id = ? AND "
          "(c.__$seqval > ? OR (c.__$seqval = ? AND c.__$operation > ?))))))")
ORDER = "ORDER BY c.__$start_lsn, c.__$command_id, c.__$seqval, c.__$operation"


def quote(name: str) -> str:
    """QUOTENAME: [name] with ] doubled."""
    return "[" + name.replace("]", "]]") + "]"


def literal(text: str) -> str:
    return "N'" + text.replace("'", "''") + "'"


@dataclass
class Column:
    name: str
    ordinal: int
    type: str
    scale: int | None
    max_length: int | None


@dataclass
class Instance:
    name: str
    object_id: int
    source_object_id: int
    start_lsn: bytes | None
    create_date: str
    min_lsn: bytes | None
    columns: list[Column] = field(default_factory=list)

    def page_sql(self) -> str:
        cols = ", ".join("c." + quote(c.name) for c in self.columns)
        return (f"SELECT TOP (?) {META}, {cols} FROM cdc.{quote(self.name + '_CT')} AS c "
                f"WHERE c.__$start_lsn <= ? AND {KEYSET} {ORDER}")

    def times_sql(self) -> str:
        """Commit times of the transactions in an LSN range of this change table: one row per
        transaction (not per change), at most as many rows as the page that asks."""
        return ("SELECT m.start_lsn, m.tran_end_time FROM cdc.lsn_time_mapping AS m WHERE m.start_lsn >= ? AND m.start_lsn <= ? "
                f"AND m.start_lsn IN (SELECT c.__$start_lsn FROM cdc.{quote(self.name + '_CT')} AS c WHERE c.__$start_lsn >= ? AND c.__$start_lsn <= ?)")


@dataclass
class Table:
    schema: str
    name: str
    object_id: int
    tracked: bool
    instances: list[Instance] = field(default_factory=list)  # oldest first

    @property
    def stream(self) -> str:
        return stream_name(self.schema, self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.stream, "table": self.name, "schema": self.schema, "capture_instances": [i.name for i in self.instances]}


@dataclass
class Catalog:
    database: str
    cdc_enabled: bool
    tables: dict[tuple[str, str], Table]

    def resolve(self, settings: Settings, allow_untracked: bool) -> list[Table]:
        """The configured tables, validated; wildcards match CDC-enabled tables only."""
        chosen: dict[tuple[str, str], Table] = {}
        for pattern in settings.patterns:
            if is_pattern(*pattern):
                found = [t for t in self.tables.values() if t.tracked and matches(pattern, t.schema, t.name)]
                if not found:
                    p_text = ".".join(pattern)
                    raise h.CommandFailed(f"table pattern {p_text!r} matches no CDC-enabled table in database {self.database!r}", key="tables")
            else:
                table = self.tables.get((pattern[0].lower(), pattern[1].lower()))
                if table is None:
                    raise h.CommandFailed(f"table {pattern[0]}.{pattern[1]} does not exist in database {self.database!r}",
                                            hint="tables must name existing tables (schema.table; the schema defaults to dbo)", key="tables")
                found = [table]
            for t in found:
                chosen[(t.schema.lower(), t.name.lower())] = t
        tables = sorted(chosen.values(), key=lambda t: (t.schema.lower(), t.name.lower()))
        names: dict[str, Table] = {}
        for t in tables:
            if t.stream.lower() in names:
                raise h.CommandFailed(f"tables {t.schema}.{t.name} and {names[t.stream.lower()].schema}.{t.name} map to the same stream", key="tables")
            names[t.stream.lower()] = t
        missing = [t for t in tables if not t.instances]
        if missing and not allow_untracked:
            raise h.CommandFailed(
                f"change data capture is not enabled for {', '.join(f'{t.schema}.{t.name}' for t in missing)}"
                + ("" if self.cdc_enabled else f" (nor for database {self.database!r})"),
                hint="a DBA must run: " + enable_sql(self, missing) + " - or set manage_cdc = true to let dstream init do it", key="tables")
        return tables


def enable_sql(catalog: Catalog, tables: list[Table]) -> str:
    parts = [] if catalog.cdc_enabled else [f"USE {quote(catalog.database)}; EXEC sys.sp_cdc_enable_db;"]
    for t in tables:
        parts.append(f"EXEC sys.sp_cdc_enable_table @source_schema = {literal(t.schema)}, @source_name = {literal(t.name)}, "
                     "@role_name = NULL, @supports_net_changes = 0;")
    return " ".join(parts)


def load(db: Any) -> Catalog:
    """Everything discovery needs, in four queries."""
    rows = db.query(SQL_DB)
    if not rows:
        raise h.CommandFailed("the connection's database is not in sys.databases", key="connection_string")
    database, enabled = rows[0][0], bool(rows[0][1])
    tables = {(r[0].lower(), r[1].lower()): Table(r[0], r[1], r[2], bool(r[3])) for r in db.query(SQL_TABLES)}
    if enabled:
        by_source = {t.object_id: t for t in tables.values()}
        instances = {}
        for r in db.query(SQL_INSTANCES):
            inst = Instance(r[0], r[1], r[2], r[3], str(r[4]), r[5])
            instances[inst.object_id] = inst
            if r[2] in by_source:
                by_source[r[2]].instances.append(inst)
        for r in db.query(SQL_COLUMNS):
            if r[0] in instances:
                instances[r[0]].columns.append(Column(r[1], r[2], r[3], r[4], r[5]))
    return Catalog(database, enabled, tables)


def instance_states(db: Any) -> dict[str, Instance]:
    """Capture instances by lower-case name, with their current minimum LSN (no columns)."""
    return {r[0].lower(): Instance(r[0], r[1], r[2], r[3], str(r[4]), r[5]) for r in db.query(SQL_INSTANCES)}
