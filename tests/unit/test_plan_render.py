"""Plans (state/plan.py) and their rendering (state/render.py) against hand-written golden files."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from state.errors import StalePlanError, StateError
from state.model import StateFile
from state.plan import Change, Drift, Plan, change_from_message, config_digest, drift_from_message
from state.render import plan_json, plan_text

GOLDEN = Path(__file__).resolve().parent / "golden"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def base(**fields: object) -> Plan:
    return replace(Plan(task="demo", lineage="lineage-1", serial=3, config_digest="digest-1", refreshed=True), **fields)  # type: ignore[arg-type]


def out(type_: str, name: str, action: str, before: dict | None = None, after: dict | None = None, paths: tuple[str, ...] = (), reason: str = "") -> Change:  # type: ignore[type-arg]
    return Change("output", "files", type_, name, action, before, after, paths, reason)


SCENARIOS: dict[str, Plan] = {
    "no_changes": base(),
    "create": base(
        warnings=("table dbo.Orders has no primary key",),
        changes=(
            out("queue", "Orders", "create", after={"name": "Orders_cdc_events", "max_size_mb": 1024}),
            out("queue", "Persons", "create", after={"name": "Persons_cdc_events", "max_size_mb": 1024}),
        ),
    ),
    "update": base(changes=(
        out("queue", "Orders", "update",
            before={"lock_duration": "PT1M", "max_size_mb": 1024, "name": "Orders_cdc_events"},
            after={"lock_duration": "PT5M", "max_size_mb": 2048, "name": "Orders_cdc_events"}),
    )),
    "replace": base(changes=(
        out("file", "Persons", "replace", before={"path": "out/Persons.jsonl"}, after={"path": "out/Persons_cdc_events.jsonl"},
            paths=("path",), reason="file_template changed"),
    )),
    "delete": base(changes=(out("file", "Orders", "delete", before={"path": "out/Zoë.jsonl", "size": None}),)),
    "drift": base(
        drift=(
            Drift("output", "files", "file", "Customers", {"path": "out/Customers_cdc_events.jsonl"}, None),
            Drift("output", "files", "queue", "Orders", {"lock_duration": "PT1M", "name": "Orders_cdc_events"},
                  {"lock_duration": "PT2M", "name": "Orders_cdc_events"}),
        ),
        changes=(
            out("file", "Customers", "create", after={"path": "out/Customers_cdc_events.jsonl"}),
            out("queue", "Orders", "update", before={"lock_duration": "PT2M", "name": "Orders_cdc_events"},
                after={"lock_duration": "PT1M", "name": "Orders_cdc_events"}),
        ),
    ),
    "drift_only": base(drift=(Drift("output", "files", "file", "Customers", {"path": "out/Customers_cdc_events.jsonl"}, None),)),
    "adopt": base(changes=(out("file", "Persons", "adopt", after={"path": "out/Persons_cdc_events.jsonl"}),)),
}


# --- golden text ------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_plan_text_matches_golden(scenario: str) -> None:
    expected = (GOLDEN / f"{scenario}.txt").read_text(encoding="utf-8")
    actual = plan_text(SCENARIOS[scenario], colour=False)
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden", "rendered"))
    assert actual == expected, f"\n{diff}"


def test_every_golden_file_has_a_scenario() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == sorted(SCENARIOS)


def test_colour_adds_ansi_codes_and_nothing_else() -> None:
    for plan in SCENARIOS.values():
        plain, coloured = plan_text(plan, colour=False), plan_text(plan, colour=True)
        assert "\x1b[" not in plain
        assert "\x1b[" in coloured
        assert ANSI.sub("", coloured) == plain


def test_colour_codes_by_action() -> None:
    coloured = plan_text(SCENARIOS["drift"], colour=True)
    assert "\x1b[32m+\x1b[0m resource" in coloured  # green create
    assert "\x1b[33m~\x1b[0m resource" in coloured  # yellow update
    assert "\x1b[1mPlan: \x1b[0m" in coloured
    replaced = plan_text(SCENARIOS["replace"], colour=True)
    assert "\x1b[31m-/+\x1b[0m" in replaced and "\x1b[31m # forces replacement\x1b[0m" in replaced


# --- JSON --------------------------------------------------------------------------


def test_plan_json_is_parseable_and_complete() -> None:
    doc = json.loads(plan_json(SCENARIOS["drift"]))
    assert doc["format_version"] == "1"
    assert doc["task"] == "demo" and doc["state"] == {"lineage": "lineage-1", "serial": 3}
    assert [c["address"] for c in doc["resource_changes"]] == ['output.file["Customers"]', 'output.queue["Orders"]']
    assert [c["action"] for c in doc["resource_changes"]] == ["create", "update"]
    assert doc["resource_changes"][0]["resource"] == {"type": "file", "name": "Customers"}
    assert doc["resource_drift"][0]["after"] is None
    assert doc["summary"] == {"add": 1, "change": 1, "destroy": 0, "adopt": 0}
    assert doc["refreshed"] is True


def test_plan_json_keeps_non_ascii() -> None:
    assert '"out/Zoë.jsonl"' in plan_json(SCENARIOS["delete"])


# --- Plan as data ----------------------------------------------------------------------


def test_summary_counts_a_replace_as_add_and_destroy() -> None:
    plan = base(changes=(
        out("f", "a", "create", after={}), out("f", "b", "create", after={}), out("f", "c", "update", {}, {}),
        out("f", "d", "replace", {}, {}, ("path",)), out("f", "e", "delete", {}), out("f", "g", "delete", {}), out("f", "h", "adopt", after={}),
    ))
    assert plan.summary() == {"add": 3, "change": 1, "destroy": 3, "adopt": 1}
    assert plan.has_changes
    assert not base().has_changes and base().summary() == {"add": 0, "change": 0, "destroy": 0, "adopt": 0}


def test_for_role() -> None:
    mine = Change("input", "jsonl", "cursor", "x", "create", None, {})
    plan = base(changes=(out("f", "a", "create", after={}), mine))
    assert plan.for_role("input") == [mine]
    assert [c.name for c in plan.for_role("output")] == ["a"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_as_dict_from_dict_round_trip(scenario: str) -> None:
    plan = replace(SCENARIOS[scenario], streams=({"name": "Persons", "table": "Persons", "schema": "dbo"},), legacy=("input",))
    assert Plan.from_dict(plan.as_dict(), "x") == plan
    assert Plan.from_dict(json.loads(plan_json(plan)), "x") == plan


def test_from_dict_refuses_other_documents() -> None:
    doc = SCENARIOS["create"].as_dict()
    with pytest.raises(StateError, match="plan.json is not a dstream plan"):
        Plan.from_dict({**doc, "format_version": "2"}, "plan.json")
    broken = dict(doc)
    del broken["state"]
    with pytest.raises(StateError, match="not a dstream plan"):
        Plan.from_dict(broken, "plan.json")
    with pytest.raises(StateError):
        Plan.from_dict({**doc, "resource_changes": [{"action": "create"}]}, "plan.json")


def state(lineage: str = "lineage-1", serial: int = 3) -> StateFile:
    return StateFile(task="demo", lineage=lineage, serial=serial)


def test_check_fresh_accepts_the_state_it_was_made_from() -> None:
    SCENARIOS["create"].check_fresh("demo", state(), "digest-1")


@pytest.mark.parametrize(
    ("task", "current", "digest", "words"),
    [
        ("other", state(), "digest-1", "'demo', not 'other'"),
        ("demo", state(lineage="lineage-2"), "digest-1", "lineage"),
        ("demo", state(serial=4), "digest-1", "serial moved from 3 to 4"),
        ("demo", state(serial=2), "digest-1", "serial moved from 3 to 2"),
        ("demo", state(), "digest-2", "configuration changed"),
    ],
    ids=["task", "lineage", "serial-ahead", "serial-behind", "config"],
)
def test_check_fresh_refuses_a_stale_plan(task: str, current: StateFile, digest: str, words: str) -> None:
    with pytest.raises(StalePlanError) as caught:
        SCENARIOS["create"].check_fresh(task, current, digest)
    assert words in str(caught.value)
    assert isinstance(caught.value, StateError)


def test_change_and_drift_from_messages() -> None:
    message = {"type": "change", "action": "replace", "resource": {"type": "file", "name": "P"}, "before": {"path": "a"}, "after": {"path": "b"},
               "replace_paths": ["path"], "reason": "moved"}
    change = change_from_message("output", "files", message)
    assert change == Change("output", "files", "file", "P", "replace", {"path": "a"}, {"path": "b"}, ("path",), "moved")
    assert change.address == 'output.file["P"]'
    assert change.for_provider() == {"action": "replace", "resource": {"type": "file", "name": "P"}, "before": {"path": "a"}, "after": {"path": "b"}, "replace_paths": ["path"]}
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        change_from_message("output", "files", {**message, "action": "explode"})
    drift = drift_from_message("input", "jsonl", {"resource": {"type": "cursor", "name": "x"}, "before": {"a": 1}, "after": None})
    assert drift == Drift("input", "jsonl", "cursor", "x", {"a": 1}, None)
    assert drift.address == 'input.cursor["x"]'


def test_config_digest_depends_on_content_only() -> None:
    one = config_digest({"input": {"path": "a", "tables": ["x"]}, "output": {"directory": "out"}})
    same = config_digest({"output": {"directory": "out"}, "input": {"tables": ["x"], "path": "a"}})
    other = config_digest({"input": {"path": "b", "tables": ["x"]}, "output": {"directory": "out"}})
    assert one == same != other
    assert re.fullmatch(r"[0-9a-f]{64}", one)
