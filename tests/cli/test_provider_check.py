"""`dstream provider check` through the zipapp: one line per rule, exit 0 only without a FAIL.

Built-ins pass (the server ones with SKIPs, which are not passes), so do the
correct shell providers in tests/; each deliberately broken provider fails on
the rule it breaks, and only there (exit 5, one Error: line).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli._support import CLI_PROVIDERS, SHARED_PROVIDERS, describe, error_line

OUTCOMES = ("PASS", "FAIL", "SKIP")


def rules(stdout: str) -> dict[str, tuple[str, str]]:
    """rule -> (outcome, reason), from lines 'OUTCOME  rule  reason'; every stdout line is one."""
    found = {}
    for text in stdout.splitlines():
        outcome, rule, reason = (text.split(None, 2) + [""])[:3]
        assert outcome in OUTCOMES, f"not a rule line: {text!r}"
        found[rule] = (outcome, reason)
    return found


@pytest.mark.parametrize("name", ["jsonl", "generator", "files"])
def test_local_builtins_pass(dstream, name: str) -> None:
    result = dstream("provider", "check", name)
    assert result.returncode == 0, describe(result)
    found = rules(result.stdout)
    assert {"hello", "validate", "plan", "init", "status", "destroy", "legacy-mode", "apply", "sigterm"} <= set(found)
    skipped = ["snapshot", "no-secret-echo"] if name != "files" else ["no-secret-echo"]  # no secret key, no on-demand snapshot
    assert [r for r, (o, _) in found.items() if o != "PASS"] == skipped, describe(result)


@pytest.mark.parametrize("name", ["mssql-cdc", "asb-queues"])
def test_server_builtins_pass_offline_rules_and_skip_the_rest(dstream, name: str) -> None:
    result = dstream("provider", "check", name)
    assert result.returncode == 0, describe(result)
    found = rules(result.stdout)
    assert found["no-secret-echo"][0] == "PASS" and found["validate"][0] == "PASS"
    assert found["plan"] == ("SKIP", "needs a server: give --config")


@pytest.mark.parametrize(("path", "role"), [
    (SHARED_PROVIDERS / "shell_input.sh", "input"),
    (SHARED_PROVIDERS / "legacy_input.sh", "input"),
    (SHARED_PROVIDERS / "legacy_output.sh", "output"),
])
def test_correct_shell_providers_pass(dstream, path: Path, role: str) -> None:
    result = dstream("provider", "check", str(path), "--role", role)
    assert result.returncode == 0, describe(result)
    found = rules(result.stdout)
    if path.name.startswith("legacy"):
        assert found["hello"][0] == "SKIP" and "legacy provider" in found["hello"][1]
        assert found["legacy-mode"][0] == "PASS"
    elif role == "input":
        assert found["snapshot"][0] == "PASS", describe(result)  # shell_input.sh takes on-demand snapshots


@pytest.mark.parametrize(("name", "role", "rule"), [
    ("broken_status_log.sh", "input", "status"),  # a log line on stdout
    ("broken_echo_secret.sh", "input", "no-secret-echo"),
    ("broken_ack_unreceived.py", "output", "run-acks"),  # acks a position it never got
    ("broken_skip_malformed.py", "output", "malformed-line"),
    ("broken_snapshot_any_table.sh", "input", "snapshot"),  # answers a snapshot of a table it does not have
])
def test_a_broken_provider_fails_on_the_rule_it_breaks(dstream, name: str, role: str, rule: str) -> None:
    result = dstream("provider", "check", str(SHARED_PROVIDERS / name), "--role", role)
    error_line(result, 5, "fails 1 of", rule)
    found = rules(result.stdout)
    assert [r for r, (o, _) in found.items() if o == "FAIL"] == [rule], describe(result)


def test_crashing_and_garbage_providers_fail(dstream) -> None:
    for name in ("crash_after_hello.sh", "garbage_after_hello.sh"):
        result = dstream("provider", "check", str(CLI_PROVIDERS / name), "--role", "output")
        error_line(result, 5, "conformance rules")
        assert rules(result.stdout)["validate"][0] == "FAIL", describe(result)


def test_json_report_and_a_config_file(dstream, tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text('{"data":{"ID":1},"metadata":{"TableName":"T","OperationType":"Insert"}}\n')
    (tmp_path / "config.json").write_text(json.dumps({"path": "data.jsonl"}))
    result = dstream("provider", "check", "jsonl", "--config", "config.json", "--json")
    assert result.returncode == 0, describe(result)
    doc = json.loads(result.stdout)
    assert doc["provider"] == "jsonl" and doc["role"] == "input"
    assert {r["outcome"] for r in doc["results"]} <= {"PASS", "SKIP"} and len(doc["results"]) >= 14


def test_usage_errors(dstream, tmp_path: Path) -> None:
    error_line(dstream("provider", "check", "no-such-provider"), 3, "neither a built-in provider nor an executable")
    error_line(dstream("provider", "check"), 3, "needs PATH_OR_NAME")
    error_line(dstream("provider", "check", "files", "--role", "input"), 3, "output provider")
    (tmp_path / "bad.json").write_text("[1]")
    error_line(dstream("provider", "check", "files", "--config", "bad.json"), 3, "JSON object")
