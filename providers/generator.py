"""`generator` input: emits `count` synthetic changes over `tables` as fast as it can.

For benchmarks and demos. Change i (1-based) goes to table i mod T; its
position is {"seq": i}, so a restarted generator resumes after its checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

if __package__ in (None, ""):  # run as a plain script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from providers import helper as h
from providers import protocol as p

NAME = "generator"
VERSION = "1.0.0"
BLOCK = 512  # changes per write call

FIELDS = [
    h.Field("count", int, default=1000, help="how many changes to emit (0 = until stopped)"),
    h.Field("tables", list, default=["Persons", "Orders", "Customers"], help="table names to spread the changes over"),
    h.Field("payload_bytes", int, default=64, help="size of the filler column per change"),
]


def stream_list(config: dict[str, Any]) -> list[dict[str, Any]]:
    tables = config["tables"]
    if not tables or not all(isinstance(t, str) and t for t in tables):
        raise h.CommandFailed("tables must be a non-empty list of names", key="tables")
    return [{"name": t, "table": t, "schema": "dbo"} for t in tables]


def announce_streams(ctx: h.Context) -> None:
    ctx.send(p.streams_message(stream_list(ctx.config)))


def line(seq: int, table: str, filler: str) -> bytes:
    lsn = f"{seq:020x}"
    return (
        f'{{"data":{{"ID":{seq},"Name":"name-{seq}","Filler":"{filler}"}},'
        f'"metadata":{{"TableName":"{table}","Schema":"dbo","OperationType":"Insert","LSN":"{lsn}","Seq":1}},'
        f'"stream":"{table}","position":{{"seq":{seq}}}}}\n'
    ).encode()


def run(ctx: h.Context) -> None:
    tables = [s["name"] for s in stream_list(ctx.config)]
    for table in tables:  # names go into JSON unescaped above: keep them plain
        if json.dumps(table) != f'"{table}"':
            raise h.CommandFailed(f"table name {table!r} needs escaping; use plain names", key="tables")
    done = {s: int(pos.get("seq", 0)) for s, pos in ctx.envelope.checkpoints.items() if isinstance(pos, dict)}
    start = min(done.get(t, 0) for t in tables) + 1
    count = ctx.config["count"]
    filler = "x" * max(0, ctx.config["payload_bytes"])
    seq = start
    while not ctx.stopping and (count == 0 or seq <= count):
        end = seq + BLOCK if count == 0 else min(seq + BLOCK, count + 1)
        block = []
        for i in range(seq, end):
            table = tables[i % len(tables)]
            if i > done.get(table, 0):
                block.append(line(i, table, filler))
        h.write_all(1, b"".join(block))
        seq = end


HANDLERS = {"plan": announce_streams, "init": announce_streams, "status": announce_streams, "destroy": announce_streams, "validate": announce_streams, "run": run}


def main() -> int:
    return h.serve(NAME, VERSION, FIELDS, HANDLERS, role="input")


if __name__ == "__main__":
    sys.exit(main())
