"""state/model.py: the state file and the checkpoint document."""

from __future__ import annotations

import json
import re

import pytest

from state.errors import StateError
from state.model import Checkpoints, Resource, StateFile

PERSONS = Resource("output", "files", "file", "Persons", "out/Persons.jsonl", {"path": "out/Persons.jsonl", "bytes": 0})
ORDERS = Resource("output", "files", "file", "Orders", "out/Orders.jsonl", {"path": "out/Orders.jsonl"})
CURSOR = Resource("input", "jsonl", "cursor", "Zoë", "c1", {})


def sample() -> StateFile:
    state = StateFile("demo", "lineage-1", serial=7, dstream_version="0.1.0", streams=({"name": "Persons", "table": "Persons", "schema": "dbo"},))
    return state.put(PERSONS).put(CURSOR).put(ORDERS)


def test_new_state() -> None:
    one, two = StateFile.new("demo", "0.1.0"), StateFile.new("demo", "0.1.0")
    assert (one.task, one.serial, one.dstream_version, one.resources, one.streams) == ("demo", 0, "0.1.0", (), ())
    assert re.fullmatch(r"[0-9a-f-]{36}", one.lineage)
    assert one.lineage != two.lineage


def test_to_json_is_sorted_indented_and_round_trips() -> None:
    state = sample()
    data = state.to_json()
    assert data.endswith(b"\n")
    text = data.decode()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert list(doc) == sorted(doc)
    assert text.startswith('{\n  "dstream_version": "0.1.0",\n')
    assert "Zoë" in text  # not \u-escaped
    assert doc["version"] == 1 and doc["serial"] == 7 and doc["lineage"] == "lineage-1"
    assert StateFile.from_json(data, "x") == state


def test_resources_are_kept_sorted_and_unique() -> None:
    state = sample()
    assert [r.key for r in state.resources] == [("input", "cursor", "Zoë"), ("output", "file", "Orders"), ("output", "file", "Persons")]
    moved = Resource("output", "files", "file", "Persons", "elsewhere", {"path": "elsewhere"})
    updated = state.put(moved)
    assert len(updated.resources) == 3 and updated.resources[2] == moved
    assert state.resources[2] == PERSONS, "put returns a new state"
    assert [r.name for r in updated.remove(("output", "file", "Orders")).resources] == ["Zoë", "Persons"]
    assert updated.remove(("output", "file", "nope")) == updated
    assert [r.name for r in state.owned_by("output")] == ["Orders", "Persons"]
    assert state.owned_by("input") == [CURSOR]


def test_resource_address_and_provider_view() -> None:
    assert PERSONS.address == 'output.file["Persons"]'
    assert CURSOR.address == 'input.cursor["Zoë"]'
    assert PERSONS.key == ("output", "file", "Persons")
    assert PERSONS.for_provider() == {"type": "file", "name": "Persons", "id": "out/Persons.jsonl", "attributes": {"path": "out/Persons.jsonl", "bytes": 0}}


def doc_without(*keys: str) -> bytes:
    doc = json.loads(sample().to_json())
    for key in keys:
        del doc[key]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{not json", "is not valid JSON"),
        (b"", "is not valid JSON"),
        (b"[]", "has no version"),
        (doc_without("version"), "has no version"),
        (json.dumps({**json.loads(sample().to_json()), "version": 2}).encode(), "has version 2"),
        (json.dumps({**json.loads(sample().to_json()), "version": "1"}).encode(), "has version '1'"),
        (doc_without("lineage"), "lineage"),
        (doc_without("serial"), "serial"),
        (doc_without("task"), "task"),
        (json.dumps({**json.loads(sample().to_json()), "serial": "seven"}).encode(), "unusable"),
        (json.dumps({**json.loads(sample().to_json()), "resources": [{"role": "output"}]}).encode(), "unusable"),
    ],
    ids=["bad-json", "empty", "array", "no-version", "version-2", "version-string", "no-lineage", "no-serial", "no-task", "bad-serial", "bad-resource"],
)
def test_from_json_refuses_unusable_state(data: bytes, words: str) -> None:
    with pytest.raises(StateError) as caught:
        StateFile.from_json(data, ".dstream/demo.state.json")
    message = str(caught.value)
    assert ".dstream/demo.state.json" in message
    assert words in message
    if "version 2" not in message and "version '1'" not in message:
        assert "restore" in message
    else:
        assert "dstream release" in message


def test_from_json_defaults_for_optional_fields() -> None:
    state = StateFile.from_json(b'{"version": 1, "serial": 2, "lineage": "L", "task": "t"}', "x")
    assert state == StateFile("t", "L", 2, "", (), ())


def test_checkpoints_advance() -> None:
    empty = Checkpoints("demo")
    first = empty.advance({"Persons": {"offset": 10}, "Orders": {"offset": 3}})
    assert empty.positions == {} and empty.updated == {}, "advance returns a new document"
    second = first.advance({"Persons": {"offset": 20}})
    assert second.positions == {"Persons": {"offset": 20}, "Orders": {"offset": 3}}
    assert set(second.updated) == {"Persons", "Orders"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) for t in second.updated.values())
    assert second.advance({}) == second


def test_checkpoints_round_trip() -> None:
    checkpoints = Checkpoints("demo", {"Persons": {"lsn": "00ab", "seq": "01"}, "Orders": [1, 2]}, {"Persons": "2026-01-01T00:00:00Z"})
    data = checkpoints.to_json()
    doc = json.loads(data)
    assert doc == {"version": 1, "task": "demo", "streams": {
        "Orders": {"position": [1, 2], "updated_at": ""},
        "Persons": {"position": {"lsn": "00ab", "seq": "01"}, "updated_at": "2026-01-01T00:00:00Z"},
    }}
    back = Checkpoints.from_json(data, "x")
    assert back.positions == checkpoints.positions
    assert back.updated == {"Persons": "2026-01-01T00:00:00Z", "Orders": ""}


@pytest.mark.parametrize("data", [b"nope", b"[]", b'{"version": 2, "task": "t", "streams": {}}', b'{"version": 1, "task": "t"}',
                                  b'{"version": 1, "task": "t", "streams": {"A": {}}}'])
def test_checkpoints_refuse_unusable_documents(data: bytes) -> None:
    with pytest.raises(StateError, match="checkpoints at here are unusable"):
        Checkpoints.from_json(data, "here")
