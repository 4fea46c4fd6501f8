"""Reader.drain against a scripted connection: the next page is fetched while a page is encoded,
yet every page is written only after its own minimum-LSN check, and the connection is never
used by two threads at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from providers import helper as h
from providers import protocol as p
from providers.mssql_cdc import catalog as cat
from providers.mssql_cdc import reader as rd
from providers.mssql_cdc.config import FIELDS, settings
from providers.mssql_cdc.position import Key

LSN = [(0x2A00000100 + i).to_bytes(10, "big") for i in range(10)]


class Scripted:
    """Change rows of one instance; min_lsn(n) is what the check after the n-th page returns."""

    def __init__(self, rows: list[tuple[Any, ...]], min_lsn: Any = lambda n: LSN[0]):
        self.rows = sorted(rows, key=lambda r: (r[0], r[3], r[1], r[2]))
        self.min_lsn = min_lsn
        self.events: list[tuple[str, int]] = []
        self.pages = 0
        self.busy = threading.Lock()
        self.requested = 0
        self.changed = threading.Condition()

    def query(self, sql: str, *params: Any) -> list[Any]:
        assert self.busy.acquire(blocking=False), "the connection is used by two threads at once"
        try:
            if sql != rd.SQL_MIN_ONE and "lsn_time_mapping" not in sql:
                with self.changed:
                    self.requested += 1
                    self.changed.notify_all()
            time.sleep(0.002)  # widen the window in which a second user would be caught
            if sql == rd.SQL_MIN_ONE:
                self.events.append(("check", self.pages))
                return [(self.min_lsn(self.pages),)]
            if "lsn_time_mapping" in sql:  # commit times of the page's transactions
                low, high = params[2], params[3]
                return sorted({(r[0], f"2026-01-02T03:04:05.{LSN.index(r[0])}000000") for r in self.rows if low <= r[0] <= high})
            size, limit, lsn, _, _, cmd, _, seq, _, op = params
            after = Key(lsn, cmd, seq, op)
            self.pages += 1
            self.events.append(("page", self.pages))
            page = [r for r in self.rows if r[0] <= limit and Key(r[0], r[3], r[1], r[2]) > after]
            return page[:size]
        finally:
            self.busy.release()


def change(lsn: int, seq: int, op: int, ident: int, name: str = "x") -> tuple[Any, ...]:
    return (LSN[lsn], seq.to_bytes(10, "big"), op, 1 if op != 3 and op != 4 else 2, b"\x03", ident, name)


def make_reader(db: Scripted, monkeypatch: pytest.MonkeyPatch, page_size: int, on_gap: str = "fail") -> tuple[rd.Reader, rd.Stream, list[Any]]:
    config = {f.name: f.default for f in FIELDS}
    config.update(connection_string="DRIVER={FreeTDS};SERVER=x", tables=["T"], page_size=page_size, on_gap=on_gap)
    ctx = h.Context("mssql-cdc", p.Envelope("run", config, role="input", once=True), config, h.Writer(), b"")
    reader = rd.Reader(ctx, settings(config))
    reader.db = db  # type: ignore[assignment]
    inst = cat.Instance("dbo_T", 7, 5, LSN[0], "2026-01-01T00:00:00.0000000", LSN[0],
                        [cat.Column("ID", 1, "int", 0, 4), cat.Column("Name", 2, "nvarchar", 0, 100)])
    table = cat.Table("dbo", "T", 5, True, [inst])
    stream = rd.Stream(table, inst, Key.before(LSN[0]))
    stream.use(inst)
    written: list[Any] = []

    def write_all(fd: int, data: bytes) -> None:
        events = list(db.events)
        page = len(written) + 1  # one write per page
        with db.changed:  # is the next page read (or already read) while this one is written?
            # generous: on a loaded machine the prefetch thread may take a while to be scheduled (the last page waits it out)
            overlapped = db.changed.wait_for(lambda: db.requested > page, timeout=2)
        written.append((data, events, overlapped))

    monkeypatch.setattr(rd.h, "write_all", write_all)
    return reader, stream, written


def test_pages_are_prefetched_but_each_is_written_only_after_its_own_check(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [change(1, i, 2, i) for i in range(1, 8)]  # an insert of 7 rows
    rows += [r for i in range(1, 6) for r in (change(2, i, 3, i, "old"), change(2, i, 4, i, "new"))]  # 5 update pairs
    db = Scripted(rows)
    reader, stream, written = make_reader(db, monkeypatch, page_size=3)
    assert reader.drain(stream, LSN[9], {"dbo_t": stream.current}) is True
    lines = [line for data, *_ in written for line in data.decode().splitlines()]
    ops = [(('"Insert"' in x and "I") or ('"Update"' in x and "U"), x.split('"ID":')[1].split(",")[0]) for x in lines]
    assert ops == [("I", str(i)) for i in range(1, 8)] + [("U", str(i)) for i in range(1, 6)]
    assert [x.split('"CommitTime":')[1].split(",")[0].rstrip("}") for x in lines] == ['"2026-01-02T03:04:05.100"'] * 7 + ['"2026-01-02T03:04:05.200"'] * 5
    for k, (_, seen, _) in enumerate(written, 1):  # the k-th write came after the check that followed the k-th page
        assert ("check", k) in seen
    assert [overlapped for *_, overlapped in written] == [True] * (len(written) - 1) + [False]  # the next page was read meanwhile
    assert stream.key == Key(LSN[2], 2, (5).to_bytes(10, "big"), 4)


def test_cleanup_racing_a_later_page_fails_before_that_page_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [change(1, i, 2, i) for i in range(1, 4)] + [change(3, i, 2, 10 + i) for i in range(1, 4)]
    db = Scripted(rows, min_lsn=lambda n: LSN[0] if n < 2 else LSN[3])  # cleanup after the second page was read
    reader, stream, written = make_reader(db, monkeypatch, page_size=3)
    with pytest.raises(h.CommandFailed, match="gap in dbo.T"):
        reader.drain(stream, LSN[9], {"dbo_t": stream.current})
    lines = [line for data, *_ in written for line in data.decode().splitlines()]
    assert [x.split('"ID":')[1].split(",")[0] for x in lines] == ["1", "2", "3"]
    assert stream.key == Key(LSN[1], 1, (3).to_bytes(10, "big"), 2)
    assert not db.busy.locked()


def test_skipped_gap_rereads_from_the_new_low_water_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [change(1, i, 2, i) for i in range(1, 4)] + [change(4, i, 2, 10 + i) for i in range(1, 3)]
    db = Scripted(rows, min_lsn=lambda n: LSN[0] if n < 2 else LSN[4])
    reader, stream, written = make_reader(db, monkeypatch, page_size=3, on_gap="skip")
    assert reader.drain(stream, LSN[9], {"dbo_t": stream.current}) is True
    ids = [x.split('"ID":')[1].split(",")[0] for data, *_ in written for x in data.decode().splitlines() if '"data"' in x]
    assert ids == ["1", "2", "3", "11", "12"]
