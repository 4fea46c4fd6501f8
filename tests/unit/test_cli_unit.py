"""dstream.main in-process: version, providers, usage errors, durations, help text."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dstream
from providers import BUILTINS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() points the dstream logger at the current stderr; put it back for other tests."""
    logger = logging.getLogger("dstream")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = dstream.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "version")
    assert code == dstream.EXIT_OK == 0
    lines = out.splitlines()
    assert lines[0] == f"dstream {dstream.__version__} (provider protocol 1, Python {sys.version.split()[0]})"
    assert lines[1] == f"interpreter: CPython {platform.python_version()} on linux {platform.machine()} ({sys.executable})"
    assert lines[2].startswith("mssql-cdc: usable; ODBC drivers: ") and len(lines) == 3, lines
    assert err == ""


def test_version_matches_pyproject() -> None:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match and match.group(1) == dstream.__version__


def test_providers_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "providers")
    assert code == 0 and err == ""
    rows = [line.split(None, 2) for line in out.splitlines()]
    assert [row[0] for row in rows] == sorted(BUILTINS)
    assert {"files": "output", "generator": "input", "jsonl": "input"}.items() <= {row[0]: row[1] for row in rows}.items()
    assert {row[0]: (row[1], row[2]) for row in rows} == {name: (BUILTINS[name][1], BUILTINS[name][2]) for name in BUILTINS}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        (["version", "--bogus"], "unrecognized arguments: --bogus"),
        (["--bogus", "version"], "unrecognized arguments: --bogus"),
        ([], "VERB"),
        (["plan"], "TARGET"),
        (["state"], "SUBCOMMAND"),
        (["--log-level", "loud", "version"], "invalid choice: 'loud'"),
        (["plan", "task.hcl", "--lock-timeout", "soon"], "invalid duration 'soon'"),
        (["init", "task.hcl", "--lock-timeout=5 minutes"], "invalid duration"),
        (["run", "task.hcl", "--lock-timeout=-1s"], "invalid duration"),
    ],
    ids=["unknown-verb", "bad-flag", "bad-global-flag", "no-verb", "no-target", "no-state-subcommand", "bad-choice", "bad-duration", "bad-duration-words", "negative-duration"],
)
def test_usage_errors_exit_3_with_one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == dstream.EXIT_USAGE == 3
    assert out == ""
    assert_one_error_line(err, fragment, "dstream --help")


def test_usage_error_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--log-format", "json", "bogus")
    assert code == 3 and out == ""
    doc = json.loads(err)
    assert doc["level"] == "error" and "invalid choice: 'bogus'" in doc["message"]


def test_missing_task_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.hcl"
    code, out, err = run(capsys, "validate", str(missing))
    assert code == 3 and out == ""
    assert_one_error_line(err, f"task file {missing} not found")


def test_unknown_builtin_provider_verb(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "provider", "nope")
    assert code == 3
    assert_one_error_line(err, "unknown provider 'nope'", "files, generator, jsonl")


def test_internal_errors_become_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(args: argparse.Namespace, ctx: dstream.Context) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(dstream, "cmd_version", explode)
    code, _, err = run(capsys, "version")
    assert code == dstream.EXIT_ERROR == 1
    assert_one_error_line(err, "internal error: KeyError", "--log-level debug")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("7", 7.0), ("0s", 0.0), ("1.5s", 1.5), (" 2m ", 120.0), ("0.5h", 1800.0)],
)
def test_duration(text: str, seconds: float) -> None:
    assert dstream.duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5d", "-1s", "1 hour", "5mm", "1e3", "ms"])
def test_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        dstream.duration(text)


def test_lock_timeout_is_parsed_as_a_duration() -> None:
    args = dstream.build_parser().parse_args(["plan", "task.hcl", "--lock-timeout", "5m"])
    assert args.lock_timeout == 300.0
    assert dstream.build_parser().parse_args(["init", "task.hcl"]).lock_timeout == 0.0


def test_every_verb_has_help_text() -> None:
    assert set(dstream.VERBS) == set(dstream.HELP)
    for verb in dstream.VERBS:
        assert dstream.HELP[verb].strip(), verb


def test_every_verb_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [verb for verb in dstream.VERBS if not re.search(rf"`{re.escape(verb)}(`| )", readme)]
    assert missing == [], f"verbs not documented in README.md: {missing}"


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert dstream.main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb, text in dstream.HELP.items():
        assert re.search(rf"^\s+{verb}\s+{re.escape(text[:30])}", out, re.M), verb


def test_settings_come_from_the_environment_in_one_place() -> None:
    import dstream
    from state.errors import UsageError

    assert dstream.settings({}).timeouts.hello == 30.0 and dstream.settings({}).checkpoint_interval == 1.0
    got = dstream.settings({"DSTREAM_HELLO_TIMEOUT": "2", "DSTREAM_PROVIDER_TIMEOUT": "5m", "DSTREAM_STOP_GRACE": "250ms", "DSTREAM_CHECKPOINT_INTERVAL": "3s"})
    assert (got.timeouts.hello, got.timeouts.reply, got.timeouts.stop_grace, got.checkpoint_interval) == (2.0, 300.0, 0.25, 3.0)
    with pytest.raises(UsageError, match="DSTREAM_STOP_GRACE"):
        dstream.settings({"DSTREAM_STOP_GRACE": "soon"})
