"""The TDS peer's isolation levels and catalog, as the snapshot reader relies on them (real clients over sockets)."""

from __future__ import annotations

import threading
import time

import pyodbc
import pytest

from .conftest import Peer


def session(peer: Peer) -> pyodbc.Connection:
    return pyodbc.connect(peer.connection_string, autocommit=True, timeout=10)


def rows(conn: pyodbc.Connection, sql: str, *params: object) -> list[tuple[object, ...]]:
    cur = conn.cursor()
    cur.execute(sql, *params)
    out = [tuple(r) for r in cur.fetchall()] if cur.description else []
    cur.close()
    return out


@pytest.fixture
def orders(peer: Peer) -> Peer:
    peer.sql("CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY, Item nvarchar(20) NULL)",
             "INSERT INTO Orders VALUES (1, N'a'), (2, N'b'), (3, N'c')")
    return peer


def test_snapshot_isolation_is_refused_with_3952_until_the_database_allows_it(orders: Peer) -> None:
    reader = session(orders)
    rows(reader, "SET TRANSACTION ISOLATION LEVEL SNAPSHOT")  # the SET itself succeeds, as in SQL Server
    with pytest.raises(pyodbc.Error, match="3952|snapshot isolation is not allowed"):
        rows(reader, "SELECT ID FROM dbo.Orders")
    orders.sql("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
    assert rows(reader, "SELECT ID FROM dbo.Orders ORDER BY ID") == [(1,), (2,), (3,)]
    assert orders.sql("SELECT snapshot_isolation_state FROM sys.databases WHERE name = DB_NAME()")[0][0] == 1


def test_a_snapshot_transaction_reads_the_rows_as_of_its_first_read_while_others_write(orders: Peer) -> None:
    orders.sql("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
    reader, writer = session(orders), session(orders)
    rows(reader, "SET TRANSACTION ISOLATION LEVEL SNAPSHOT")
    rows(reader, "BEGIN TRAN")
    assert rows(reader, "SELECT ID, Item FROM dbo.Orders AS o ORDER BY o.ID") == [(1, "a"), (2, "b"), (3, "c")]
    rows(writer, "UPDATE Orders SET ID = 10 WHERE ID = 1")  # committed key change
    rows(writer, "DELETE FROM Orders WHERE ID = 2")
    rows(writer, "BEGIN TRAN")
    rows(writer, "INSERT INTO Orders VALUES (4, N'uncommitted')")
    rows(writer, "UPDATE Orders SET Item = N'x' WHERE ID = 3")
    assert rows(reader, "SELECT ID, Item FROM dbo.Orders ORDER BY ID") == [(1, "a"), (2, "b"), (3, "c")]
    assert rows(reader, "SELECT TOP (2) ID FROM dbo.Orders WHERE ID > ? ORDER BY ID", 1) == [(2,), (3,)]
    rows(reader, "COMMIT")
    assert rows(reader, "SELECT ID, Item FROM dbo.Orders ORDER BY ID") == [(3, "c"), (10, "a")]  # a new snapshot: committed only
    rows(writer, "COMMIT")
    assert rows(reader, "SELECT ID, Item FROM dbo.Orders ORDER BY ID") == [(3, "x"), (4, "uncommitted"), (10, "a")]


def test_read_committed_waits_for_a_writer_and_never_reads_its_uncommitted_rows(orders: Peer) -> None:
    reader, writer = session(orders), session(orders)
    rows(writer, "BEGIN TRAN")
    rows(writer, "INSERT INTO Orders VALUES (4, N'rolled back')")
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(rows(reader, "SELECT ID FROM dbo.Orders ORDER BY ID")))
    thread.start()
    time.sleep(0.5)
    assert not got, "a READ COMMITTED read went past another session's uncommitted insert"
    rows(writer, "ROLLBACK")
    thread.join(10)
    assert got == [[(1,), (2,), (3,)]]


def test_read_committed_snapshot_reads_the_last_committed_version_without_waiting(orders: Peer) -> None:
    orders.sql("ALTER DATABASE CURRENT SET READ_COMMITTED_SNAPSHOT ON")
    reader, writer = session(orders), session(orders)
    rows(writer, "BEGIN TRAN")
    rows(writer, "DELETE FROM Orders WHERE ID = 1")
    assert rows(reader, "SELECT ID FROM dbo.Orders ORDER BY ID") == [(1,), (2,), (3,)]
    rows(writer, "COMMIT")
    assert rows(reader, "SELECT ID FROM dbo.Orders ORDER BY ID") == [(2,), (3,)]


def test_sys_partitions_counts_rows_per_index_and_sys_indexes_names_the_keys(orders: Peer) -> None:
    orders.sql("CREATE TABLE dbo.Heap (Code nvarchar(10) NOT NULL, Note nvarchar(10) NULL)",
               "CREATE UNIQUE NONCLUSTERED INDEX UX_Heap_Code ON dbo.Heap (Code)",
               "INSERT INTO Heap VALUES (N'x', NULL), (N'y', NULL)")
    counts = orders.sql("SELECT OBJECT_NAME(p.object_id) AS t, p.index_id, p.rows FROM sys.partitions AS p ORDER BY t, p.index_id")
    assert [tuple(r) for r in counts] == [("Heap", 0, 2), ("Heap", 2, 2), ("Orders", 1, 3)]
    keys = orders.sql("SELECT i.name, i.is_primary_key, i.is_unique, c.name FROM sys.indexes AS i "
                      "JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id "
                      "JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id ORDER BY i.name")
    assert [tuple(r) for r in keys] == [("PK_Orders", 1, 1, "ID"), ("UX_Heap_Code", 0, 1, "Code")]
    with pytest.raises(pyodbc.Error, match="2627|duplicate"):
        orders.sql("INSERT INTO Heap VALUES (N'x', N'again')")
