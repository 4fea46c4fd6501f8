"""mssql-cdc benchmarks against the TDS test peer.

1. Throughput: the reader (python -m providers.mssql_cdc, run --once, stdout to
   a pipe that is drained) vs a plain pyodbc fetchmany loop over the same
   change rows, from the same peer with the same driver, in one run. Both run
   as child processes and are timed the same way, from process start to exit
   (interpreter start-up, imports and connecting included on both sides); the
   sides alternate and the medians of --repeat runs are compared.
   Target: reader >= 0.8 x plain loop, at the reader's default settings.
2. CPU cost per change with rows already fetched (Encoder.encode on one core).
   Target: >= 100 k changes/s.

    python bench/mssql_reader.py [--rows 60000] [--page N] [--plain-page 5000] [--repeat 5] [--driver freetds|msodbc18]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mssql.conftest import start_peer, tls_env  # noqa: E402

from providers.mssql_cdc.catalog import Column, Instance  # noqa: E402
from providers.mssql_cdc.encode import Encoder  # noqa: E402

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


PLAIN_CHILD = """
import sys, pyodbc
conn = pyodbc.connect(sys.argv[1], autocommit=True)
cursor = conn.cursor()
cursor.execute(sys.argv[2])
n = 0
while True:
    batch = cursor.fetchmany(int(sys.argv[3]))
    if not batch:
        break
    n += len(batch)
conn.close()
print(n)
"""


def plain_loop(peer: object, page: int) -> tuple[int, float]:
    """A plain pyodbc fetchmany loop, in its own process and timed like the reader:
    from process start to exit (interpreter start, import, connect included)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PLAIN_CHILD, peer.connection_string, PLAIN, str(page)],  # type: ignore[attr-defined]
                         capture_output=True, check=True, env={**os.environ, **tls_env()})
    elapsed = time.perf_counter() - t0
    return int(out.stdout), elapsed


def reader(peer: object, page: int | None) -> tuple[int, float]:
    """The provider process (run --once), from process start to exit; its stdout is drained by this process."""
    config = {"connection_string": peer.connection_string, "tables": ["Bench"], "start": "earliest"}  # type: ignore[attr-defined]
    if page is not None:
        config["page_size"] = page
    envelope = json.dumps({"protocol": 1, "command": "run", "config": config, "checkpoints": {}, "once": True})
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "providers.mssql_cdc"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, **tls_env()})
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
    times = {lsn: "2026-01-02T03:04:05.1230000"}
    rows = [(lsn, i.to_bytes(10, "big"), 2, 1, b"\xff", i, f"name {i}", f"user{i}@example.com",
             Decimal(f"{i}.1234"), "2026-01-02T03:04:05.1234567", True, i + 0.5, f"note note note {i}") for i in range(count)]
    t0 = time.process_time()
    for start in range(0, count, 1000):
        lines, _ = enc.encode(rows[start:start + 1000], False, times)
        b"".join(lines)
    return count / (time.process_time() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--page", type=int, default=None, help="the reader's page_size (default: the reader's own default)")
    parser.add_argument("--plain-page", type=int, default=5000, help="fetchmany size of the plain loop")
    parser.add_argument("--repeat", type=int, default=7, help="alternating runs of each side; medians are compared")
    parser.add_argument("--driver", default="freetds", choices=["freetds", "msodbc18"])
    args = parser.parse_args()
    rate = cpu_per_change(200_000)
    print(f"encoder CPU: {rate / 1000:.0f} k changes/s on one core (target >= 100 k)")
    peer = start_peer(args.driver)
    try:
        t0 = time.perf_counter()
        fill(peer, args.rows)
        print(f"peer filled with {args.rows} inserts in {time.perf_counter() - t0:.1f} s ({args.driver})")
        plain_times, reader_times = [], []
        for i in range(args.repeat):
            sides = [("plain", lambda: plain_loop(peer, args.plain_page)), ("reader", lambda: reader(peer, args.page))]
            for name, run in sides if i % 2 == 0 else sides[::-1]:
                n, elapsed = run()
                assert n == args.rows, (name, n)
                (plain_times if name == "plain" else reader_times).append(elapsed)
        t_plain, t_reader = statistics.median(plain_times), statistics.median(reader_times)
        page = f"page_size {args.page}" if args.page else "default page_size"
        print(f"plain fetchmany loop: {args.rows / t_plain:,.0f} rows/s (median {t_plain:.2f} s of {fmt(plain_times)})")
        print(f"mssql-cdc reader:     {args.rows / t_reader:,.0f} changes/s (median {t_reader:.2f} s of {fmt(reader_times)}; {page})")
        print(f"ratio reader/plain: {t_plain / t_reader:.2f} of medians, {min(plain_times) / min(reader_times):.2f} of best runs (target >= 0.8); "
              "both timed from process start to exit")
    finally:
        peer.stop()
    print(f"at {dt.datetime.now():%Y-%m-%d %H:%M}")
    return 0


def fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())
