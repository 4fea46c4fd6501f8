"""Change rows of one capture instance -> envelope lines (pairs 3+4 become one Update)."""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from providers import helper as h
from providers.mssql_cdc.catalog import Instance
from providers.mssql_cdc.position import Key
from providers.mssql_cdc.values import Formatter, _bool, _int, _str, formatter, is_lob

OPS = {1: "Delete", 2: "Insert", 4: "Update"}
VALUES_AT = 5  # page rows: lsn, seqval, operation, command_id, update_mask, captured columns...


def js(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def compile_obj(keys: list[str], fmts: list[Formatter], at: int = VALUES_AT) -> Callable[[Any], str]:
    """A function row -> '{"col":value,...}' over the captured columns (from index `at` on), unrolled
    for this column list: one f-string instead of a loop per row, with the commonest formatters
    inlined for the value types pyodbc returns (anything else goes through the formatter). Only
    indexes and the generated names k<i>/f<i> enter the code; column names and formatters are
    bound as default arguments."""
    parts = []
    for i, f in enumerate(fmts):
        v = f"(v := row[{at + i}])"
        if f is _str:
            value = f'"null" if {v} is None else esc(v) if v.__class__ is str else f{i}(v)'
        elif f is _int:
            value = f'"null" if {v} is None else str(v) if v.__class__ is int else f{i}(v)'
        elif f is _bool:
            value = f'"null" if {v} is None else "true" if v else "false"'
        else:
            value = f'"null" if {v} is None else f{i}(v)'
        parts.append(f"{{k{i}}}{{{value}}}")
    args = "".join(f", k{i}=k{i}, f{i}=f{i}" for i in range(len(keys)))
    body = ",".join(parts)
    code = f"def obj(row, esc=esc{args}):\n    return f'{{{{{body}}}}}'\n"
    scope: dict[str, Any] = {"esc": encode_basestring}
    scope.update({f"k{i}": k for i, k in enumerate(keys)})
    scope.update({f"f{i}": f for i, f in enumerate(fmts)})
    exec(compile(code, "<mssql-cdc row encoder>", "exec"), scope)  # noqa: S102 - generated from indexes only
    fn: Callable[[Any], str] = scope["obj"]
    return fn


class Encoder:
    def __init__(self, stream: str, schema: str, table: str, inst: Instance, extra: dict[str, Any] | None = None):
        self.inst = inst
        self.keys = [js(c.name) + ":" for c in inst.columns]
        self.fmts = [formatter(c.type, c.scale) for c in inst.columns]
        self.cols = list(zip(self.keys, self.fmts, strict=True))
        self.names = [c.name for c in inst.columns]
        self.ordinals = [c.ordinal for c in inst.columns]
        self.lobs = [i for i, c in enumerate(inst.columns) if is_lob(c.type, c.max_length)]
        self.meta_head = f'{{"TableName":{js(table)},"Schema":{js(schema)},"CaptureInstance":{js(inst.name)},"OperationType":"'
        self.tail = f',"stream":{js(stream)},"position":{{'
        self.obj = compile_obj(self.keys, self.fmts)
        self.set_extra(extra or {})

    def set_extra(self, extra: dict[str, Any]) -> None:
        """Identity (and a recorded gap) carried by every position of this stream."""
        ident = f',"capture_instance":{js(self.inst.name)},"object_id":{self.inst.object_id},"create_date":{js(self.inst.create_date)}'
        for k, v in extra.items():
            ident += f",{js(k)}:{json.dumps(v, separators=(',', ':'))}"
        self.ident = ident + "}}\n"

    def line(self, row: Any, when: str, before: Any = None) -> bytes:
        lsn, seq, op, cmd = row[0].hex(), row[1].hex(), row[2], row[3]
        more = ""
        if before is not None:
            more = ',"UpdatedColumns":' + json.dumps(self.updated(row[4]), ensure_ascii=False)
        if self.lobs:
            missing = self.unavailable(row, before)
            if missing:
                more += ',"UnavailableColumns":' + json.dumps(missing, ensure_ascii=False)
        data = self.obj(row) if before is None else self.obj(row) + ',"before":' + self.obj(before)
        return (f'{{"data":{data},"metadata":{self.meta_head}{OPS[op]}","OperationID":{op},"LSN":"{lsn}","Seq":"{seq}",'
                f'"CommandID":{cmd},"CommitTime":{when}{more}}}'
                f'{self.tail}"lsn":"{lsn}","command_id":{cmd},"seqval":"{seq}","operation":{op}{self.ident}').encode()

    def updated(self, mask: bytes | None) -> list[str]:
        if not mask:
            return []
        bits = int.from_bytes(mask, "big")
        return [n for n, o in zip(self.names, self.ordinals, strict=True) if bits >> (o - 1) & 1]

    def unavailable(self, row: Any, before: Any) -> list[str]:
        """Large values SQL Server did not log: NULL in a before-image, or NULL and unchanged in an after-image."""
        out = []
        bits = int.from_bytes(row[4] or b"", "big")
        for i in self.lobs:
            if before is not None and before[VALUES_AT + i] is None:
                out.append(f"before.{self.names[i]}")
            if row[2] == 4 and row[VALUES_AT + i] is None and not bits >> (self.ordinals[i] - 1) & 1:
                out.append(self.names[i])
        return out

    def encode(self, rows: list[Any], full: bool, times: dict[bytes, Any] | None = None) -> tuple[list[bytes], Key | None]:
        """Lines for a page and the key of the last change consumed. A trailing before-image of
        a full page is left for the next page, so an update pair is never split. `times` maps a
        commit LSN to lsn_time_mapping.tran_end_time (as text); a missing one is null."""
        commit: dict[bytes, str] = {lsn: "null" if t is None else f'"{t[:23]}"' for lsn, t in (times or {}).items()}
        out: list[bytes] = []
        last = None
        i, n = 0, len(rows)
        while i < n:
            r = rows[i]
            op = r[2]
            if op == 3:
                if i + 1 >= n:
                    if full:
                        break
                    raise self.broken(r, "an update before-image (operation 3) without its after-image")
                a = rows[i + 1]
                if a[2] != 4 or a[0] != r[0] or a[1] != r[1] or a[3] != r[3]:
                    raise self.broken(r, f"an update before-image followed by operation {a[2]} at seqval {a[1].hex()}")
                out.append(self.line(a, commit.get(a[0], "null"), r))
                last = a
                i += 2
            elif op in (1, 2):
                out.append(self.line(r, commit.get(r[0], "null")))
                last = r
                i += 1
            else:
                raise self.broken(r, f"operation {op} without a before-image" if op == 4 else f"unknown operation {op}")
        return out, (Key(last[0], last[3], last[1], last[2]) if last is not None else None)

    def broken(self, row: Any, what: str) -> h.CommandFailed:
        return h.CommandFailed(f"capture instance {self.inst.name} has {what} at LSN {row[0].hex()}; refusing to guess",
                                 hint="this is not how SQL Server writes change tables; report it with the change table's rows")
