"""`files` output: one JSON-lines file per stream, appended and fsynced before acknowledging.

Lifecycle: the files are the resources (type "file", named after the stream).
Paths are relative to the working directory, which dstream sets to the task
file's directory. Only files recorded in state are ever deleted.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a plain script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from providers import helper as h
from providers import protocol as p
from providers.diff import Key, diff_resources

NAME = "files"
VERSION = "1.0.0"
RESOURCE = "file"
SYNC_BYTES = 8 << 20  # make writes durable at least every 8 MiB...
SYNC_SECONDS = 0.5  # ...or every half second while input keeps coming
WRITE_BYTES = 1 << 20  # lines buffered per file before one os.write
TAIL_CHUNK = 1 << 16  # bytes read per step when looking for the last newline

FIELDS = [
    h.Field("directory", str, default="out", help="directory for the files, relative to the task file"),
    h.Field("file_template", str, default="{table}_cdc_events.jsonl", help="file name per stream: {table}, {schema}, {stream}"),
    h.Field("fsync", bool, default=True, help="fsync before acknowledging (turn off only for benchmarks)"),
    h.Field("adopt_existing", bool, default=False, help="take over files that exist but are not in state"),
    h.Field("destroy_adopted", bool, default=False, help="let destroy (and deletes) remove adopted files too; by default they are left in place"),
]
ACTIONS = ("create", "update", "replace", "delete", "adopt")
NEW_PLAN = "make a new plan with dstream plan"


def file_path(config: dict[str, Any], stream: dict[str, Any]) -> str:
    name = stream.get("name", "")
    values = {"table": stream.get("table") or name, "schema": stream.get("schema") or "", "stream": name}
    try:
        filename = config["file_template"].format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise h.CommandFailed(f"file_template is invalid: {exc}", key="file_template") from None
    if not filename or "/" in filename or filename in (".", ".."):
        raise h.CommandFailed(f"file_template gives an unusable file name {filename!r} for stream {name!r}", key="file_template")
    return os.path.join(str(config["directory"]), filename)


def desired(ctx: h.Context) -> dict[Key, dict[str, Any]]:
    result: dict[Key, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    for stream in ctx.envelope.streams:
        path = file_path(ctx.config, stream)
        other = seen.get(os.path.normcase(path))
        if other is not None:
            raise h.CommandFailed(f"streams {other!r} and {stream['name']!r} both map to {path}", key="file_template")
        seen[os.path.normcase(path)] = stream["name"]
        result[(RESOURCE, stream["name"])] = {"path": path}
    return result


def in_state(ctx: h.Context) -> dict[Key, dict[str, Any]]:
    """This task's files as state records them: `path`, and `adopted` for files taken over."""
    return {(r["type"], r["name"]): dict(r.get("attributes") or {}) for r in ctx.envelope.resources if r.get("type") == RESOURCE}


def comparable(known: dict[Key, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Only `path` is a property of the file; `adopted` is bookkeeping that live files cannot show."""
    return {key: {"path": attrs["path"]} for key, attrs in known.items()}


def live(known: dict[Key, dict[str, Any]], wanted: dict[Key, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    found = {}
    for key, attrs in {**wanted, **known}.items():
        if os.path.isfile(attrs["path"]):
            found[key] = {"path": attrs["path"]}
    return found


def compute(ctx: h.Context, wanted: dict[Key, dict[str, Any]]) -> Any:
    known = comparable(in_state(ctx))
    actual = live(known, wanted) if ctx.envelope.refresh else None
    diff = diff_resources(wanted, known, actual, immutable=frozenset({"path"}))
    if diff.unmanaged and not ctx.config["adopt_existing"]:
        key = diff.unmanaged[0]
        raise h.CommandFailed(
            f"{wanted[key]['path']} exists but is not managed by this task",
            hint="move it away, or set adopt_existing = true to take it over",
        )
    for key in diff.unmanaged:  # adopted: recorded in state without touching the file
        diff.changes.append({"action": "adopt", "resource": {"type": key[0], "name": key[1]}, "before": None, "after": wanted[key], "replace_paths": []})
    return diff


def plan(ctx: h.Context) -> None:
    diff = compute(ctx, desired(ctx))
    for drift in diff.drift:
        ctx.send(p.drift_message(drift))
    for change in diff.changes:
        ctx.send(p.change_message(change))


def init(ctx: h.Context) -> None:
    wanted = desired(ctx)
    diff = compute(ctx, wanted)
    changes = diff.changes if ctx.envelope.changes is None else list(ctx.envelope.changes)
    known = in_state(ctx)
    for change in changes:  # all of them before any file is touched
        check_change(ctx, change, known, wanted)
    for drift in diff.drift:  # deleted outside dstream and no longer wanted: forget it
        key = (drift["resource"]["type"], drift["resource"]["name"])
        if drift["after"] is None and key not in wanted:
            ctx.send(p.resource_message("deleted", resource(key, known[key])))
    for change in changes:
        apply(ctx, change, known)


def check_change(ctx: h.Context, change: Any, known: dict[Key, dict[str, Any]], wanted: dict[Key, dict[str, Any]]) -> None:
    """A plan may be a saved file, edited since: it may delete or replace only a file state owns, at the
    path state records, and create or adopt only the file the config asks for."""
    try:
        key, action = (change["resource"]["type"], change["resource"]["name"]), change["action"]
        before, after = (change.get("before") or {}).get("path"), (change.get("after") or {}).get("path")
    except (KeyError, TypeError, AttributeError):
        raise h.CommandFailed(f"the plan holds a malformed change: {change!r}", hint=NEW_PLAN) from None
    if action not in ACTIONS:
        raise h.CommandFailed(f"the plan holds an unknown action {action!r} for {key[0]}.{key[1]}", hint=NEW_PLAN)
    if action in ("delete", "replace") and (key not in known or known[key].get("path") != before):
        raise h.CommandFailed(f"the plan would {action} {before}, which is not in this task's state as {key[0]}.{key[1]}", hint=NEW_PLAN)
    if action != "delete" and (key not in wanted or wanted[key]["path"] != after):
        raise h.CommandFailed(f"the plan would {action} {after}, which this task's config does not ask for as {key[0]}.{key[1]}", hint=NEW_PLAN)
    if action == "adopt" and not ctx.config["adopt_existing"]:
        raise h.CommandFailed(f"the plan would adopt {after}, but adopt_existing is not set", hint=NEW_PLAN)


def apply(ctx: h.Context, change: dict[str, Any], known: dict[Key, dict[str, Any]]) -> None:
    """Carry out one checked change; each applied step is reported at once so state stays true."""
    key = (change["resource"]["type"], change["resource"]["name"])
    action = change["action"]
    after = {"path": change["after"]["path"]} if change["after"] else None
    if action == "delete":
        release(ctx, key, known[key])
    elif action == "replace" and after is not None:
        replace_file(ctx, key, known[key], after)
    elif action == "adopt" and after is not None:
        ctx.send(p.resource_message("created", resource(key, {**after, "adopted": True})))
        ctx.log(f"adopted {after['path']}")
    elif action == "create" and after is not None:
        ctx.send(p.resource_message("created", resource(key, create_new(ctx, after["path"]))))
    elif after is not None:  # update: files have no mutable attribute, but keep the bookkeeping
        ctx.send(p.resource_message("updated", resource(key, {**known.get(key, {}), **after})))


def replace_file(ctx: h.Context, key: Key, old: dict[str, Any], after: dict[str, Any]) -> None:
    """The new file first, so a path that cannot be created leaves the old one (and its data) alone."""
    if same_file(old["path"], after["path"]):  # e.g. directory "out" -> "./out": one file, two spellings
        ctx.send(p.resource_message("deleted", resource(key, old)))
        ctx.send(p.resource_message("created", resource(key, {**old, **after})))
        ctx.log(f"{old['path']} is now named {after['path']} (the same file: kept)")
        return
    attrs = create_new(ctx, after["path"])
    release(ctx, key, old)
    ctx.send(p.resource_message("created", resource(key, attrs)))


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def resource(key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
    return {"type": key[0], "name": key[1], "id": attrs["path"], "attributes": attrs}


def create_new(ctx: h.Context, path: str) -> dict[str, Any]:
    """Create the file; one that already exists (made since the plan) is adopted only if allowed."""
    try:
        create(path)
    except FileExistsError:
        if not ctx.config["adopt_existing"]:
            raise h.CommandFailed(f"{path} exists but is not managed by this task",
                                    hint="move it away, or set adopt_existing = true to take it over") from None
        ctx.log(f"adopted {path}")
        return {"path": path, "adopted": True}
    except OSError as exc:
        raise h.CommandFailed(f"cannot create {path}: {exc.strerror or exc}") from None
    ctx.log(f"created {path}")
    return {"path": path}


def create(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    os.fsync(fd)
    os.close(fd)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)  # make the new name durable too
    os.fsync(dir_fd)
    os.close(dir_fd)


def release(ctx: h.Context, key: Key, attrs: dict[str, Any]) -> None:
    """Take a file out of state. A file dstream did not create (adopted) stays on disk unless destroy_adopted."""
    if attrs.get("adopted") and not ctx.config["destroy_adopted"]:
        ctx.log(f"left in place (adopted): {attrs['path']}")
    else:
        remove(attrs["path"])
        ctx.log(f"deleted {attrs['path']}")
    ctx.send(p.resource_message("deleted", resource(key, attrs)))


def remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise h.CommandFailed(f"cannot delete {path}: {exc.strerror or exc}") from None


def destroy(ctx: h.Context) -> None:
    for key, attrs in sorted(in_state(ctx).items()):
        release(ctx, key, attrs)


def status(ctx: h.Context) -> None:
    for key, attrs in sorted(in_state(ctx).items()):
        try:
            info = os.stat(attrs["path"])
            state = {"status": "present", "bytes": info.st_size, "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime))}
        except FileNotFoundError:
            state = {"status": "missing"}
        except OSError as exc:
            state = {"status": "unreadable", "error": exc.strerror or str(exc)}
        ctx.send(p.status_message(resource(key, attrs), state))


def validate(ctx: h.Context) -> None:
    for stream in ctx.envelope.streams:
        file_path(ctx.config, stream)


# --- run: append whole lines, make them durable, then acknowledge ----------------


class WriteFailure(h.CommandFailed):
    """Writing or fsyncing an output file failed; nothing past the last durable line was acknowledged."""


def write_failure(exc: OSError, path: str) -> WriteFailure:
    reason = exc.strerror or str(exc)
    return WriteFailure(f"{reason[:1].lower()}{reason[1:]} writing {path}",
                        hint="fix the disk, then run again: the changes after the last checkpoint are sent again")


def last_line_end(fd: int, size: int) -> int:
    """The offset just past the last newline before `size` (0 when there is none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - TAIL_CHUNK)
        found = os.pread(fd, pos - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
    return 0


class OutputFile:
    """One stream's file, appended in whole lines. `durable` is where its last acknowledged line ends:
    a failed write is cut back to it, so the file never keeps a torn or unacknowledged line."""

    def __init__(self, path: str, log: Any):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND)
        self.buffer = bytearray()
        self.end = self.durable = self.repair_tail(log)

    def repair_tail(self, log: Any) -> int:
        """Cut an unterminated last line (left by a crash or a full disk mid-write). It was never
        acknowledged, so the input sends that change again; appending after it would corrupt both."""
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            return 0
        end = last_line_end(self.fd, info.st_size)
        if end < info.st_size:
            os.ftruncate(self.fd, end)
            os.fsync(self.fd)
            log(f"{self.path}: cut an incomplete last line ({info.st_size - end} bytes); it is sent again")
        return end

    def write(self) -> None:
        """Append the buffered lines; O_APPEND puts every (possibly short) write at the end."""
        view = memoryview(bytes(self.buffer))
        self.buffer.clear()
        while view:
            written = os.write(self.fd, view)
            self.end += written
            view = view[written:]

    def sync(self) -> None:
        os.fsync(self.fd)

    def roll_back(self) -> None:
        """Best effort after a failure: drop what was written since the last acknowledgement."""
        self.buffer.clear()
        try:
            if stat.S_ISREG(os.fstat(self.fd).st_mode):
                os.ftruncate(self.fd, self.durable)
        except OSError:
            pass
        self.end = self.durable


class Sink:
    """Open files per stream; positions waiting to be acknowledged once durable."""

    def __init__(self, paths: dict[str, str], fsync: bool, log: Any):
        self.files: dict[str, OutputFile] = {}
        for stream, path in paths.items():
            try:
                self.files[stream] = OutputFile(path, log)
            except OSError as exc:
                self.close()
                raise write_failure(exc, path) from None
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
                raise h.CommandFailed(f"no file for stream {stream!r} (input line {line.lineno})", hint="run dstream init")
            out.buffer += line.raw
            out.buffer += b"\n"
            self.dirty.add(stream or "")
            self.unsynced += len(line.raw) + 1
            if len(out.buffer) >= WRITE_BYTES:
                self.guarded(out, out.write)
        if stream is not None and line.position is not None:
            self.pending[stream] = line.position

    def due(self) -> bool:
        return self.unsynced >= SYNC_BYTES or time.monotonic() - self.synced_at >= SYNC_SECONDS

    def sync(self, writer: h.Writer) -> None:
        """Write and fsync every dirty file, then acknowledge: a checkpoint only follows durable data."""
        for stream in self.dirty:
            out = self.files[stream]
            self.guarded(out, out.write)
            if self.fsync:
                self.guarded(out, out.sync)
        for stream, position in self.pending.items():
            writer.send(p.checkpoint_message(stream, position), flush=False)
        writer.flush()
        for stream in self.dirty:
            self.files[stream].durable = self.files[stream].end
        self.dirty.clear()
        self.pending.clear()
        self.unsynced = 0
        self.synced_at = time.monotonic()

    def guarded(self, out: OutputFile, action: Any) -> None:
        """Run a write or fsync; on failure cut every file back to its last acknowledged line."""
        try:
            action()
        except OSError as exc:
            for each in self.files.values():
                each.roll_back()
            raise write_failure(exc, out.path) from None

    def close(self) -> None:
        for out in self.files.values():
            os.close(out.fd)


def run(ctx: h.Context) -> None:
    paths = {key[1]: attrs["path"] for key, attrs in in_state(ctx).items()}
    if not paths and ctx.envelope.streams:  # standalone use without dstream's state
        paths = {s["name"]: file_path(ctx.config, s) for s in ctx.envelope.streams}
    missing = [path for path in paths.values() if not os.path.exists(path)]
    if missing:
        raise h.CommandFailed(f"{missing[0]} does not exist", hint="run dstream plan to see the drift, then dstream init")
    sink = Sink(paths, ctx.config["fsync"], ctx.log)
    reader = h.LineReader(0, first_lineno=2, prefix=ctx.stdin_rest)
    try:
        for batch in reader.batches():
            try:
                for lineno, raw in batch:
                    sink.take(p.parse_data_line(raw, lineno))
            except WriteFailure:
                raise
            except (h.CommandFailed, p.ProtocolError):
                sink.sync(ctx.writer)  # acknowledge what came before the bad line
                raise
            if sink.due() or not reader.more_ready():
                sink.sync(ctx.writer)
        sink.sync(ctx.writer)
    finally:
        sink.close()


HANDLERS = {"validate": validate, "plan": plan, "init": init, "destroy": destroy, "status": status, "run": run}


def main() -> int:
    return h.serve(NAME, VERSION, FIELDS, HANDLERS)


if __name__ == "__main__":
    sys.exit(main())
