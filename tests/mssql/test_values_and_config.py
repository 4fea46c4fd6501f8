"""Typed values, identifiers, driver choice and the lifecycle commands of mssql-cdc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, Peer, config, provider

TYPES = ("CREATE TABLE dbo.Typed (ID int NOT NULL PRIMARY KEY, Big bigint NULL, Flag bit NULL, Amount decimal(38,10) NULL, Cash money NULL, "
         "Ratio float NULL, Name nvarchar(40) NULL, Code varchar(10) NULL, At datetime2(7) NULL, At3 datetime2(3) NULL, "
         "Zoned datetimeoffset(7) NULL, Legacy datetime NULL, Day date NULL, Clock time(7) NULL, Guid uniqueidentifier NULL, "
         "Blob varbinary(50) NULL, Fixed binary(4) NULL, Notes nvarchar(max) NULL)")


def enable(peer: Peer, table: str, schema: str = "dbo") -> None:
    peer.sql("EXEC sys.sp_cdc_enable_db") if not peer.sql("SELECT is_cdc_enabled FROM sys.databases")[0][0] else None
    lit = table.replace("'", "''")
    peer.sql(f"EXEC sys.sp_cdc_enable_table @source_schema = N'{schema}', @source_name = N'{lit}', @role_name = NULL")


def test_every_type_round_trips_exactly_with_nulls_and_unicode(peer: Peer) -> None:
    peer.sql(TYPES)
    enable(peer, "Typed")
    init = provider("init", config(peer, ["Typed"]))
    assert init.rc == 0, init.stderr
    start = {m["stream"]: m["position"] for m in init.of_type("checkpoint")}
    peer.sql("INSERT INTO Typed VALUES (1, 9223372036854775807, 1, 12345678901234567890.0123456789, 922337203685477.5807, 0.1, "
             "N'Zoë 日本 \U0001F600 \"q\" \\ ', 'plain', '2024-02-29T23:59:59.9999999', '2024-01-02 03:04:05.123', "
             "'2024-01-02 03:04:05.1234567 -05:30', '2024-01-02 03:04:05.997', '0001-01-01', '13:14:15.1234567', "
             "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 0x00FF10, 0x0102, N'long text')",
             "INSERT INTO Typed (ID) VALUES (2)", "UPDATE Typed SET Name = N'ü' WHERE ID = 1")
    run = provider("run", config(peer, ["Typed"]), start)
    assert run.rc == 0, run.stderr
    full, empty, update = run.changes
    assert full["data"] == {
        "ID": 1, "Big": 9223372036854775807, "Flag": True, "Amount": "12345678901234567890.0123456789", "Cash": "922337203685477.5807",
        "Ratio": 0.1, "Name": "Zoë 日本 \U0001F600 \"q\" \\ ", "Code": "plain", "At": "2024-02-29T23:59:59.9999999", "At3": "2024-01-02T03:04:05.123",
        "Zoned": "2024-01-02T03:04:05.1234567-05:30", "Legacy": "2024-01-02T03:04:05.997", "Day": "0001-01-01", "Clock": "13:14:15.1234567",
        "Guid": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "Blob": "AP8Q", "Fixed": "AQIAAA==", "Notes": "long text"}
    assert set(empty["data"]) == set(full["data"]) and all(v is None for k, v in empty["data"].items() if k != "ID")
    assert "UnavailableColumns" not in empty["metadata"]
    # an update that leaves the large column alone: SQL Server does not log it - unavailable, not NULL
    assert update["data"]["Name"] == "ü" and update["data"]["Notes"] is None
    assert update["metadata"]["UnavailableColumns"] == ["before.Notes", "Notes"]
    assert update["before"]["Name"] == full["data"]["Name"]


def test_odd_table_names_work_and_an_injection_attempt_is_rejected(freetds_peer: Peer) -> None:
    peer = freetds_peer
    peer.sql("CREATE SCHEMA [my schema]", "CREATE TABLE [my schema].[we]]ird \"name's table] (ID int NOT NULL PRIMARY KEY, [odd]] col] nvarchar(10))",
             "CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY)")
    enable(peer, "we]ird \"name's table", "my schema")
    name = "[my schema].[we]]ird \"name's table]"
    init = provider("init", config(peer, [name]))
    assert init.rc == 0, init.stderr
    stream = 'my schema.we]ird "name\'s table'
    start = {m["stream"]: m["position"] for m in init.of_type("checkpoint")}
    assert list(start) == [stream]
    peer.sql("INSERT INTO [my schema].[we]]ird \"name's table] VALUES (1, N'x')")
    run = provider("run", config(peer, [name]), start)
    assert run.rc == 0, run.stderr
    assert run.changes[0]["data"] == {"ID": 1, "odd] col": "x"} and run.changes[0]["stream"] == stream
    bad = provider("run", config(peer, ["Orders]; DROP TABLE dbo.Orders; --"]))
    assert bad.rc == 1 and "is not of the form" in bad.stderr
    quoted = provider("run", config(peer, ["[Orders]]; DROP TABLE dbo.Orders; --]"]))
    assert quoted.rc == 1 and "table dbo.Orders]; DROP TABLE dbo.Orders; -- does not exist" in quoted.stderr
    assert peer.sql("SELECT COUNT(*) AS n FROM sys.tables WHERE name = 'Orders'")[0][0] == 1


def test_missing_cdc_is_a_clear_error_with_the_t_sql_to_run(freetds_peer: Peer) -> None:
    peer = freetds_peer
    peer.sql("CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY)")
    plan = provider("plan", config(peer, ["Orders"]))
    assert plan.rc == 1
    error = plan.of_type("error")[0]
    assert "change data capture is not enabled for dbo.Orders (nor for database 'dstream')" in error["message"]
    assert "USE [dstream]; EXEC sys.sp_cdc_enable_db; EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Orders'" in error["hint"]


def test_manage_cdc_enables_on_init_and_destroy_disables_only_that(freetds_peer: Peer) -> None:
    peer = freetds_peer
    peer.sql("CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY)", "CREATE TABLE dbo.Other (ID int NOT NULL PRIMARY KEY)")
    cfg = config(peer, ["Orders"], manage_cdc=True)
    plan = provider("plan", cfg)
    assert plan.rc == 0, plan.stderr
    assert [(c["action"], c["resource"]["type"]) for c in plan.of_type("change")] == [("create", "cdc-database"), ("create", "cdc-table")]
    init = provider("init", cfg)
    assert init.rc == 0, init.stderr
    resources = [m["resource"] for m in init.of_type("resource")]
    assert [r["type"] for r in resources] == ["cdc-database", "cdc-table"]
    assert init.of_type("checkpoint")[0]["stream"] == "Orders"
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Other', @role_name = NULL")  # a DBA's own
    destroy = provider("destroy", cfg, resources=resources)
    assert destroy.rc == 0, destroy.stderr
    assert [m["action"] for m in destroy.of_type("resource")] == ["deleted", "deleted"]
    left = peer.sql("SELECT capture_instance FROM cdc.change_tables")
    assert [r[0] for r in left] == ["dbo_Other"]
    assert "CDC stays enabled" in destroy.of_type("warning")[0]["message"]


def test_status_reports_instances_lsns_and_lag(freetds_peer: Peer) -> None:
    peer = freetds_peer
    peer.sql("CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY)")
    enable(peer, "Orders")
    peer.sql("INSERT INTO Orders VALUES (1)")
    status = provider("status", config(peer, ["Orders"]))
    assert status.rc == 0, status.stderr
    st = status.of_type("status")[0]["status"]
    assert st["capture_instance"] == "dbo_Orders" and st["max_lsn"] == peer.max_lsn().hex() and st["lag_seconds"] >= 0
    assert st["capture_jobs"]["capture"]["pollinginterval"] == 5


def test_plan_without_refresh_makes_no_connection() -> None:
    cfg = {"connection_string": "DRIVER={FreeTDS};SERVER=127.0.0.1;PORT=1;UID=sa;PWD=x", "tables": ["Persons", "sales.*"]}
    known = [{"name": "sales.Orders", "table": "Orders", "schema": "sales"}, {"name": "Other", "table": "Other", "schema": "dbo"}]
    plan = provider("plan", cfg, refresh=False, streams=known)
    assert plan.rc == 0, plan.stderr
    assert [s["name"] for s in plan.of_type("streams")[0]["streams"]] == ["Persons", "sales.Orders"]


def test_driver_selection_names_the_driver_or_says_what_to_install(freetds_peer: Peer, tmp_path: Path) -> None:
    peer = freetds_peer
    peer.sql("EXEC sys.sp_cdc_enable_db", "CREATE TABLE dbo.Orders (ID int NOT NULL PRIMARY KEY)")
    enable(peer, "Orders")
    cfg = config(peer, ["Orders"], connection_string=f"SERVER=127.0.0.1;PORT={peer.port};UID=sa;PWD=x;DATABASE=dstream;TDS_Version=7.4")
    found = provider("plan", cfg)
    assert found.rc == 0, found.stderr
    assert "using 'FreeTDS'" in found.stderr
    (tmp_path / "odbcinst.ini").write_text("")
    none = provider("plan", cfg, env={"ODBCSYSINI": str(tmp_path), "ODBCINSTINI": "odbcinst.ini"})
    assert none.rc == 1
    error = none.of_type("error")[0]
    assert "pyodbc.drivers() = []" in error["message"] and "ODBC Driver 18" in error["hint"] and "tdsodbc" in error["hint"]
    assert error["key"] == "connection_string"


def test_config_errors_are_clear() -> None:
    base = {"connection_string": "DRIVER={FreeTDS};SERVER=x", "tables": ["Persons"]}
    for extra, key in (({"on_gap": "ignore"}, "on_gap"), ({"start": "yesterday"}, "start"), ({"tables": ["a.b.c"]}, "tables"),
                       ({"page_size": 1}, "page_size"), ({"tabels": []}, "tabels")):
        result = subprocess.run([sys.executable, "-m", "providers.mssql_cdc"], cwd=ROOT, capture_output=True, text=True, timeout=20,
                                input=json.dumps({"command": "validate", "config": {**base, **extra}}) + "\n")
        assert result.returncode == 1
        error = [json.loads(x) for x in result.stdout.splitlines()][-1]
        assert error["type"] == "error" and error["key"] == key, error
