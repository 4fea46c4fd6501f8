"""The source side of the fault scenario: the tables, the ODBC drivers, and a writer thread.

Every insert and update writes the table's next sequence number into its Seq
column; a delete is known by its key (keys are never reused). The writer's
journal lists committed changes in commit order: the truth the consumer is
checked against.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyodbc
from mssql.conftest import connection_string as mssql_connection_string
from mssql.conftest import ms_driver

TABLES = {"Persons": "PersonID", "Orders": "OrderID"}  # table -> key column

SCHEMA = (
    "EXEC sys.sp_cdc_enable_db",
    "CREATE TABLE dbo.Persons (PersonID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL, Seq int NOT NULL)",
    "CREATE TABLE dbo.Orders (OrderID int NOT NULL PRIMARY KEY, Amount decimal(10,2) NULL, Seq int NOT NULL)",
    "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Persons', @role_name = NULL",
    "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Orders', @role_name = NULL",
)


# --- drivers -----------------------------------------------------------------------------


def available_drivers() -> list[str]:
    """The SQL Server ODBC drivers installed here, in the order runs alternate them."""
    found = []
    if "FreeTDS" in pyodbc.drivers():
        found.append("freetds")
    if ms_driver() is not None:
        found.append("msodbc18")
    return found


def connection_string(driver: str, port: int) -> str:
    """The mssql tests' encrypted connection string (the CA comes from tls_env() in the process's environment)."""
    return mssql_connection_string(driver, port)


# --- the writer --------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One committed change as the consumer must see it: (table, operation, key, Seq)."""

    table: str
    op: str
    key: int
    seq: int


class Writer(threading.Thread):
    """Commits transactions of 1-3 changes until stopped; `journal` lists them in commit order."""

    def __init__(self, conn_str: str, rng: random.Random, pause: tuple[float, float] = (0.01, 0.05)):
        super().__init__(name="cdc-writer", daemon=True)
        self.conn_str, self.rng, self.pause = conn_str, rng, pause
        self.journal: list[Change] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._seq = dict.fromkeys(TABLES, 0)
        self._next_key = dict.fromkeys(TABLES, 1)
        self._live: dict[str, dict[int, int]] = {t: {} for t in TABLES}  # key -> its last Seq

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        try:
            conn = pyodbc.connect(self.conn_str, autocommit=False, timeout=10)
            try:
                self._write(conn)
            finally:
                conn.close()
        except BaseException as exc:  # reported by the scenario: a writer that failed means the test is void
            self.error = exc

    def _write(self, conn: Any) -> None:
        cursor = conn.cursor()
        while not self._halt.is_set():
            pending = [self._one(cursor) for _ in range(self.rng.randint(1, 3))]
            conn.commit()
            self.journal.extend(pending)  # only once committed: the journal is what the source holds
            time.sleep(self.rng.uniform(*self.pause))

    def _one(self, cursor: Any) -> Change:
        table = self.rng.choice(list(TABLES))
        live = self._live[table]
        roll = self.rng.random()
        if live and roll < 0.15:
            return self._remove(cursor, table)
        if live and roll < 0.5:
            return self._update(cursor, table)
        return self._insert(cursor, table)

    def _next_seq(self, table: str) -> int:
        self._seq[table] += 1
        return self._seq[table]

    def _insert(self, cursor: Any, table: str) -> Change:
        key, seq = self._next_key[table], self._next_seq(table)
        self._next_key[table] += 1
        if table == "Persons":
            cursor.execute("INSERT INTO dbo.Persons (PersonID, Name, Seq) VALUES (?, ?, ?)", key, f"person {key}", seq)
        else:
            cursor.execute("INSERT INTO dbo.Orders (OrderID, Amount, Seq) VALUES (?, ?, ?)", key, f"{key}.50", seq)
        self._live[table][key] = seq
        return Change(table, "Insert", key, seq)

    def _update(self, cursor: Any, table: str) -> Change:
        key, seq = self.rng.choice(list(self._live[table])), self._next_seq(table)
        if table == "Persons":
            cursor.execute("UPDATE dbo.Persons SET Name = ?, Seq = ? WHERE PersonID = ?", f"person {key} v{seq}", seq, key)
        else:
            cursor.execute("UPDATE dbo.Orders SET Amount = ?, Seq = ? WHERE OrderID = ?", f"{seq}.25", seq, key)
        self._live[table][key] = seq
        return Change(table, "Update", key, seq)

    def _remove(self, cursor: Any, table: str) -> Change:
        key = self.rng.choice(list(self._live[table]))
        cursor.execute(f"DELETE FROM dbo.{table} WHERE {TABLES[table]} = ?", key)
        return Change(table, "Delete", key, self._live[table].pop(key))
