"""The conformance kit (host/check.py) against real provider processes started from the sources.

Each deliberately broken provider in tests/providers fails exactly the rule it
breaks; the built-ins and the correct shell providers fail none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host import check
from host.process import ProviderProcess
from providers import BUILTINS, ENVIRONMENT

PROVIDERS = Path(__file__).resolve().parents[1] / "providers"


def builtin(name: str, work: Path) -> check.Subject:
    module, role, _ = BUILTINS[name]
    return check.builtin_subject(name, ProviderProcess.builtin(f"{role}:{name}", module, work, ENVIRONMENT.get(name, ())), role, work, None)


def external(name: str, role: str, work: Path) -> check.Subject:
    path = PROVIDERS / name
    return check.external_subject(path, ProviderProcess.external(f"{role}:{name}", path, work), role, {})


def outcomes(subject: check.Subject) -> dict[str, str]:
    return {r.rule: r.outcome for r in check.check(subject)}


def failed(subject: check.Subject) -> list[str]:
    return [rule for rule, outcome in outcomes(subject).items() if outcome == check.FAIL]


@pytest.mark.parametrize("name", ["jsonl", "generator", "files"])
def test_local_builtins_pass_every_rule(name: str, tmp_path: Path) -> None:
    results = outcomes(builtin(name, tmp_path))
    assert check.FAIL not in results.values(), results
    skipped = {rule for rule, outcome in results.items() if outcome == check.SKIP}
    # they have no secret key, and the inputs take no on-demand snapshot; everything else runs
    assert skipped == {"no-secret-echo"} | ({"snapshot"} if name != "files" else set()), results


@pytest.mark.parametrize("name", ["mssql-cdc", "asb-queues"])
def test_server_builtins_skip_what_needs_a_server(name: str, tmp_path: Path) -> None:
    results = check.check(builtin(name, tmp_path))
    assert check.FAIL not in {r.outcome for r in results}, results
    ran = {r.rule for r in results if r.outcome == check.PASS}
    assert ran == {"hello", "validate", "unknown-command", "unknown-key", "no-secret-echo"}, results
    assert all(r.reason == check.NEEDS_SERVER for r in results if r.outcome == check.SKIP)


def test_shell_input_passes_every_rule(tmp_path: Path) -> None:
    results = outcomes(external("shell_input.sh", "input", tmp_path))
    assert check.FAIL not in results.values(), results
    assert results["snapshot"] == check.PASS, results  # it takes on-demand snapshots: the rule ran in full


def test_reasons_never_quote_a_secret_value(tmp_path: Path) -> None:
    subject = external("shell_input.sh", "input", tmp_path)
    plain = {r.rule: r.reason for r in check.check(subject)}
    assert "Shell" in plain["snapshot"], plain  # the reason quotes the stream it snapshotted ...
    secret = check.Subject(**{**subject.__dict__, "secret_needles": ("Shell",)})
    masked = {r.rule: r.reason for r in check.check(secret)}
    assert not any("Shell" in reason for reason in masked.values()) and "***" in masked["snapshot"], masked  # ... unless that is a secret


def test_an_input_without_snapshots_is_skipped_not_failed(tmp_path: Path) -> None:
    # broken_status_log.sh refuses the snapshot command as unknown; jsonl (the helper) answers hello and nothing
    for subject in (external("broken_status_log.sh", "input", tmp_path), builtin("jsonl", tmp_path)):
        result = next(r for r in check.check(subject) if r.rule == "snapshot")
        assert result.outcome == check.SKIP and "snapshot" in result.reason, result


@pytest.mark.parametrize(("name", "role"), [("legacy_input.sh", "input"), ("legacy_output.sh", "output")])
def test_legacy_providers_pass_the_legacy_rules(name: str, role: str, tmp_path: Path) -> None:
    results = check.check(external(name, role, tmp_path))
    assert check.FAIL not in {r.outcome for r in results}, results
    assert next(r for r in results if r.rule == "hello").reason == check.LEGACY
    assert {"legacy-mode", "no-secret-echo"} <= {r.rule for r in results if r.outcome == check.PASS}


@pytest.mark.parametrize(("name", "role", "rule"), [
    ("broken_status_log.sh", "input", "status"),
    ("broken_ignores_sigterm.sh", "input", "sigterm"),
    ("broken_echo_secret.sh", "input", "no-secret-echo"),
    ("broken_ack_unreceived.py", "output", "run-acks"),
    ("broken_skip_malformed.py", "output", "malformed-line"),
    ("broken_snapshot_any_table.sh", "input", "snapshot"),
])
def test_a_broken_provider_fails_the_rule_it_breaks_and_no_other(name: str, role: str, rule: str, tmp_path: Path) -> None:
    assert failed(external(name, role, tmp_path)) == [rule]


def test_without_a_role_an_input_is_told_by_its_streams(tmp_path: Path) -> None:
    path = PROVIDERS / "shell_input.sh"
    assert check.external_subject(path, ProviderProcess.external("x", path, tmp_path), None, {}).role == "input"
    path = PROVIDERS / "broken_skip_malformed.py"
    assert check.external_subject(path, ProviderProcess.external("x", path, tmp_path), None, {}).role == "output"


# --- the judging functions, on lines alone ------------------------------------------------


def test_reply_shapes() -> None:
    good = json.dumps({"type": "resource", "action": "created", "resource": {"type": "file", "name": "A", "attributes": {}}}).encode()
    assert check.reply_problem(2, good, check.SHAPES) is None
    assert "type 'surprise'" in (check.reply_problem(2, b'{"type":"surprise"}', check.SHAPES) or "")
    assert "not JSON" in (check.reply_problem(3, b"hello there", check.SHAPES) or "")
    assert "has no position" in (check.reply_problem(2, b'{"type":"checkpoint","stream":"A","position":null}', check.SHAPES) or "")
    assert "streams must be a list" in (check.reply_problem(2, b'{"type":"streams","streams":[{"table":"A"}]}', check.SHAPES) or "")


def test_data_lines_need_stream_and_position_unless_legacy() -> None:
    legacy_line = b'{"data":{},"metadata":{"TableName":"A"}}'
    assert check.data_problem(1, legacy_line, legacy=True) is None
    assert "without stream and position" in (check.data_problem(1, legacy_line, legacy=False) or "")
    assert "only data and position" in (check.data_problem(1, b'{"type":"hello"}', legacy=False) or "")


def test_acks_of_unknown_streams_unreceived_positions_and_going_back_are_refused() -> None:
    sent = {"A": ['{"i":1}', '{"i":2}']}

    def problem(*acks: dict[str, object]) -> str | None:
        stdout = b"".join(json.dumps({"type": "checkpoint", **a}).encode() + b"\n" for a in acks)
        return check.read_acks(check.Exchange(0, stdout, ""), sent).problem

    assert problem({"stream": "A", "position": {"i": 1}}, {"stream": "A", "position": {"i": 2}}) is None
    assert "never given" in (problem({"stream": "B", "position": {"i": 1}}) or "")
    assert "never received" in (problem({"stream": "A", "position": {"i": 3}}) or "")
    assert "back at" in (problem({"stream": "A", "position": {"i": 2}}, {"stream": "A", "position": {"i": 1}}) or "")


def test_secret_needles_include_connection_string_parts() -> None:
    needles = check.secret_needles(["Server=x;PWD=hunter2hunter2"])
    assert needles == ("Server=x;PWD=hunter2hunter2", "hunter2hunter2")
