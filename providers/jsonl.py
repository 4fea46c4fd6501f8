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
import zlib
from collections.abc import Iterator
from typing import Any

if __package__ in (None, ""):  # run as a plain script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from providers import helper as h
from providers import protocol as p

NAME = "jsonl"
VERSION = "1.0.0"
TAIL_CHUNK = 1 << 16  # bytes read per step when looking back for a line start

FIELDS = [
    h.Field("path", str, required=True, help="the file of envelopes, relative to the task file"),
    h.Field("tables", list, help="the tables to emit (default: every table named in the file)"),
    h.Field("poll_interval", float, default=1.0, help="seconds between looks at a growing file"),
]


def open_file(path: str) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise h.CommandFailed(f"cannot read {path}: {exc.strerror}", key="path") from None


def records(handle: Any, start: int = 0) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """(end offset, raw line, envelope) for each complete line from `start`.

    A last line without its newline is still being written: it is not complete yet."""
    handle.seek(start)
    offset = start
    for raw in handle:
        if not raw.endswith(b"\n"):
            return
        offset += len(raw)
        if not raw.strip():
            continue
        try:
            envelope = json.loads(raw)
        except ValueError:
            raise h.CommandFailed(f"line at byte {offset - len(raw)} of {handle.name} is not JSON") from None
        if not isinstance(envelope, dict) or not table_of(envelope):
            raise h.CommandFailed(f"line at byte {offset - len(raw)} of {handle.name} has no metadata.TableName")
        yield offset, raw, envelope


def position(end: int, raw: bytes) -> dict[str, int]:
    """Just past a line, with a fingerprint of that line: a file replaced or rewritten since is noticed."""
    return {"offset": end, "crc32": zlib.crc32(raw)}


def line_before(handle: Any, end: int) -> bytes:
    """The line that ends at byte `end` (its newline included)."""
    start = end - 1
    while start > 0:
        step = max(0, start - TAIL_CHUNK)
        handle.seek(step)
        found = handle.read(start - step).rfind(b"\n")
        if found >= 0:
            start = step + found + 1
            break
        start = step
    handle.seek(max(start, 0))
    return bytes(handle.read(end - max(start, 0)))


def check_resumable(handle: Any, checkpoints: dict[str, Any]) -> None:
    """A checkpoint must still point into this file's content (byte offsets of old {"offset": N}
    positions can only be checked against the size): never skip data of a rotated file in silence."""
    size = os.fstat(handle.fileno()).st_size
    for stream, pos in sorted(checkpoints.items()):
        end = int(pos.get("offset", 0))
        if end > size:
            raise moved(handle.name, stream, end, f"it is now {size} bytes: truncated or replaced")
        if end > 0 and "crc32" in pos and zlib.crc32(line_before(handle, end)) != pos["crc32"]:
            raise moved(handle.name, stream, end, "the line before that offset differs: replaced or rewritten")


def moved(path: str, stream: str, end: int, what: str) -> h.CommandFailed:
    return h.CommandFailed(f"{path} is not the file stream {stream} was read from up to byte {end}: {what}",
                             hint="restore the file, or start the stream afresh: dstream destroy, then dstream init", key="path")


def table_of(envelope: dict[str, Any]) -> str:
    metadata = envelope.get("metadata")
    return metadata.get("TableName", "") if isinstance(metadata, dict) else ""


def stream_list(ctx: h.Context) -> list[dict[str, Any]]:
    tables = ctx.config["tables"]
    schemas: dict[str, str] = {}
    if tables is None or ctx.envelope.refresh:
        with open_file(ctx.config["path"]) as handle:
            for _, _, envelope in records(handle):
                schemas.setdefault(table_of(envelope), envelope["metadata"].get("Schema", "dbo"))
    names = tables if tables is not None else sorted(schemas)
    return [{"name": t, "table": t, "schema": schemas.get(t, "dbo")} for t in names]


def announce_streams(ctx: h.Context) -> None:
    ctx.send(p.streams_message(stream_list(ctx)))


def run(ctx: h.Context) -> None:
    # every table unless configured: a table the output has no place for is its error to report
    wanted = set(ctx.config["tables"]) if ctx.config["tables"] is not None else None
    checkpoints = {s: pos for s, pos in ctx.envelope.checkpoints.items() if isinstance(pos, dict)}
    done = {s: int(pos.get("offset", 0)) for s, pos in checkpoints.items()}
    # without a table list, a table first seen anywhere in the file must not be skipped: scan from 0
    start = min(done[t] for t in wanted) if wanted and all(t in done for t in wanted) else 0
    pending: list[bytes] = []
    with open_file(ctx.config["path"]) as handle:
        check_resumable(handle, checkpoints)
        resume_at = start
        while not ctx.stopping:
            for end, raw, envelope in records(handle, resume_at):
                resume_at = end
                table = table_of(envelope)
                if (wanted is None or table in wanted) and end > done.get(table, -1):
                    envelope["stream"] = table
                    envelope["position"] = position(end, raw)
                    pending.append(p.dumps(envelope))
                    if len(pending) >= 512:
                        h.write_all(1, b"".join(pending))
                        pending.clear()
                if ctx.stopping:
                    break
            h.write_all(1, b"".join(pending))
            pending.clear()
            if ctx.envelope.once:
                break
            time.sleep(ctx.config["poll_interval"])
            check_still_there(handle, ctx.config["path"], resume_at)


def check_still_there(handle: Any, path: str, read_to: int) -> None:
    """While following: the file must be the one being read, and not shorter than what was read."""
    try:
        now = os.stat(path)
    except OSError as exc:
        raise h.CommandFailed(f"{path} went away while being followed: {exc.strerror}", key="path") from None
    mine = os.fstat(handle.fileno())
    if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
        raise h.CommandFailed(f"{path} was replaced while being followed (rotated?) after byte {read_to}",
                                hint="dstream run again reads the new file only if it still holds the old content; otherwise dstream destroy, then dstream init", key="path")
    if mine.st_size < read_to:
        raise h.CommandFailed(f"{path} was truncated to {mine.st_size} bytes while being followed (read up to byte {read_to})",
                                hint="restore the file, or start afresh: dstream destroy, then dstream init", key="path")


HANDLERS = {"plan": announce_streams, "init": announce_streams, "status": announce_streams, "destroy": announce_streams, "validate": announce_streams, "run": run}


def main() -> int:
    return h.serve(NAME, VERSION, FIELDS, HANDLERS, role="input")


if __name__ == "__main__":
    sys.exit(main())
