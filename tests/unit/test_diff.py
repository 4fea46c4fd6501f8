"""providers/diff.py: desired vs actual vs state."""

from __future__ import annotations

import re
from typing import Any

import pytest

from providers.diff import Diff, SameKey, diff_resources, plain_equal

A = ("queue", "Persons")
B = ("queue", "Orders")
C = ("file", "Customers")


def change(action: str, key: tuple[str, str], before: Any, after: Any, replace_paths: list[str] | None = None) -> dict[str, Any]:
    return {"action": action, "resource": {"type": key[0], "name": key[1]}, "before": before, "after": after, "replace_paths": replace_paths or []}


def drift(key: tuple[str, str], before: Any, after: Any) -> dict[str, Any]:
    return {"resource": {"type": key[0], "name": key[1]}, "before": before, "after": after}


def test_create() -> None:
    want = {"path": "out/Persons.jsonl"}
    result = diff_resources({A: want}, {}, {})
    assert result.changes == [change("create", A, None, want)]
    assert result.drift == [] and result.unmanaged == []


def test_no_op_when_all_agree() -> None:
    attrs = {"path": "p", "ttl": 60}
    result = diff_resources({A: dict(attrs)}, {A: dict(attrs)}, {A: dict(attrs)})
    assert result == Diff()


def test_update_in_place() -> None:
    old, new = {"path": "p", "ttl": 60}, {"path": "p", "ttl": 120}
    result = diff_resources({A: new}, {A: old}, {A: old}, immutable=frozenset({"path"}))
    assert result.changes == [change("update", A, old, new)]
    assert [c["action"] for c in result.changes] == ["update"] * len(result.changes)
    assert result.drift == []


def test_replace_lists_only_the_immutable_attributes_that_changed() -> None:
    old = {"path": "old", "partitions": 1, "ttl": 60}
    new = {"path": "new", "partitions": 4, "ttl": 120}
    result = diff_resources({A: new}, {A: old}, {A: old}, immutable=frozenset({"path", "partitions", "unrelated"}))
    assert result.changes == [change("replace", A, old, new, ["partitions", "path"])]


def test_delete_what_state_owns_and_is_no_longer_wanted() -> None:
    have = {"path": "p"}
    result = diff_resources({}, {A: have}, {A: have})
    assert result.changes == [change("delete", A, have, None)]
    assert result.drift == []


def test_live_objects_not_in_state_and_not_desired_are_never_touched() -> None:
    result = diff_resources({}, {}, {A: {"path": "someone-elses"}})
    assert result == Diff()


def test_unmanaged_when_desired_exists_live_but_not_in_state() -> None:
    result = diff_resources({A: {"path": "p"}, B: {"path": "q"}}, {}, {A: {"path": "p"}})
    assert result.unmanaged == [A]
    assert result.changes == [change("create", B, None, {"path": "q"})]


def test_drift_deleted_and_still_wanted_recreates() -> None:
    attrs = {"path": "p"}
    result = diff_resources({A: attrs}, {A: attrs}, {})
    assert result.drift == [drift(A, attrs, None)]
    assert result.changes == [change("create", A, None, attrs)]


def test_drift_deleted_and_no_longer_wanted_is_only_drift() -> None:
    attrs = {"path": "p"}
    result = diff_resources({}, {A: attrs}, {})
    assert result.drift == [drift(A, attrs, None)]
    assert result.changes == []


def test_drift_changed_is_reported_and_set_back() -> None:
    recorded, live = {"path": "p", "ttl": 60}, {"path": "p", "ttl": 999}
    result = diff_resources({A: recorded}, {A: recorded}, {A: live}, immutable=frozenset({"path"}))
    assert result.drift == [drift(A, recorded, live)]
    assert result.changes == [change("update", A, live, recorded)]


def test_drift_changed_and_no_longer_wanted_deletes_what_is_live() -> None:
    recorded, live = {"path": "p", "ttl": 60}, {"path": "p", "ttl": 999}
    result = diff_resources({}, {A: recorded}, {A: live})
    assert result.drift == [drift(A, recorded, live)]
    assert result.changes == [change("delete", A, live, None)]


def test_no_refresh_takes_state_as_the_truth() -> None:
    recorded: dict[str, Any] = {"path": "p", "ttl": 60}
    desired: dict[tuple[str, str], dict[str, Any]] = {A: {"path": "p", "ttl": 120}, C: {"path": "c"}}
    result = diff_resources(desired, {A: recorded, B: {"path": "gone"}}, None)
    assert result.drift == []
    assert result.unmanaged == []
    assert result.changes == [
        change("create", C, None, {"path": "c"}),
        change("delete", B, {"path": "gone"}, None),
        change("update", A, recorded, {"path": "p", "ttl": 120}),
    ]


def test_changes_come_sorted_by_type_then_name() -> None:
    desired: dict[tuple[str, str], dict[str, Any]] = {("queue", "b"): {}, ("file", "z"): {}, ("queue", "a"): {}}
    names = [(c["resource"]["type"], c["resource"]["name"]) for c in diff_resources(desired, {}, {}).changes]
    assert names == [("file", "z"), ("queue", "a"), ("queue", "b")]


def seconds(value: Any) -> Any:
    if isinstance(value, str):
        match = re.fullmatch(r"PT(\d+)M", value)
        if match:
            return int(match.group(1)) * 60
        match = re.fullmatch(r"(\d+)s", value)
        if match:
            return int(match.group(1))
    return value


def durations_equal(attr: str, a: Any, b: Any) -> bool:
    return seconds(a) == seconds(b) if attr == "ttl" else plain_equal(attr, a, b)


def test_custom_equal_compares_durations_as_values() -> None:
    recorded, live, desired = {"ttl": "PT1M"}, {"ttl": "60s"}, {"ttl": "60s"}
    assert diff_resources({A: desired}, {A: recorded}, {A: live}, equal=durations_equal) == Diff()
    plain = diff_resources({A: desired}, {A: recorded}, {A: live})
    assert plain.drift == [drift(A, recorded, live)], "without the custom equal the spellings differ"
    longer = diff_resources({A: {"ttl": "PT2M"}}, {A: recorded}, {A: live}, equal=durations_equal)
    assert longer.changes == [change("update", A, live, {"ttl": "PT2M"})]


def test_custom_equal_is_asked_per_attribute() -> None:
    asked: list[tuple[str, Any, Any]] = []

    def spy(attr: str, a: Any, b: Any) -> bool:
        asked.append((attr, a, b))
        return True

    result = diff_resources({A: {"x": 1, "y": 2}}, {A: {"x": 0, "y": 0}}, {A: {"x": 0, "y": 0}}, equal=spy)
    assert result == Diff()
    assert ("x", 0, 1) in asked and ("y", 0, 2) in asked


def folded(key: tuple[str, str]) -> tuple[str, str]:
    return key[0], key[1].lower()


def test_keys_are_exact_by_default() -> None:
    attrs = {"path": "p"}
    result = diff_resources({("queue", "persons"): attrs}, {A: attrs}, {A: attrs})  # file names on Linux: two files
    assert result.changes == [change("delete", A, attrs, None), change("create", ("queue", "persons"), None, attrs)]


def test_normalised_keys_match_desired_state_and_live_and_name_what_state_owns() -> None:
    attrs = {"queue": "q"}
    result = diff_resources({("queue", "persons"): attrs}, {A: attrs}, {("queue", "PERSONS"): attrs}, normalise=folded)
    assert result == Diff()
    changed = diff_resources({("queue", "persons"): {"queue": "q", "ttl": 2}}, {A: attrs}, {("queue", "PERSONS"): attrs}, normalise=folded)
    assert changed.changes == [change("update", A, attrs, {"queue": "q", "ttl": 2})]  # the state's key: dstream updates what it owns


def test_normalised_keys_drift_delete_and_unmanaged() -> None:
    attrs = {"queue": "q"}
    assert diff_resources({}, {A: attrs}, {("queue", "persons"): attrs}, normalise=folded).changes == [change("delete", A, attrs, None)]
    gone = diff_resources({("queue", "persons"): attrs}, {A: attrs}, {}, normalise=folded)
    assert gone.drift == [drift(A, attrs, None)] and gone.changes == [change("create", A, None, attrs)]
    unmanaged = diff_resources({("queue", "persons"): attrs}, {}, {A: attrs}, normalise=folded)
    assert unmanaged.unmanaged == [("queue", "persons")] and unmanaged.changes == []


def test_two_keys_for_one_resource_are_refused() -> None:
    with pytest.raises(SameKey, match="'Persons' and 'persons'"):
        diff_resources({}, {A: {}, ("queue", "persons"): {}}, None, normalise=folded)
