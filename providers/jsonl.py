"""`jsonl` input: replays a file of change envelopes (a captured CDC stream).

Positions are byte offsets just past each line, so a stream resumes after
its checkpoint. Streams are the tables named in the file (or `tables`).
Without `once` it follows the file as it grows, like `tail -f`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

if __package__ in (None, ""):  # run as a plain script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from providers import protocol as p

NAME = "jsonl"
VERSION = "1.0.0"

FIELDS = [
    p.Field("path", str, required=True, help="the file of envelopes, relative to the task file"),
    p.Field("tables", list, help="the tables to emit (default: every table named in the file)"),
    p.Field("poll_interval", float, default=1.0, help="seconds between looks at a growing file"),
]


def open_file(path: str) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise p.ProviderFailure(f"cannot read {path}: {exc.strerror}", key="path") from None


def records(handle: Any, start: int = 0, final: bool = True) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(line number, end offset, envelope) for each complete line from `start`.

    An unterminated last line counts only when `final` (the file is done growing)."""
    handle.seek(start)
    offset, lineno = start, 0
    for raw in handle:
        lineno += 1
        if not raw.endswith(b"\n") and not final:
            return  # a line still being written: wait for its newline
        offset += len(raw)
        if not raw.strip():
            continue
        try:
            envelope = json.loads(raw)
        except ValueError:
            raise p.ProviderFailure(f"line at byte {offset - len(raw)} of {handle.name} is not JSON") from None
        if not isinstance(envelope, dict) or not table_of(envelope):
            raise p.ProviderFailure(f"line at byte {offset - len(raw)} of {handle.name} has no metadata.TableName")
        yield lineno, offset, envelope


def table_of(envelope: dict[str, Any]) -> str:
    metadata = envelope.get("metadata")
    return metadata.get("TableName", "") if isinstance(metadata, dict) else ""


def stream_list(ctx: p.Context) -> list[dict[str, Any]]:
    tables = ctx.config["tables"]
    schemas: dict[str, str] = {}
    if tables is None or ctx.envelope.refresh:
        with open_file(ctx.config["path"]) as handle:
            for _, _, envelope in records(handle):
                schemas.setdefault(table_of(envelope), envelope["metadata"].get("Schema", "dbo"))
    names = tables if tables is not None else sorted(schemas)
    return [{"name": t, "table": t, "schema": schemas.get(t, "dbo")} for t in names]


def announce_streams(ctx: p.Context) -> None:
    ctx.send(p.streams_message(stream_list(ctx)))


def run(ctx: p.Context) -> None:
    # every table unless configured: a table the output has no place for is its error to report
    wanted = set(ctx.config["tables"]) if ctx.config["tables"] is not None else None
    done = {s: int(pos.get("offset", 0)) for s, pos in ctx.envelope.checkpoints.items() if isinstance(pos, dict)}
    # without a table list, a table first seen anywhere in the file must not be skipped: scan from 0
    start = min(done[t] for t in wanted) if wanted and all(t in done for t in wanted) else 0
    pending: list[bytes] = []
    with open_file(ctx.config["path"]) as handle:
        resume_at = start
        while not ctx.stopping:
            for _, end, envelope in records(handle, resume_at, final=ctx.envelope.once):
                resume_at = end
                table = table_of(envelope)
                if (wanted is None or table in wanted) and end > done.get(table, -1):
                    envelope["stream"] = table
                    envelope["position"] = {"offset": end}
                    pending.append(p.dumps(envelope))
                    if len(pending) >= 512:
                        p.write_all(1, b"".join(pending))
                        pending.clear()
                if ctx.stopping:
                    break
            p.write_all(1, b"".join(pending))
            pending.clear()
            if ctx.envelope.once:
                break
            time.sleep(ctx.config["poll_interval"])


HANDLERS = {"plan": announce_streams, "init": announce_streams, "status": announce_streams, "destroy": announce_streams, "validate": announce_streams, "run": run}


def main() -> int:
    return p.serve(NAME, VERSION, FIELDS, HANDLERS, role="input")


if __name__ == "__main__":
    sys.exit(main())
