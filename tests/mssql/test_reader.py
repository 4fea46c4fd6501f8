"""mssql-cdc against the TDS peer: ordering, paging, pairs, resume, gaps, instances, reconnects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyodbc

from .conftest import ROOT, Peer, config, connection_string, envelope, provider

PERSONS = "CREATE TABLE dbo.Persons (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL, Price decimal(10,2) NULL)"
ORDERS = "CREATE TABLE dbo.Orders (OrderID int NOT NULL PRIMARY KEY, Item nvarchar(50) NULL)"


def enable(peer: Peer, *tables: str) -> None:
    peer.sql("EXEC sys.sp_cdc_enable_db")
    for t in tables:
        peer.sql(f"EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{t}', @role_name = NULL")


def setup_persons(peer: Peer, with_orders: bool = False) -> dict:
    peer.sql(PERSONS, *([ORDERS] if with_orders else []))
    enable(peer, "Persons", *(["Orders"] if with_orders else []))
    init = provider("init", config(peer, ["Persons", "Orders"] if with_orders else ["Persons"]))
    assert init.rc == 0, init.stderr
    return {m["stream"]: m["position"] for m in init.of_type("checkpoint")}


def keys(changes: list[dict]) -> list[tuple]:
    return [(c["metadata"]["LSN"], c["metadata"]["CommandID"], c["metadata"]["Seq"], c["metadata"]["OperationID"]) for c in changes]


def test_interleaved_transactions_on_several_tables_come_in_commit_order(peer: Peer) -> None:
    start = setup_persons(peer, with_orders=True)
    a = pyodbc.connect(connection_string("freetds", peer.port), timeout=10)  # autocommit off: explicit transactions
    b = pyodbc.connect(connection_string("freetds", peer.port), timeout=10)
    a.cursor().execute("INSERT INTO Persons (ID, Name) VALUES (1, N'a1')")
    b.cursor().execute("INSERT INTO Orders (OrderID, Item) VALUES (10, N'b1')")
    a.cursor().execute("INSERT INTO Orders (OrderID, Item) VALUES (11, N'a2')")
    b.cursor().execute("INSERT INTO Persons (ID, Name) VALUES (2, N'b2')")
    b.commit()  # b commits first: its changes come first in both tables
    a.cursor().execute("UPDATE Persons SET Name = N'a3' WHERE ID = 1")
    a.commit()
    a.close()
    b.close()
    run = provider("run", config(peer, ["Persons", "Orders"]), start)
    assert run.rc == 0, run.stderr
    assert [c["data"]["Name"] for c in run.of("Persons")] == ["b2", "a1", "a3"]
    assert [c["data"]["Item"] for c in run.of("Orders")] == ["b1", "a2"]
    for stream in ("Persons", "Orders"):
        ks = keys(run.of(stream))
        assert ks == sorted(ks) and len(set(ks)) == len(ks)
    lsn_b = run.of("Orders")[0]["metadata"]["LSN"]
    assert run.of("Persons")[0]["metadata"]["LSN"] == lsn_b  # one LSN per committed transaction
    assert run.of("Persons")[1]["metadata"]["LSN"] > lsn_b


def test_transaction_larger_than_a_page_with_update_pairs_on_page_boundaries(peer: Peer) -> None:
    start = setup_persons(peer)
    values = ", ".join(f"({i}, N'n{i}', {i}.25)" for i in range(1, 8))
    peer.sql(f"BEGIN TRAN; INSERT INTO Persons (ID, Name, Price) VALUES {values}; "
             "UPDATE Persons SET Name = N'u' + Name WHERE ID <= 5; DELETE FROM Persons WHERE ID = 7; COMMIT")
    run = provider("run", config(peer, ["Persons"], page_size=3), start)
    assert run.rc == 0, run.stderr
    ops = [(c["metadata"]["OperationType"], c["data"]["ID"]) for c in run.changes]
    assert ops == [("Insert", i) for i in range(1, 8)] + [("Update", i) for i in range(1, 6)] + [("Delete", 7)]
    assert len({c["metadata"]["LSN"] for c in run.changes}) == 1
    for c in run.changes[7:12]:
        assert c["before"]["Name"] == f"n{c['data']['ID']}" and c["data"]["Name"] == f"un{c['data']['ID']}"
        assert c["metadata"]["UpdatedColumns"] == ["Name"]
    ks = keys(run.changes)
    assert ks == sorted(ks) and len(set(ks)) == len(ks)


def test_commit_time_is_the_transactions_tran_end_time_on_every_page(peer: Peer) -> None:
    start = setup_persons(peer, with_orders=True)
    for i in range(1, 6):
        peer.sql(f"BEGIN TRAN; INSERT INTO Persons (ID, Name) VALUES ({2 * i}, N'a'), ({2 * i + 1}, N'b'); INSERT INTO Orders VALUES ({i}, N'x'); COMMIT")
        peer.sql("EXEC dstream_test.tick")
        time.sleep(0.002)
    mapping = {bytes(r[0]).hex(): r[1] for r in peer.sql("SELECT start_lsn, tran_end_time FROM cdc.lsn_time_mapping")}
    run = provider("run", config(peer, ["Persons", "Orders"], page_size=3), start)
    assert run.rc == 0, run.stderr
    assert len(run.of("Persons")) == 10 and len(run.of("Orders")) == 5
    for c in run.changes:
        assert c["metadata"]["CommitTime"] == mapping[c["metadata"]["LSN"]].isoformat(timespec="milliseconds")
    assert len({c["metadata"]["CommitTime"] for c in run.changes}) > 1


def test_key_changing_update_is_a_delete_and_an_insert(freetds_peer: Peer) -> None:
    peer = freetds_peer
    start = setup_persons(peer)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'x')", "UPDATE Persons SET ID = 100 WHERE ID = 1")
    run = provider("run", config(peer, ["Persons"]), start)
    assert run.rc == 0, run.stderr
    ops = [(c["metadata"]["OperationType"], c["data"]["ID"]) for c in run.changes]
    assert ops == [("Insert", 1), ("Delete", 1), ("Insert", 100)]
    assert run.changes[1]["metadata"]["Seq"] == run.changes[2]["metadata"]["Seq"]


def test_resume_inside_a_transaction_after_a_kill_loses_and_repeats_nothing(peer: Peer) -> None:
    start = setup_persons(peer)
    values = ", ".join(f"({i}, N'n{i}', NULL)" for i in range(1, 41))
    peer.sql(f"BEGIN TRAN; INSERT INTO Persons (ID, Name, Price) VALUES {values}; COMMIT")
    proc = subprocess.Popen([sys.executable, "-m", "providers.mssql_cdc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=ROOT, env=dict(os.environ))
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((envelope("run", config(peer, ["Persons"], page_size=4), start, once=False) + "\n").encode())
    proc.stdin.close()
    seen = []
    while len(seen) < 13:
        seen.append(json.loads(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)  # a crash mid-transaction: the output acknowledged up to change 13
    proc.wait(10)
    proc.stdout.close()
    checkpoint = seen[-1]["position"]
    assert checkpoint["command_id"] == 1 and "seqval" in checkpoint
    rest = provider("run", config(peer, ["Persons"], page_size=4), {"Persons": checkpoint})
    assert rest.rc == 0, rest.stderr
    assert [c["data"]["ID"] for c in seen] == list(range(1, 14))
    assert [c["data"]["ID"] for c in rest.changes] == list(range(14, 41))


def test_gap_after_cleanup_fails_naming_the_table_and_the_range(peer: Peer) -> None:
    start = setup_persons(peer)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'lost')", "INSERT INTO Persons (ID, Name) VALUES (2, N'kept')")
    low = peer.max_lsn()
    peer.sql("EXEC dstream_test.cleanup")
    run = provider("run", config(peer, ["Persons"]), start)
    assert run.rc == 1
    assert "gap in dbo.Persons" in run.stderr and "lost range: LSN " + start["Persons"]["lsn"] in run.stderr
    assert low.hex() != start["Persons"]["lsn"] and "dbo_Persons" in run.stderr
    assert not run.changes


def test_gap_can_be_skipped_explicitly_and_is_recorded(freetds_peer: Peer) -> None:
    peer = freetds_peer
    start = setup_persons(peer)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'lost')", "INSERT INTO Persons (ID, Name) VALUES (2, N'kept')")
    peer.sql("EXEC dstream_test.cleanup")
    run = provider("run", config(peer, ["Persons"], on_gap="skip"), start)
    assert run.rc == 0, run.stderr
    assert "WARNING: skipping a gap in dbo.Persons" in run.stderr
    assert [c["data"]["Name"] for c in run.changes] == ["kept"]
    assert run.changes[0]["position"]["last_gap"]["from"] == start["Persons"]["lsn"]


def test_idle_longer_than_retention_gives_no_false_gap(freetds_peer: Peer) -> None:
    peer = freetds_peer
    start = setup_persons(peer, with_orders=True)
    peer.sql("INSERT INTO Orders (OrderID, Item) VALUES (1, N'o1')")
    first = provider("run", config(peer, ["Persons", "Orders"]), start)
    assert first.rc == 0, first.stderr
    positions = first.last_positions()
    assert positions["Persons"]["lsn"] > start["Persons"]["lsn"]  # the idle table advanced too
    peer.sql("EXEC dstream_test.tick", "EXEC dstream_test.tick")  # the capture job's rows while the database is idle
    idle = provider("run", config(peer, ["Persons", "Orders"]), positions)  # a reader that polls but finds nothing
    assert idle.rc == 0 and not idle.changes, idle.stderr
    peer.sql("EXEC dstream_test.cleanup")  # retention passes everything the reader has seen
    peer.sql("INSERT INTO Orders (OrderID, Item) VALUES (2, N'o2')")
    second = provider("run", config(peer, ["Persons", "Orders"]), idle.last_positions())
    assert second.rc == 0, second.stderr
    assert [c["data"]["Item"] for c in second.changes] == ["o2"]
    # without the idle advance the same history is a gap:
    third = provider("run", config(peer, ["Persons", "Orders"]), positions)
    assert third.rc == 1 and "gap in dbo" in third.stderr


def test_reader_never_reads_past_the_committed_max_lsn(freetds_peer: Peer) -> None:
    peer = freetds_peer
    start = setup_persons(peer)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'visible')")
    peer.sql("EXEC dstream_test.stall_capture 1", "INSERT INTO Persons (ID, Name) VALUES (2, N'in flight')", "EXEC dstream_test.capture_rows_only")
    assert len(peer.sql("SELECT __$start_lsn FROM cdc.dbo_Persons_CT")) == 2
    run = provider("run", config(peer, ["Persons"]), start)
    assert [c["data"]["Name"] for c in run.changes] == ["visible"]
    peer.sql("EXEC dstream_test.stall_capture 0")
    again = provider("run", config(peer, ["Persons"]), run.last_positions())
    assert [c["data"]["Name"] for c in again.changes] == ["in flight"]


def test_schema_change_switches_to_the_new_capture_instance_without_loss(peer: Peer) -> None:
    start = setup_persons(peer)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'before')", "ALTER TABLE dbo.Persons ADD Email nvarchar(100) NULL")
    peer.sql("INSERT INTO Persons (ID, Name, Email) VALUES (2, N'between', N'b@x')")
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Persons', @role_name = NULL, @capture_instance = N'dbo_Persons_v2'")
    peer.sql("INSERT INTO Persons (ID, Name, Email) VALUES (3, N'after', N'a@x')")
    run = provider("run", config(peer, ["Persons"]), start)
    assert run.rc == 0, run.stderr
    assert [c["data"]["ID"] for c in run.changes] == [1, 2, 3]
    assert "Email" not in run.changes[1]["data"] and run.changes[2]["data"]["Email"] == "a@x"
    assert run.changes[2]["metadata"]["CaptureInstance"] == "dbo_Persons_v2"
    assert "switched from capture instance dbo_Persons to dbo_Persons_v2" in run.stderr and "can be dropped" in run.stderr
    peer.sql("EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'Persons', @capture_instance = N'dbo_Persons'")
    peer.sql("INSERT INTO Persons (ID, Name, Email) VALUES (4, N'later', N'l@x')")
    later = provider("run", config(peer, ["Persons"]), run.last_positions())
    assert later.rc == 0, later.stderr
    assert [c["data"]["ID"] for c in later.changes] == [4]


def test_cdc_disabled_and_re_enabled_is_detected(freetds_peer: Peer) -> None:
    peer = freetds_peer
    start = setup_persons(peer)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'a')")
    peer.sql("EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'Persons', @capture_instance = N'all'")
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (2, N'unseen')")
    gone = provider("run", config(peer, ["Persons"]), start)
    assert gone.rc == 1 and "change data capture is not enabled for dbo.Persons" in gone.stderr
    peer.sql("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Persons', @role_name = NULL")
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (3, N'new')")
    back = provider("run", config(peer, ["Persons"]), start)
    assert back.rc == 1 and "disabled and re-enabled" in back.stderr and "dbo.Persons" in back.stderr
    assert not back.changes


def test_connection_drop_mid_page_reconnects_without_loss(peer: Peer) -> None:
    start = setup_persons(peer)
    values = ", ".join(f"({i}, N'n{i}', NULL)" for i in range(1, 61))
    peer.sql(f"INSERT INTO Persons (ID, Name, Price) VALUES {values}")
    peer.sql("EXEC dstream_test.drop_connections @after_rows = 15")
    run = provider("run", config(peer, ["Persons"], page_size=25), start)
    assert run.rc == 0, run.stderr
    assert "reconnecting" in run.stderr
    assert [c["data"]["ID"] for c in run.changes] == list(range(1, 61))


def test_once_drains_up_to_the_max_lsn_seen_at_start_then_exits(freetds_peer: Peer) -> None:
    peer = freetds_peer
    start = setup_persons(peer)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'a')", "INSERT INTO Persons (ID, Name) VALUES (2, N'b')")
    run = provider("run", config(peer, ["Persons"], max_transactions_per_pass=1), start)
    assert run.rc == 0, run.stderr
    assert [c["data"]["ID"] for c in run.changes] == [1, 2]


def test_follow_mode_picks_up_new_changes_survives_a_dropped_connection_and_stops_on_sigterm(freetds_peer: Peer) -> None:
    peer = freetds_peer
    start = setup_persons(peer)
    proc = subprocess.Popen([sys.executable, "-m", "providers.mssql_cdc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=dict(os.environ))
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((envelope("run", config(peer, ["Persons"]), start, once=False) + "\n").encode())
    proc.stdin.close()
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'one')")
    first = json.loads(proc.stdout.readline())
    peer.sql("EXEC dstream_test.drop_connections")  # every other session, the reader's included
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (2, N'two')")
    lines = [first]
    while not any(m.get("data", {}).get("ID") == 2 for m in lines):
        lines.append(json.loads(proc.stdout.readline()))
    proc.send_signal(signal.SIGTERM)
    proc.stdin = None
    rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    changes = [m for m in lines + [json.loads(x) for x in rest.splitlines()] if "data" in m]
    assert [c["data"]["ID"] for c in changes] == [1, 2]


def test_start_earliest_and_at_a_time_without_a_checkpoint(freetds_peer: Peer) -> None:
    peer = freetds_peer
    peer.sql(PERSONS)
    enable(peer, "Persons")
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (1, N'old')")
    import time

    time.sleep(0.05)
    middle = peer.sql("SELECT SYSDATETIME() AS now")[0][0]
    time.sleep(0.05)
    peer.sql("INSERT INTO Persons (ID, Name) VALUES (2, N'new')")
    earliest = provider("run", config(peer, ["Persons"], start="earliest"))
    assert [c["data"]["ID"] for c in earliest.changes] == [1, 2]
    since = provider("run", config(peer, ["Persons"], start=str(middle).replace(" ", "T")))
    assert since.rc == 0, since.stderr
    assert [c["data"]["ID"] for c in since.changes] == [2]
    latest = provider("run", config(peer, ["Persons"]))
    assert latest.rc == 0 and not latest.changes and "has no checkpoint" in latest.stderr
