"""The run loop: poll, page through each capture instance up to the committed max LSN, emit, advance.

Per pass: read fn_cdc_get_max_lsn() (the committed upper bound), check every
capture instance's identity and minimum LSN, then page each stream with a
keyset on the full ordering key. The minimum LSN is checked again after each
page, before anything is emitted, so cleanup racing a read is caught.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from providers import helper as h
from providers import protocol as p
from providers.mssql_cdc import catalog as cat
from providers.mssql_cdc import snapshot as snap
from providers.mssql_cdc.config import Settings
from providers.mssql_cdc.db import Database, is_connection_error
from providers.mssql_cdc.encode import Encoder
from providers.mssql_cdc.position import Identity, Key, dec, from_json, to_json

SQL_MIN_ONE = "SELECT sys.fn_cdc_get_min_lsn(?) AS min_lsn"
ZERO = bytes(10)
SWITCH_INTERVAL = 0.0005  # seconds


@dataclass
class Stream:
    table: cat.Table
    current: cat.Instance
    key: Key
    extra: dict[str, Any] = field(default_factory=dict)
    encoder: Encoder | None = None
    reported: Key | None = None  # the last position written
    snapshot: dict[str, Any] | None = None  # a snapshot requested or running: positions stay at `key` and carry it

    @property
    def name(self) -> str:
        return self.table.stream

    @property
    def label(self) -> str:
        return f"{self.table.schema}.{self.table.name}"

    def use(self, inst: cat.Instance) -> None:
        self.current = inst
        self.encoder = Encoder(self.name, self.table.schema, self.table.name, inst, self.extra)

    def position(self) -> dict[str, Any]:
        out = to_json(self.key, ident(self.current), self.extra)
        if self.snapshot is not None:
            out["snapshot"] = self.snapshot
        return out


def ident(inst: cat.Instance) -> Identity:
    return Identity(inst.name, inst.object_id, inst.create_date)


class Reader:
    def __init__(self, ctx: h.Context, settings: Settings):
        self.ctx = ctx
        self.settings = settings
        self.db = Database(settings, ctx.log)
        self.streams: list[Stream] = []
        self.known: set[tuple[str, int, str]] = set()

    # --- start -----------------------------------------------------------------------

    def start(self) -> None:
        catalog = cat.load(self.db)
        tables = catalog.resolve(self.settings, allow_untracked=False)
        self.remember(catalog)
        max_lsn = self.db.query(cat.SQL_MAX_LSN)[0][0]
        for table in tables:
            stream = self.attach(table, self.ctx.envelope.checkpoints.get(table.stream), max_lsn)
            self.streams.append(stream)
            self.ctx.log(f"{stream.label}: reading {stream.current.name} from {stream.position()}")

    def remember(self, catalog: cat.Catalog) -> None:
        self.known = {(i.name.lower(), i.object_id, i.create_date) for t in catalog.tables.values() for i in t.instances}

    def attach(self, table: cat.Table, checkpoint: Any, max_lsn: bytes | None) -> Stream:
        if checkpoint is not None:
            try:
                key, who, extra = from_json(checkpoint)
            except (ValueError, KeyError, TypeError) as exc:
                raise h.CommandFailed(f"checkpoint of stream {table.stream!r} is not an mssql-cdc position ({exc})",
                                        hint="reset the stream's checkpoint (dstream state) to start again") from None
            stream = Stream(table, table.instances[0], key, extra)
            marker = checkpoint.get("snapshot")
            stream.snapshot = dict(marker) if isinstance(marker, dict) else None
            stream.use(self.instance_for(stream, who))
            stream.reported = key
            return stream
        start = self.settings.start
        if start == "latest":
            inst = table.instances[-1]
            self.ctx.log(f"warning: stream {table.stream!r} has no checkpoint; starting at the latest change (dstream init records the start)")
            key = start_key(inst, max_lsn)
        elif start == "earliest":
            inst = table.instances[0]
            key = Key.before(inst.min_lsn or inst.start_lsn or ZERO)
        else:
            inst = table.instances[0]
            assert self.settings.start_time is not None
            when = self.settings.start_time
            if when.tzinfo is not None:
                when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
            first = self.db.query(cat.SQL_TIME_LSN, when.strftime("%Y-%m-%d %H:%M:%S.%f")[:23])[0][0]
            key = Key.before(first) if first is not None else Key.after(max_lsn or ZERO)
        stream = Stream(table, inst, key)
        if self.settings.snapshot != "none":  # never streamed: a snapshot first (snapshot = initial or when_needed)
            stream.snapshot = snap.requested("initial")
        stream.use(inst)
        return stream

    def instance_for(self, stream: Stream, who: Identity | None) -> cat.Instance:
        """The capture instance a checkpoint was written for; re-enabled or vanished instances are gaps."""
        table = stream.table
        if not table.instances:
            raise h.CommandFailed(f"change data capture is no longer enabled for {stream.label}: capture instance "
                                    f"{who.name if who else '?'} is gone, changes after LSN {stream.key.lsn.hex()} cannot be read",
                                    hint="re-enable CDC, then reset this stream's checkpoint (and re-snapshot the table)")
        if who is None:
            return table.instances[0]
        for inst in table.instances:
            if ident(inst).same(who):
                return inst
        same_name = [i for i in table.instances if i.name.lower() == who.name.lower()]
        if same_name:
            self.gap(stream, same_name[0], f"capture instance {who.name} of {stream.label} was disabled and re-enabled "
                                           f"(object_id {who.object_id} -> {same_name[0].object_id}): changes made while it was off are lost")
            return same_name[0]
        newer = [i for i in table.instances if i.create_date > who.create_date]
        if newer:  # the old instance was dropped; the newer one is safe only if it reaches back to the position
            self.ctx.log(f"warning: capture instance {who.name} of {stream.label} is gone; continuing with {newer[0].name}")
            return newer[0]
        self.gap(stream, table.instances[-1], f"capture instance {who.name} of {stream.label} is gone")
        return table.instances[-1]

    def gap(self, stream: Stream, inst: cat.Instance, why: str, low: bytes | None = None) -> None:
        low = low or inst.min_lsn or inst.start_lsn or ZERO
        text = f"{why}; lost range: LSN {stream.key.lsn.hex()} up to {dec(low).hex()} (capture instance {inst.name})"
        if self.settings.snapshot == "when_needed":  # a new snapshot from the instance's minimum covers what cleanup took
            self.ctx.log(f"warning: {stream.label}: {text}; taking a new snapshot (snapshot = when_needed)")
            stream.key = Key.before(low)
            stream.snapshot = snap.requested("when_needed")
            self.report(stream, force=True)
            return
        if self.settings.on_gap == "fail":
            raise h.CommandFailed(f"gap in {stream.label}: {text}",
                                    hint='re-snapshot the table and reset its checkpoint, or set on_gap = "skip" to accept the loss and continue')
        self.ctx.log(f"WARNING: skipping a gap in {stream.label} (on_gap = skip): {text}")
        stream.extra["last_gap"] = {"from": stream.key.lsn.hex(), "to": dec(low).hex(), "capture_instance": inst.name,
                                    "recorded_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        stream.key = Key.before(low)
        if stream.encoder is not None:
            stream.encoder.set_extra(stream.extra)
        self.report(stream, force=True)

    # --- passes ----------------------------------------------------------------------

    def run(self) -> None:
        # The page fetch runs on a helper thread while this one encodes: a short switch interval lets the
        # helper take the GIL back quickly when the driver returns (the default 5 ms would stall every page).
        sys.setswitchinterval(SWITCH_INTERVAL)
        attempt = failures = 0
        once_bound: bytes | None = None
        interval = self.settings.poll_min
        started = False
        while not self.ctx.stopping:
            try:
                if not started:
                    self.start()
                    started = True
                    if self.ctx.envelope.once:
                        once_bound = self.db.query(cat.SQL_MAX_LSN)[0][0] or ZERO
                progress, bound = self.one_pass(once_bound)
                attempt = 0
                failures = 0
            except h.CommandFailed:
                raise
            except Exception as exc:
                lost = is_pyodbc_error(exc) and is_connection_error(exc)
                if not lost:
                    failures += 1  # a driver may report a connection cut mid-row as a bad value: is the connection alive?
                    if failures > 2 or self.db.alive():
                        if is_pyodbc_error(exc):
                            raise h.CommandFailed(f"SQL Server error: {exc.args[-1] if exc.args else exc}") from None
                        raise
                attempt += 1
                self.ctx.log(f"connection lost ({exc.args[-1] if exc.args else exc}); reconnecting (attempt {attempt})")
                if attempt > 30:
                    raise h.CommandFailed(f"cannot reach SQL Server after {attempt} attempts: {exc}") from None
                self.db.reconnect(attempt, lambda: self.ctx.stopping)
                continue
            if once_bound is not None and (bound is None or bound >= once_bound) and not any(s.snapshot for s in self.streams):
                return
            interval = self.settings.poll_min if progress else min(self.settings.poll_max, interval * 2)
            self.sleep(interval * random.uniform(0.8, 1.0))
        self.db.close()

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.ctx.stopping and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))

    def one_pass(self, once_bound: bytes | None) -> tuple[bool, bytes | None]:
        max_lsn = self.db.query(cat.SQL_MAX_LSN)[0][0]
        states = cat.instance_states(self.db)
        if {(i.name.lower(), i.object_id, i.create_date) for i in states.values()} != self.known:
            self.refresh()
            states = cat.instance_states(self.db)
        snapshotted = False
        for stream in self.streams:  # snapshots first: each table's changes are streamed only after its snapshot
            if stream.snapshot is not None and not self.ctx.stopping:
                snapshotted |= self.take_snapshot(stream, states)
        if max_lsn is None:
            return snapshotted, None
        bound = max_lsn if once_bound is None else min(max_lsn, once_bound)
        if self.settings.max_transactions:
            low = min(s.key.lsn for s in self.streams)
            capped = self.db.query(cat.SQL_CAP_LSN, self.settings.max_transactions, low)[0][0]
            if capped is not None:
                bound = min(bound, capped)
        progress = snapshotted
        for stream in self.streams:
            if self.ctx.stopping:
                break
            if stream.snapshot is None:
                progress |= self.read_stream(stream, bound, states)
        return progress, bound

    def take_snapshot(self, stream: Stream, states: dict[str, cat.Instance]) -> bool:
        """Run (or resume) the stream's snapshot to its end, then hand over to its changes after L = stream.key."""
        assert stream.snapshot is not None
        state = states.get(stream.current.name.lower())
        low = state.min_lsn if state else None
        if "id" not in stream.snapshot:  # not started: L may still rise to the instance's minimum (nothing was sent from L yet)
            if low and low != ZERO and stream.key < Key.before(low):
                stream.key = Key.before(low)
            stream.snapshot = snap.fresh(str(stream.snapshot.get("requested") or "initial"), snap.approx_rows(self.db, stream.table))
            self.ctx.log(f"{stream.label}: snapshot ({stream.snapshot['reason']}) of ~{stream.snapshot['total']} rows at LSN {stream.key.lsn.hex()}, "
                         f"{self.settings.snapshot_chunk_size} rows per chunk")
        elif low and low != ZERO and low > stream.key.lsn:
            self.gap(stream, stream.current, "CDC cleanup deleted changes after the snapshot's start before they were read", low)
            return True  # when_needed restarted it; skip moved past the gap
        chunker = snap.Chunker(stream.table, stream.current, snap.key_columns(self.db, stream.table))
        isolation = "SNAPSHOT" if snap.snapshot_allowed(self.db) else "READ COMMITTED"
        self.ctx.log(f"{stream.label}: snapshot reads under {isolation} isolation"
                     + ("" if isolation == "SNAPSHOT" else " (ALLOW_SNAPSHOT_ISOLATION is off: a chunk's read waits for writers' locks)"))
        position = json.dumps(to_json(stream.key, ident(stream.current), stream.extra), separators=(",", ":"))[1:-1]
        reading = snap.TableSnapshot(self.db, chunker, stream.snapshot, stream.name, position, self.settings.snapshot_chunk_size,
                                     lambda data: h.write_all(1, data), lambda: self.ctx.stopping, snap.Progress(stream.label, self.ctx.log))
        self.db.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        try:
            done = reading.run()
        finally:
            stream.snapshot = reading.marker
            if isolation != "READ COMMITTED":
                self.db.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        if done:
            stream.snapshot = None
            self.report(stream, force=True)  # the hand-off: L without the marker, acknowledged after the last snapshot row
        return True

    def refresh(self) -> None:
        """Capture instances changed (schema change, disable, re-enable): map each stream again."""
        catalog = cat.load(self.db)
        self.remember(catalog)
        for stream in self.streams:
            table = catalog.tables.get((stream.table.schema.lower(), stream.table.name.lower()))
            stream.table = table if table is not None else cat.Table(stream.table.schema, stream.table.name, 0, False)
            found = [i for i in stream.table.instances if ident(i).same(ident(stream.current))]
            stream.use(found[0] if found else self.instance_for(stream, ident(stream.current)))
            if found:
                self.ctx.log(f"{stream.label}: capture instances now {', '.join(i.name for i in stream.table.instances)}")

    def read_stream(self, stream: Stream, bound: bytes, states: dict[str, cat.Instance]) -> bool:
        newer = [i for i in stream.table.instances if i.create_date > stream.current.create_date and i.start_lsn is not None]
        limit = min(bound, dec(newer[0].start_lsn)) if newer and newer[0].start_lsn else bound
        progress = self.drain(stream, limit, states)
        if stream.snapshot is not None:
            return True  # a gap asked for a new snapshot (snapshot = when_needed): the next pass takes it
        if newer and newer[0].start_lsn and bound >= dec(newer[0].start_lsn) and not self.ctx.stopping:
            old = stream.current
            stream.key = max(stream.key, Key.before(newer[0].start_lsn))  # the old instance is read up to the new one's start
            stream.use(newer[0])
            self.ctx.log(f"{stream.label}: switched from capture instance {old.name} to {newer[0].name} at LSN {newer[0].start_lsn.hex()}; "
                         f"{old.name} can be dropped: EXEC sys.sp_cdc_disable_table @source_schema = {cat.literal(stream.table.schema)}, "
                         f"@source_name = {cat.literal(stream.table.name)}, @capture_instance = {cat.literal(old.name)}")
            progress |= self.drain(stream, bound, states)
        if not self.ctx.stopping and stream.key < Key.after(bound):
            stream.key = Key.after(bound)  # idle advance: cleanup must never overtake a reader that is merely idle
        self.report(stream)
        return progress

    def report(self, stream: Stream, force: bool = False) -> None:
        if force or stream.reported != stream.key:
            h.write_all(1, p.dumps(p.position_message(stream.name, stream.position())))
            stream.reported = stream.key

    def check_gap(self, stream: Stream, min_lsn: bytes | None) -> None:
        if min_lsn is None or min_lsn == ZERO:
            self.refresh()
            return
        if min_lsn > stream.key.lsn:
            self.gap(stream, stream.current, "CDC cleanup deleted changes before they were read", min_lsn)

    def drain(self, stream: Stream, limit: bytes, states: dict[str, cat.Instance]) -> bool:
        """Page through one capture instance up to `limit`.

        Each page is read and then the instance's minimum LSN is read again; only when that
        check passes is the page encoded and written. The next page (and its own check) is
        fetched on a helper thread while this page is encoded and written, so the server's
        work overlaps the reader's: at most two pages are in memory, and the connection is
        used by one thread at a time (the helper hands it back before its page is looked at).
        """
        state = states.get(stream.current.name.lower())
        self.check_gap(stream, state.min_lsn if state else None)
        if stream.snapshot is not None or stream.key >= Key.after(limit):
            return False
        sql, times_sql = stream.current.page_sql(), stream.current.times_sql()
        name = stream.current.name
        size = self.settings.page_size

        def fetch(key: Key) -> Page:
            rows = self.db.query(sql, size, limit, *key.params())
            times = {}
            if rows:  # commit times once per transaction, not joined onto every change row
                first, last = rows[0][0], rows[-1][0]
                times = {r[0]: r[1] for r in self.db.query(times_sql, first, last, first, last)}
            return rows, times, self.db.query(SQL_MIN_ONE, name)[0][0]  # after the page, before it is emitted (#1)

        progress = False
        pending: Prefetch | None = Prefetch(fetch, stream.key)
        try:
            while pending is not None:
                rows, times, after_min = pending.get()
                pending = None
                before = stream.key  # the page was read from here
                self.check_gap(stream, after_min)
                if stream.snapshot is not None:
                    break  # when_needed: a new snapshot replaces this page
                if stream.key != before:  # a skipped gap moved the position: read again from there
                    pending = Prefetch(fetch, stream.key)
                    continue
                if self.ctx.stopping:
                    break
                full = len(rows) == size
                consumed = last_consumed(rows, full)
                if full and consumed is not None:
                    pending = Prefetch(fetch, consumed)
                assert stream.encoder is not None
                lines, last = stream.encoder.encode(rows, full, times)
                if full and last != consumed:
                    raise RuntimeError(f"internal error: page ends at {last}, next page was read from {consumed}")
                if lines and last is not None:
                    h.write_all(1, b"".join(lines))
                    stream.key = stream.reported = last
                    progress = True
        finally:
            if pending is not None:
                pending.wait()  # never leave the connection in use by the helper
        return progress


Page = tuple[list[Any], dict[bytes, Any], bytes | None]  # change rows, commit times by LSN, min LSN read afterwards


class Prefetch:
    """One call on a daemon thread; get() returns its result or raises its exception."""

    def __init__(self, fn: Callable[[Key], Page], key: Key):
        self.result: Page | None = None
        self.error: BaseException | None = None
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn, key), name="mssql-prefetch", daemon=True)
        self.thread.start()
        # Let the helper reach the driver (which releases the GIL) before this thread goes on encoding;
        # otherwise the query waits for the interpreter's switch interval (5 ms) on every page.
        self.running.wait()

    def _run(self, fn: Callable[[Key], Page], key: Key) -> None:
        try:
            self.running.set()
            self.result = fn(key)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self.error = exc

    def wait(self) -> None:
        while self.thread.is_alive():
            self.thread.join(0.5)

    def get(self) -> Page:
        self.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def last_consumed(rows: list[Any], full: bool) -> Key | None:
    """Key of the last row Encoder.encode consumes: a full page's trailing before-image waits for the next page."""
    n = len(rows)
    if full and n and rows[-1][2] == 3:
        n -= 1
    if not n:
        return None
    r = rows[n - 1]
    return Key(r[0], r[3], r[1], r[2])


def start_key(inst: cat.Instance, max_lsn: bytes | None) -> Key:
    """Where 'latest' starts: after the committed max LSN, or before the instance's first LSN if that is later."""
    first = inst.start_lsn or inst.min_lsn
    if first is not None and first != ZERO and (max_lsn is None or first > max_lsn):
        return Key.before(first)
    return Key.after(max_lsn or ZERO)


def is_pyodbc_error(exc: Exception) -> bool:
    try:
        import pyodbc
    except ImportError:
        return False
    return isinstance(exc, pyodbc.Error)
