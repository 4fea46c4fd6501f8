"""mssql-cdc snapshot benchmark against the TDS test peer.

Throughput: the provider's snapshot (python -m providers.mssql_cdc, run --once, snapshot =
"initial", stdout drained through a pipe) vs a plain pyodbc keyset-paged SELECT loop
(`SELECT TOP (n) ... WHERE ID > ? ORDER BY ID`, fetchall per page) over the same table, with the
same driver and page size, both as child processes timed from start to exit; the sides alternate
and medians of --repeat runs are compared. Target: snapshot >= 0.8 x plain loop.
Memory: the provider's peak RSS (ru_maxrss of the child) at each table size; it must stay flat.

    python bench/mssql_snapshot.py [--rows 10000,200000] [--chunk 5000] [--repeat 3] [--driver freetds|msodbc18]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mssql import conftest  # noqa: E402

TABLE = ("CREATE TABLE dbo.Bench (ID int NOT NULL PRIMARY KEY, Name nvarchar(50) NULL, Email nvarchar(100) NULL, Amount decimal(18,4) NULL, "
         "Created datetime2(7) NULL, Active bit NULL, Score float NULL, Note nvarchar(200) NULL)")
COLS = "t.[ID], t.[Name], t.[Email], t.[Amount], t.[Created], t.[Active], t.[Score], t.[Note]"

PLAIN_CHILD = """
import sys, pyodbc
conn = pyodbc.connect(sys.argv[1], autocommit=True)
cursor = conn.cursor()
size, cols, n, last = int(sys.argv[2]), sys.argv[3], 0, None
while True:
    if last is None:
        cursor.execute(f"SELECT TOP (?) {cols} FROM [dbo].[Bench] AS t ORDER BY t.[ID]", size)
    else:
        cursor.execute(f"SELECT TOP (?) {cols} FROM [dbo].[Bench] AS t WHERE (t.[ID] > ?) ORDER BY t.[ID]", size, last)
    rows = cursor.fetchall()
    n += len(rows)
    if len(rows) < size:
        break
    last = rows[-1][0]
print(n)
"""


def env() -> dict[str, str]:
    extra = getattr(conftest, "tls_env", lambda: {})()
    return {**os.environ, **extra}


def fill(peer: conftest.Peer, start: int, end: int) -> None:
    for s in range(start, end, 1000):
        values = ", ".join(f"({i}, N'name {i}', N'user{i}@example.com', {i}.1234, '2026-01-02T03:04:05.1234567', 1, {i}.5, N'note note note {i}')"
                           for i in range(s + 1, min(end, s + 1000) + 1))
        peer.sql(f"INSERT INTO Bench VALUES {values}")


def timed(argv: list[str], stdin: bytes | None = None, count: bytes | None = None) -> tuple[int, float, int]:
    """(rows, seconds from start to exit, peak RSS in KiB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env())
    assert proc.stdin is not None and proc.stdout is not None
    if stdin is not None:
        proc.stdin.write(stdin)
    proc.stdin.close()
    n, out = 0, b""
    for line in proc.stdout:
        if count is None:
            out += line
        else:
            n += line.startswith(count)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}")
    return (n if count is not None else int(out)), elapsed, usage.ru_maxrss


def plain(peer: conftest.Peer, chunk: int) -> tuple[int, float, int]:
    return timed([sys.executable, "-c", PLAIN_CHILD, peer.connection_string, str(chunk), COLS])


def snapshot(peer: conftest.Peer, chunk: int) -> tuple[int, float, int]:
    config = {"connection_string": peer.connection_string, "tables": ["Bench"], "snapshot": "initial", "snapshot_chunk_size": chunk}
    envelope = json.dumps({"protocol": 1, "command": "run", "config": config, "checkpoints": {}, "once": True}).encode() + b"\n"
    return timed([sys.executable, "-m", "providers.mssql_cdc"], envelope, count=b'{"data"')


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="10000,200000", help="table sizes, ascending, comma-separated")
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--driver", default="freetds", choices=["freetds", "msodbc18"])
    args = parser.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]
    peer = conftest.start_peer(args.driver)
    try:
        peer.sql("EXEC sys.sp_cdc_enable_db", TABLE, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Bench', @role_name = NULL")
        have = 0
        for rows in sizes:
            fill(peer, have, rows)
            have = rows
            plain_t, snap_t, rss = [], [], []
            for i in range(args.repeat):
                sides = [("plain", plain), ("snapshot", snapshot)]
                for name, side in sides if i % 2 == 0 else sides[::-1]:
                    n, elapsed, peak = side(peer, args.chunk)
                    assert n == rows, (name, n, rows)
                    if name == "plain":
                        plain_t.append(elapsed)
                    else:
                        snap_t.append(elapsed)
                        rss.append(peak)
            tp, ts = statistics.median(plain_t), statistics.median(snap_t)
            print(f"{rows:>8} rows ({args.driver}, chunk {args.chunk}): plain keyset loop {rows / tp:,.0f} rows/s, snapshot {rows / ts:,.0f} rows/s, "
                  f"ratio {tp / ts:.2f} of medians of {args.repeat} (target >= 0.8); snapshot peak RSS {max(rss) / 1024:.1f} MiB")
    finally:
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
