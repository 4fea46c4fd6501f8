"""`files` output: one JSON-lines file per stream, appended and fsynced before acknowledging.

Lifecycle: the files are the resources (type "file", named after the stream).
Paths are relative to the working directory, which dstream sets to the task
file's directory. Only files recorded in state are ever deleted.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, BinaryIO

if __package__ in (None, ""):  # run as a plain script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from providers import protocol as p
from providers.diff import Key, diff_resources

NAME = "files"
VERSION = "1.0.0"
RESOURCE = "file"
SYNC_BYTES = 8 << 20  # make writes durable at least every 8 MiB...
SYNC_SECONDS = 0.5  # ...or every half second while input keeps coming

FIELDS = [
    p.Field("directory", str, default="out", help="directory for the files, relative to the task file"),
    p.Field("file_template", str, default="{table}_cdc_events.jsonl", help="file name per stream: {table}, {schema}, {stream}"),
    p.Field("fsync", bool, default=True, help="fsync before acknowledging (turn off only for benchmarks)"),
    p.Field("adopt_existing", bool, default=False, help="take over files that exist but are not in state"),
]


def file_path(config: dict[str, Any], stream: dict[str, Any]) -> str:
    name = stream.get("name", "")
    values = {"table": stream.get("table") or name, "schema": stream.get("schema") or "", "stream": name}
    try:
        filename = config["file_template"].format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise p.ProviderFailure(f"file_template is invalid: {exc}", key="file_template") from None
    if not filename or "/" in filename or filename in (".", ".."):
        raise p.ProviderFailure(f"file_template gives an unusable file name {filename!r} for stream {name!r}", key="file_template")
    return os.path.join(config["directory"], filename)


def desired(ctx: p.Context) -> dict[Key, dict[str, Any]]:
    result: dict[Key, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    for stream in ctx.envelope.streams:
        path = file_path(ctx.config, stream)
        other = seen.get(os.path.normcase(path))
        if other is not None:
            raise p.ProviderFailure(f"streams {other!r} and {stream['name']!r} both map to {path}", key="file_template")
        seen[os.path.normcase(path)] = stream["name"]
        result[(RESOURCE, stream["name"])] = {"path": path}
    return result


def in_state(ctx: p.Context) -> dict[Key, dict[str, Any]]:
    return {(r["type"], r["name"]): dict(r.get("attributes") or {}) for r in ctx.envelope.resources if r.get("type") == RESOURCE}


def live(known: dict[Key, dict[str, Any]], wanted: dict[Key, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    found = {}
    for key, attrs in {**wanted, **known}.items():
        if os.path.isfile(attrs["path"]):
            found[key] = {"path": attrs["path"]}
    return found


def compute(ctx: p.Context, wanted: dict[Key, dict[str, Any]]) -> Any:
    known = in_state(ctx)
    actual = live(known, wanted) if ctx.envelope.refresh else None
    diff = diff_resources(wanted, known, actual, immutable=frozenset({"path"}))
    if diff.unmanaged and not ctx.config["adopt_existing"]:
        key = diff.unmanaged[0]
        raise p.ProviderFailure(
            f"{wanted[key]['path']} exists but is not managed by this task",
            hint="move it away, or set adopt_existing = true to take it over",
        )
    for key in diff.unmanaged:  # adopted: recorded in state without touching the file
        diff.changes.append({"action": "adopt", "resource": {"type": key[0], "name": key[1]}, "before": None, "after": wanted[key], "replace_paths": []})
    return diff


def plan(ctx: p.Context) -> None:
    diff = compute(ctx, desired(ctx))
    for drift in diff.drift:
        ctx.send(p.drift_message(drift))
    for change in diff.changes:
        ctx.send(p.change_message(change))


def init(ctx: p.Context) -> None:
    wanted = desired(ctx)
    diff = compute(ctx, wanted)
    changes = diff.changes if ctx.envelope.changes is None else list(ctx.envelope.changes)
    known = in_state(ctx)
    for drift in diff.drift:  # deleted outside dstream and no longer wanted: forget it
        key = (drift["resource"]["type"], drift["resource"]["name"])
        if drift["after"] is None and key not in wanted:
            ctx.send(p.resource_message("deleted", resource(key, known[key])))
    for change in changes:
        apply(ctx, change)


def apply(ctx: p.Context, change: dict[str, Any]) -> None:
    key = (change["resource"]["type"], change["resource"]["name"])
    action = change["action"]
    if action in ("delete", "replace"):
        remove(change["before"]["path"])
        ctx.send(p.resource_message("deleted", resource(key, change["before"])))
    if action in ("create", "replace", "adopt", "update"):
        path = change["after"]["path"]
        if action != "adopt":
            create(path)
        ctx.send(p.resource_message("created" if action != "update" else "updated", resource(key, change["after"])))
        ctx.log(f"{action}d {path}" if action != "adopt" else f"adopted {path}")


def resource(key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
    return {"type": key[0], "name": key[1], "id": attrs["path"], "attributes": attrs}


def create(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.fsync(fd)
    os.close(fd)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)  # make the new name durable too
    os.fsync(dir_fd)
    os.close(dir_fd)


def remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def destroy(ctx: p.Context) -> None:
    for key, attrs in sorted(in_state(ctx).items()):
        remove(attrs["path"])
        ctx.send(p.resource_message("deleted", resource(key, attrs)))
        ctx.log(f"deleted {attrs['path']}")


def status(ctx: p.Context) -> None:
    for key, attrs in sorted(in_state(ctx).items()):
        try:
            info = os.stat(attrs["path"])
            state = {"status": "present", "bytes": info.st_size, "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime))}
        except FileNotFoundError:
            state = {"status": "missing"}
        ctx.send(p.status_message(resource(key, attrs), state))


def validate(ctx: p.Context) -> None:
    for stream in ctx.envelope.streams:
        file_path(ctx.config, stream)


# --- run: append, make durable, then acknowledge ------------------------------


class Sink:
    """Open files per stream; positions waiting to be acknowledged once durable."""

    def __init__(self, paths: dict[str, str], fsync: bool):
        self.files: dict[str, BinaryIO] = {s: open(path, "ab") for s, path in paths.items()}
        self.fsync = fsync
        self.dirty: set[str] = set()
        self.pending: dict[str, Any] = {}  # stream -> newest position not yet acknowledged
        self.unsynced = 0
        self.synced_at = time.monotonic()

    def take(self, line: p.DataLine) -> None:
        stream = line.stream
        if line.is_change:
            out = self.files.get(stream or "")
            if out is None:
                raise p.ProviderFailure(f"no file for stream {stream!r} (input line {line.lineno})", hint="run dstream init")
            out.write(line.raw)
            out.write(b"\n")
            self.dirty.add(stream or "")
            self.unsynced += len(line.raw) + 1
        if stream is not None and line.position is not None:
            self.pending[stream] = line.position

    def due(self) -> bool:
        return self.unsynced >= SYNC_BYTES or time.monotonic() - self.synced_at >= SYNC_SECONDS

    def sync(self, writer: p.Writer) -> None:
        for stream in self.dirty:
            out = self.files[stream]
            out.flush()
            if self.fsync:
                os.fsync(out.fileno())
        for stream, position in self.pending.items():
            writer.send(p.checkpoint_message(stream, position), flush=False)
        writer.flush()
        self.dirty.clear()
        self.pending.clear()
        self.unsynced = 0
        self.synced_at = time.monotonic()

    def close(self) -> None:
        for out in self.files.values():
            out.close()


def run(ctx: p.Context) -> None:
    paths = {key[1]: attrs["path"] for key, attrs in in_state(ctx).items()}
    if not paths and ctx.envelope.streams:  # standalone use without dstream's state
        paths = {s["name"]: file_path(ctx.config, s) for s in ctx.envelope.streams}
    missing = [path for path in paths.values() if not os.path.isfile(path)]
    if missing:
        raise p.ProviderFailure(f"{missing[0]} does not exist", hint="run dstream plan to see the drift, then dstream init")
    sink = Sink(paths, ctx.config["fsync"])
    reader = p.LineReader(0, first_lineno=2, prefix=ctx.stdin_rest)
    try:
        for batch in reader.batches():
            try:
                for lineno, raw in batch:
                    sink.take(p.parse_data_line(raw, lineno))
            except (p.ProviderFailure, p.ProtocolError):
                sink.sync(ctx.writer)  # acknowledge what came before the bad line
                raise
            if sink.due() or not reader.more_ready():
                sink.sync(ctx.writer)
        sink.sync(ctx.writer)
    finally:
        sink.close()


HANDLERS = {"validate": validate, "plan": plan, "init": init, "destroy": destroy, "status": status, "run": run}


def main() -> int:
    return p.serve(NAME, VERSION, FIELDS, HANDLERS)


if __name__ == "__main__":
    sys.exit(main())
