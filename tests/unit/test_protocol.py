"""providers/protocol.py: envelopes, configs, data lines, the line reader and the strict parser of replies."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from providers import helper as h
from providers import protocol as p
from providers.helper import CommandFailed, Field, LineReader, parse_config
from providers.protocol import (
    LIFECYCLE_REPLY_TYPES,
    RUN_REPLY_TYPES,
    DataLine,
    Envelope,
    ProtocolError,
    parse_data_line,
    parse_reply,
)

# --- the command envelope ---------------------------------------------------------

FULL = {
    "protocol": 1, "command": "plan", "task": "local-demo", "role": "output",
    "config": {"directory": "out"},
    "streams": [{"name": "Persons", "table": "Persons", "schema": "dbo"}],
    "resources": [{"type": "file", "name": "Persons", "id": "out/P.jsonl", "attributes": {"path": "out/P.jsonl"}}],
    "checkpoints": {"Persons": {"offset": 5120}},
    "refresh": False, "once": True,
    "changes": [{"action": "create", "resource": {"type": "file", "name": "Persons"}, "before": None, "after": {"path": "x"}, "replace_paths": []}],
}


def test_parse_full_envelope() -> None:
    env = Envelope.parse(json.dumps(FULL))
    assert env.command == "plan" and env.protocol == 1
    assert (env.task, env.role) == ("local-demo", "output")
    assert env.config == {"directory": "out"}
    assert env.streams == tuple(FULL["streams"])  # type: ignore[arg-type]
    assert env.resources == tuple(FULL["resources"])  # type: ignore[arg-type]
    assert env.checkpoints == {"Persons": {"offset": 5120}}
    assert env.refresh is False and env.once is True
    assert env.changes == tuple(FULL["changes"])  # type: ignore[arg-type]


def test_parse_minimal_envelope_defaults() -> None:
    env = Envelope.parse(b'{"command":"validate"}')
    assert env == Envelope(command="validate", config={})
    assert env.refresh is True and env.once is False and env.changes is None and env.streams == () and env.checkpoints == {}


def test_bare_config_is_run() -> None:
    env = Envelope.parse(b'{"path":"data/changes.jsonl","tables":["Persons"]}')
    assert env.command == "run"
    assert env.config == {"path": "data/changes.jsonl", "tables": ["Persons"]}
    assert env.protocol == 1


def test_unknown_command() -> None:
    with pytest.raises(ProtocolError, match="unknown command 'apply'"):
        Envelope.parse('{"command":"apply","config":{}}')


@pytest.mark.parametrize("line", [b"not json", b"", b'{"command":', b"\xff\xfe"])
def test_non_json(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="stdin line 1 is not JSON"):
        Envelope.parse(line)


@pytest.mark.parametrize("line", [b"[1,2]", b'"run"', b"42", b"null"])
def test_non_object(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        Envelope.parse(line)


@pytest.mark.parametrize("protocol", [2, 99, "1", None])
def test_other_protocols_are_refused(protocol: Any) -> None:
    with pytest.raises(ProtocolError, match="protocol"):
        Envelope.parse(json.dumps({"protocol": protocol, "command": "plan", "config": {}}))


def test_config_must_be_an_object() -> None:
    with pytest.raises(ProtocolError, match="'config' must be an object"):
        Envelope.parse('{"command":"plan","config":["x"]}')


def test_to_json_parse_round_trip() -> None:
    env = Envelope.parse(json.dumps(FULL))
    text = env.to_json()
    assert "\n" not in text and ": " not in text and ", " not in text  # compact: one line, no spaces
    assert '"command":"plan"' in text  # what a shell provider greps for
    assert Envelope.parse(text) == env
    without_changes = Envelope(command="run", config={"a": "Zoë"}, task="t", role="input", once=True)
    assert "changes" not in json.loads(without_changes.to_json())
    assert Envelope.parse(without_changes.to_json()) == without_changes


def test_snapshot_envelope_carries_its_target_and_only_it() -> None:
    env = Envelope(command="snapshot", config={}, role="input", checkpoints={"Orders": {"lsn": "00"}}, target="dbo.Orders")
    text = env.to_json()
    assert json.loads(text)["target"] == "dbo.Orders"
    assert Envelope.parse(text) == env
    assert "target" not in json.loads(Envelope(command="plan", config={}).to_json())  # other commands' envelopes are unchanged


SNAPSHOTLESS_PROVIDER = """
import sys
from providers import helper as h

sys.exit(h.serve("old", "1", [], {"plan": lambda ctx: None}, role="input"))
"""


def test_a_helper_provider_without_a_snapshot_handler_answers_hello_and_nothing() -> None:
    """What dstream snapshot reads as "does not support on-demand snapshots": exit 0, hello, no checkpoint."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    result = subprocess.run([sys.executable, "-c", SNAPSHOTLESS_PROVIDER], input='{"command":"snapshot","config":{},"target":"dbo.Orders"}\n',
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["type"] for line in result.stdout.splitlines()] == ["hello"]


# --- messages and the writer --------------------------------------------------------


def test_message_builders_and_writer() -> None:
    buffer = io.BytesIO()
    writer = h.Writer(buffer)
    writer.send(p.hello("files", "1.0.0"))
    writer.send(p.checkpoint_message("Persons", {"offset": 10}), flush=False)
    writer.send(p.error_message("bad", hint="fix it", key="directroy"))
    writer.send(p.error_message("bare"))
    writer.raw(b'{"raw":true}\n')
    lines = buffer.getvalue().decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"type": "hello", "protocol": 1, "provider": "files", "version": "1.0.0"},
        {"type": "checkpoint", "stream": "Persons", "position": {"offset": 10}},
        {"type": "error", "message": "bad", "hint": "fix it", "key": "directroy"},
        {"type": "error", "message": "bare"},
        {"raw": True},
    ]
    assert p.dumps({"a": "Zoë"}) == '{"a":"Zoë"}\n'.encode()


def test_position_key_is_canonical() -> None:
    assert p.position_key({"b": 1, "a": [1, 2]}) == p.position_key({"a": [1, 2], "b": 1}) == '{"a":[1,2],"b":1}'


# --- configs --------------------------------------------------------------------------

FIELDS = [
    Field("directory", str, default="out", help="where files go"),
    Field("path", str, required=True, help="the file to read"),
    Field("count", int, default=1000),
    Field("ratio", float, default=0.5),
    Field("fsync", bool, default=True),
    Field("tables", list, default=None),
    Field("size", (int, float), default=1),
]


def failure(raw: dict[str, Any]) -> CommandFailed:
    with pytest.raises(CommandFailed) as caught:
        parse_config(FIELDS, raw)
    return caught.value


def test_parse_config_defaults() -> None:
    assert parse_config(FIELDS, {"path": "p"}) == {"directory": "out", "path": "p", "count": 1000, "ratio": 0.5, "fsync": True, "tables": None, "size": 1}


def test_parse_config_values_and_null_as_default() -> None:
    config = parse_config(FIELDS, {"path": "p", "count": 5, "ratio": 2, "fsync": False, "tables": ["A"], "directory": None, "size": 2.5})
    assert config == {"directory": "out", "path": "p", "count": 5, "ratio": 2.0, "fsync": False, "tables": ["A"], "size": 2.5}
    assert isinstance(config["ratio"], float)


def test_required_missing() -> None:
    exc = failure({})
    assert exc.message == "missing required config key 'path'"
    assert (exc.key, exc.hint) == ("path", "the file to read")
    assert failure({"path": None}).key == "path"


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({"count": "5"}, "count", "must be int, not str"),
        ({"directory": 3}, "directory", "must be str, not int"),
        ({"tables": "Persons"}, "tables", "must be list, not str"),
        ({"ratio": "0.5"}, "ratio", "must be float, not str"),
        ({"fsync": 1}, "fsync", "must be bool, not int"),
        ({"size": "big"}, "size", "must be int or float, not str"),
    ],
)
def test_wrong_type(raw: dict[str, Any], key: str, words: str) -> None:
    exc = failure({"path": "p", **raw})
    assert exc.key == key
    assert words in exc.message and f"'{key}'" in exc.message


@pytest.mark.parametrize("key", ["count", "ratio"])
def test_bool_is_not_a_number(key: str) -> None:
    exc = failure({"path": "p", key: True})
    assert exc.key == key and "must be a number, not True" in exc.message


def test_unknown_key_with_did_you_mean() -> None:
    exc = failure({"path": "p", "directroy": "x"})
    assert exc.message == "unknown config key 'directroy'"
    assert exc.hint == "did you mean 'directory'?"
    assert exc.key == "directroy"


def test_unknown_key_without_a_close_match_lists_valid_keys() -> None:
    exc = failure({"path": "p", "zzz": 1})
    assert exc.hint == "valid keys: count, directory, fsync, path, ratio, size, tables"


# --- data lines ----------------------------------------------------------------------


def test_change_with_stream() -> None:
    raw = json.dumps({"data": {"ID": 1}, "metadata": {"TableName": "Persons"}, "stream": "people", "position": {"offset": 42}}).encode()
    assert parse_data_line(raw, 5) == DataLine(5, raw, "people", {"offset": 42}, True)


def test_legacy_envelope_uses_table_name() -> None:
    raw = b'{"data":{"ID":1},"metadata":{"TableName":"Orders","OperationType":"Insert"}}'
    assert parse_data_line(raw, 2) == DataLine(2, raw, "Orders", None, True)


def test_metadata_only_change() -> None:
    raw = b'{"metadata":{"TableName":"Orders","OperationType":"Delete"}}'
    line = parse_data_line(raw, 3)
    assert (line.stream, line.is_change) == ("Orders", True)


def test_position_only_line() -> None:
    raw = b'{"type":"position","stream":"Orders","position":{"lsn":"0000002a000002400005"}}'
    assert parse_data_line(raw, 9) == DataLine(9, raw, "Orders", {"lsn": "0000002a000002400005"}, False)


@pytest.mark.parametrize("kind", ["hello", "warning"])
def test_hello_and_warning_are_ignored(kind: str) -> None:
    line = parse_data_line(json.dumps({"type": kind, "message": "x"}).encode(), 4)
    assert (line.stream, line.position, line.is_change) == (None, None, False)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"data": {"ID": 1}', "input line 7 is not valid JSON"),
        (b"garbage", "input line 7 is not valid JSON"),
        (b"[1]", "input line 7 is not a JSON object"),
        (b'{"type":"bogus"}', "input line 7 has unknown message type 'bogus'"),
        (b'{"type":"checkpoint","stream":"x","position":1}', "input line 7 has unknown message type 'checkpoint'"),
        (b'{"stream":"x","position":1}', "input line 7 is neither a change envelope nor a position"),
        (b'{"data":{"ID":1},"metadata":{}}', "input line 7 names no stream"),
    ],
)
def test_malformed_data_lines(raw: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_data_line(raw, 7)
    assert words in str(caught.value)


# --- LineReader over a pipe -----------------------------------------------------------


class Pipe:
    """An os.pipe whose ends are closed exactly once (fd numbers are reused)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.open = {self.r, self.w}
        self.lock = threading.Lock()

    def close(self, fd: int) -> None:
        with self.lock:
            if fd in self.open:
                self.open.discard(fd)
                os.close(fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    pair = Pipe()
    yield pair
    pair.close(pair.r)
    pair.close(pair.w)


def writer_thread(pair: Pipe, pieces: list[bytes]) -> threading.Thread:
    def run() -> None:
        for piece in pieces:
            _write_all(pair.w, piece)
        pair.close(pair.w)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_all(reader: LineReader) -> list[list[tuple[int, bytes]]]:
    return list(reader.batches())


def flat(batches: list[list[tuple[int, bytes]]]) -> list[tuple[int, bytes]]:
    return [line for batch in batches for line in batch]


def test_lines_split_across_chunk_boundaries(pipe: Pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h, "READ_CHUNK", 5)  # every line crosses several reads
    r = pipe.r
    data = b'{"a":1}\n{"bb":22}\n{"ccc":333}\n'
    thread = writer_thread(pipe, [data])
    batches = read_all(LineReader(r))
    thread.join(5)
    assert flat(batches) == [(1, b'{"a":1}'), (2, b'{"bb":22}'), (3, b'{"ccc":333}')]
    assert all(batch for batch in batches), "no empty batches"


def test_every_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"one\ntwo\n\nthree\nfour"
    expected = [(1, b"one"), (2, b"two"), (4, b"three"), (5, b"four")]
    for size in range(1, len(data) + 2):
        monkeypatch.setattr(h, "READ_CHUNK", size)
        r, w = os.pipe()
        _write_all(w, data)
        os.close(w)
        try:
            assert flat(read_all(LineReader(r))) == expected, f"chunk size {size}"
        finally:
            os.close(r)


def test_a_line_longer_than_read_chunk_comes_through_whole(pipe: Pipe) -> None:
    r = pipe.r
    big = b'{"data":"' + b"x" * (3 * h.READ_CHUNK + 17) + b'"}'
    thread = writer_thread(pipe, [b'{"first":1}\n', big + b"\n", b'{"after":2}\n'])
    lines = flat(read_all(LineReader(r)))
    thread.join(10)
    assert [n for n, _ in lines] == [1, 2, 3]
    assert lines[1][1] == big
    assert lines[2] == (3, b'{"after":2}')


def test_prefix_with_several_lines_and_a_partial_one(pipe: Pipe) -> None:
    r = pipe.r
    thread = writer_thread(pipe, [b':3}\n{"d":4}\n'])
    lines = flat(read_all(LineReader(r, first_lineno=2, prefix=b'{"a":1}\n{"b":2}\n{"c"')))
    thread.join(5)
    assert lines == [(2, b'{"a":1}'), (3, b'{"b":2}'), (4, b'{"c":3}'), (5, b'{"d":4}')]


def test_prefix_lines_do_not_wait_for_more_input(pipe: Pipe) -> None:
    """Complete lines already read with the envelope are handed over at once, not after the next write."""
    r = pipe.r
    reader = LineReader(r, first_lineno=2, prefix=b'{"a":1}\n{"b":2}\n')
    got: list[list[tuple[int, bytes]]] = []
    thread = threading.Thread(target=lambda: got.append(next(reader.batches())), daemon=True)
    thread.start()
    thread.join(1.0)
    first = list(got)
    pipe.close(pipe.w)  # unblock the reader in any case
    thread.join(5)
    assert first == [[(2, b'{"a":1}'), (3, b'{"b":2}')]], "prefix lines were held back until more input arrived"


def test_last_line_without_newline_at_eof(pipe: Pipe) -> None:
    r = pipe.r
    thread = writer_thread(pipe, [b'{"a":1}\n{"b":2}'])
    lines = flat(read_all(LineReader(r)))
    thread.join(5)
    assert lines == [(1, b'{"a":1}'), (2, b'{"b":2}')]


def test_blank_lines_are_skipped_but_numbered(pipe: Pipe) -> None:
    r = pipe.r
    thread = writer_thread(pipe, [b'\n{"a":1}\n\n   \n\t\n{"b":2}\n\n'])
    lines = flat(read_all(LineReader(r, first_lineno=2)))
    thread.join(5)
    assert lines == [(3, b'{"a":1}'), (7, b'{"b":2}')]


def test_empty_input_yields_nothing(pipe: Pipe) -> None:
    r = pipe.r
    pipe.close(pipe.w)
    assert read_all(LineReader(r)) == []


def test_more_ready(pipe: Pipe) -> None:
    r = pipe.r
    reader = LineReader(r)
    assert reader.more_ready() is False
    os.write(pipe.w, b"x\n")
    assert reader.more_ready() is True


def test_read_envelope_line(pipe: Pipe) -> None:
    r = pipe.r
    _write_all(pipe.w, b'{"command":"run"}\n{"data":1}\n{"da')
    pipe.close(pipe.w)
    line, rest = h.read_envelope_line(r)
    assert line == b'{"command":"run"}'
    assert rest == b'{"data":1}\n{"da'


def test_read_envelope_line_on_empty_stdin(pipe: Pipe) -> None:
    r = pipe.r
    pipe.close(pipe.w)
    with pytest.raises(ProtocolError, match="no command envelope"):
        h.read_envelope_line(r)


BUGGY_PROVIDER = """
import sys
from providers import helper as h

def plan(ctx):
    raise RuntimeError("boom in plan")

sys.exit(h.serve("buggy", "1", [], {"plan": plan}))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_in_a_handler_is_one_error_line_and_a_traceback_only_on_request(debug: bool) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DSTREAM_DEBUG"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if debug:
        env["DSTREAM_DEBUG"] = "1"
    result = subprocess.run([sys.executable, "-c", BUGGY_PROVIDER], input='{"command":"plan","config":{}}\n', env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["type"] == "hello"
    assert lines[-1]["type"] == "error" and "RuntimeError: boom in plan" in lines[-1]["message"]
    assert ("Traceback" in result.stderr) is debug


# --- the strict parser of provider replies -------------------------------------------------


VALID_REPLIES = [
    {"type": "hello", "protocol": 1, "provider": "x", "version": "1"},
    {"type": "streams", "streams": [{"name": "A"}]},
    {"type": "change", "action": "replace", "resource": {"type": "file", "name": "A"}, "before": {}, "after": {}, "replace_paths": ["path"]},
    {"type": "drift", "resource": {"type": "file", "name": "A"}, "before": {}, "after": None},
    {"type": "resource", "action": "created", "resource": {"type": "file", "name": "A", "id": "a", "attributes": {}}},
    {"type": "status", "resource": {"type": "file", "name": "A"}, "status": {"status": "present"}},
    {"type": "checkpoint", "stream": "A", "position": {"offset": 1}},
    {"type": "warning", "message": "careful"},
    {"type": "error", "message": "no", "hint": "try", "key": "path"},
]


@pytest.mark.parametrize("message", VALID_REPLIES, ids=lambda m: m["type"])
def test_every_valid_reply_parses(message: dict) -> None:
    assert parse_reply(json.dumps(message).encode()) == message


@pytest.mark.parametrize("line, problem", [
    (b"not json", "is not JSON"),
    (b"[1]", "is not a JSON object"),
    (b'{"type":"surprise"}', "unknown message type 'surprise'"),
    (b'{"type":"hello","protocol":"1"}', "protocol must be an integer"),
    (b'{"type":"streams","streams":[{"nom":"A"}]}', "streams must be a list of objects with a name"),
    (b'{"type":"change","action":"explode","resource":{"type":"f","name":"A"}}', "action must be one of"),
    (b'{"type":"change","action":"create","resource":"A"}', "resource must be an object with a type and a name"),
    (b'{"type":"resource","action":"created","resource":{"type":"f","name":"A","attributes":[1]}}', "must be objects or null"),
    (b'{"type":"status","resource":"x","status":{}}', "resource must be an object"),
    (b'{"type":"checkpoint","stream":"A","position":null}', "has no position"),
    (b'{"type":"checkpoint","position":{"i":1}}', "stream must be a non-empty string"),
    (b'{"type":"error","message":5}', "message must be a string"),
])
def test_invalid_replies_say_what_is_wrong(line: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_reply(line)


def test_run_replies_are_a_narrower_set() -> None:
    assert set(RUN_REPLY_TYPES) < set(LIFECYCLE_REPLY_TYPES)
    with pytest.raises(ProtocolError, match="unknown message type 'streams'"):
        parse_reply(b'{"type":"streams","streams":[]}', RUN_REPLY_TYPES)
