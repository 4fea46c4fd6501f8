"""mssql-cdc benchmarks against the TDS test peer.

1. Throughput: the reader (python -m providers.mssql_cdc, run --once, stdout to
   a pipe that is drained) vs a plain pyodbc fetchmany loop over the same
   change rows, from the same peer with the same driver, in one run.
   Target: reader >= 0.8 x plain loop.
2. CPU cost per change with rows already fetched (Encoder.encode on one core).
   Target: >= 100 k changes/s.

    python bench/mssql_reader.py [--rows 60000] [--page 5000] [--driver freetds|msodbc18]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mssql.conftest import start_peer  # noqa: E402

from providers.mssql.catalog import Column, Instance  # noqa: E402
from providers.mssql.encode import Encoder  # noqa: E402

TABLE = ("CREATE TABLE dbo.Bench (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL, Email nvarchar(100) NULL, Amount decimal(18,4) NULL, "
         "Created datetime2(7) NULL, Active bit NULL, Score float NULL, Note nvarchar(200) NULL)")
COLS = "c.[ID], c.[Name], c.[Email], c.[Amount], c.[Created], c.[Active], c.[Score], c.[Note]"
PLAIN = (f"SELECT c.__$start_lsn, c.__$seqval, c.__$operation, c.__$command_id, c.__$update_mask, m.tran_end_time, {COLS} "
         "FROM cdc.[dbo_Bench_CT] AS c LEFT JOIN cdc.lsn_time_mapping AS m ON m.start_lsn = c.__$start_lsn "
         "ORDER BY c.__$start_lsn, c.__$command_id, c.__$seqval, c.__$operation")


def fill(peer: object, rows: int) -> None:
    sql = peer.sql  # type: ignore[attr-defined]
    sql("EXEC sys.sp_cdc_enable_db", TABLE, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Bench', @role_name = NULL")
    for start in range(0, rows, 500):
        values = ", ".join(f"({i}, N'name {i}', N'user{i}@example.com', {i}.1234, '2026-01-02T03:04:05.1234567', 1, {i}.5, N'note note note {i}')"
                           for i in range(start + 1, min(rows, start + 500) + 1))
        sql(f"INSERT INTO Bench VALUES {values}")


def plain_loop(peer: object, page: int) -> tuple[int, float]:
    import pyodbc

    conn = pyodbc.connect(peer.connection_string, autocommit=True)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    cursor = conn.cursor()
    cursor.execute(PLAIN)
    n = 0
    while True:
        batch = cursor.fetchmany(page)
        if not batch:
            break
        n += len(batch)
    elapsed = time.perf_counter() - t0
    conn.close()
    return n, elapsed


def reader(peer: object, page: int) -> tuple[int, float]:
    config = {"connection_string": peer.connection_string, "tables": ["Bench"], "start": "earliest", "page_size": page}  # type: ignore[attr-defined]
    envelope = json.dumps({"protocol": 1, "command": "run", "config": config, "checkpoints": {}, "once": True})
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "providers.mssql_cdc"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(envelope.encode() + b"\n")
    proc.stdin.close()
    n = 0
    for line in proc.stdout:
        n += line.startswith(b'{"data"')
    proc.wait()
    return n, time.perf_counter() - t0


def cpu_per_change(count: int) -> float:
    cols = [Column("ID", 1, "int", 0, 4), Column("Name", 2, "nvarchar", 0, 100), Column("Email", 3, "nvarchar", 0, 200),
            Column("Amount", 4, "decimal", 4, 9), Column("Created", 5, "datetime2", 7, 8), Column("Active", 6, "bit", 0, 1),
            Column("Score", 7, "float", 0, 8), Column("Note", 8, "nvarchar", 0, 400)]
    inst = Instance("dbo_Bench", 1, 2, bytes(10), "2026-01-01T00:00:00.0000000", bytes(10), cols)
    enc = Encoder("Bench", "dbo", "Bench", inst)
    lsn = (42).to_bytes(10, "big")
    rows = [(lsn, i.to_bytes(10, "big"), 2, 1, b"\xff", "2026-01-02T03:04:05.1230000", i, f"name {i}", f"user{i}@example.com",
             Decimal(f"{i}.1234"), "2026-01-02T03:04:05.1234567", True, i + 0.5, f"note note note {i}") for i in range(count)]
    t0 = time.process_time()
    for start in range(0, count, 1000):
        lines, _ = enc.encode(rows[start:start + 1000], False)
        b"".join(lines)
    return count / (time.process_time() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--page", type=int, default=5000)
    parser.add_argument("--driver", default="freetds", choices=["freetds", "msodbc18"])
    args = parser.parse_args()
    rate = cpu_per_change(200_000)
    print(f"encoder CPU: {rate / 1000:.0f} k changes/s on one core (target >= 100 k)")
    peer = start_peer(args.driver)
    try:
        t0 = time.perf_counter()
        fill(peer, args.rows)
        print(f"peer filled with {args.rows} inserts in {time.perf_counter() - t0:.1f} s ({args.driver})")
        n_plain, t_plain = plain_loop(peer, args.page)
        n_reader, t_reader = reader(peer, args.page)
        assert n_plain == n_reader == args.rows, (n_plain, n_reader)
        print(f"plain fetchmany loop: {n_plain / t_plain:,.0f} rows/s ({t_plain:.2f} s)")
        print(f"mssql-cdc reader:     {n_reader / t_reader:,.0f} changes/s ({t_reader:.2f} s, process start included)")
        print(f"ratio reader/plain: {t_plain / t_reader:.2f} (target >= 0.8)")
    finally:
        peer.stop()
    print(f"at {dt.datetime.now():%Y-%m-%d %H:%M}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
