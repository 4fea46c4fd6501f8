"""The parse cache (state/parse_cache.py): private, validated, and holding no value from the file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from providers import BUILTINS
from state import parse_cache
from state.config import _extract_templates, load_task

SECRET = "Sup3r-S3cret-literal"
TASK = f"""\
task "demo" {{
  input {{
    provider = "jsonl"
    config {{
      path = "data/changes.jsonl"
      password = "{SECRET}"
    }}
  }}
  output {{
    provider = "files"
    config {{
      directory = "Server=x;PWD={{hun;ter2}};x"
      label = "a \\"quoted\\" value"
      count = 3
    }}
  }}
}}
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache" / "hcl"
    monkeypatch.setenv("DSTREAM_CACHE_DIR", str(directory))
    return directory


def task_file(tmp_path: Path, text: str = TASK) -> Path:
    path = tmp_path / "task.hcl"
    path.write_text(text)
    return path


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


def test_a_cached_load_equals_a_fresh_one(tmp_path: Path, cache: Path) -> None:
    path = task_file(tmp_path)
    fresh = load_task(path, None, BUILTINS, {})
    assert len(entries(cache)) == 1
    cached = load_task(path, None, BUILTINS, {})
    assert cached == fresh and cached.lines == fresh.lines
    assert cached.output.config == {"directory": "Server=x;PWD={hun;ter2};x", "label": 'a "quoted" value', "count": 3}


def test_no_value_of_the_file_is_stored(tmp_path: Path, cache: Path) -> None:
    load_task(task_file(tmp_path), None, BUILTINS, {})
    (entry,) = entries(cache)
    raw = entry.read_text()
    for value in (SECRET, "hun;ter2", "data/changes.jsonl", "quoted"):
        assert value not in raw, f"{value!r} is in the cache entry"


def test_cache_files_are_private(tmp_path: Path, cache: Path) -> None:
    load_task(task_file(tmp_path), None, BUILTINS, {})
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    (entry,) = entries(cache)
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600


def forge(cache: Path, path: Path, doc: object) -> None:
    text, _ = _extract_templates(path.read_text(), path)
    (entry,) = entries(cache)
    stored = json.loads(entry.read_text())
    stored["doc"] = doc
    entry.write_text(json.dumps(stored))
    assert parse_cache.load(text) is None, "a forged entry must not be used"


def test_a_forged_entry_is_not_trusted(tmp_path: Path, cache: Path) -> None:
    path = task_file(tmp_path)
    fresh = load_task(path, None, BUILTINS, {})
    text, _ = _extract_templates(path.read_text(), path)
    doc, _ = parse_cache.load(text) or ({}, {})
    doc["task"][0]["demo"]["output"][0] = {"provider_path": "/bin/sh", "config": [{}]}
    forge(cache, path, doc)
    assert load_task(path, None, BUILTINS, {}) == fresh


@pytest.mark.parametrize("doc", [[], {"task": 5}, {"task": [{"demo": {"input": [{"provider": {"$literal": [0, 99999]}}]}}]}, "x"])
def test_a_malformed_entry_is_a_miss(tmp_path: Path, cache: Path, doc: object) -> None:
    path = task_file(tmp_path)
    fresh = load_task(path, None, BUILTINS, {})
    (entry,) = entries(cache)
    stored = json.loads(entry.read_text())
    stored["doc"] = doc
    entry.write_text(json.dumps(stored))
    assert load_task(path, None, BUILTINS, {}) == fresh


def test_a_directory_of_another_user_is_not_used(tmp_path: Path, cache: Path) -> None:
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, os.geteuid() + 4242, -1)  # the tests may run as root; elsewhere this needs no privilege to fail
    load_task(task_file(tmp_path), None, BUILTINS, {})
    assert entries(cache) == []


def test_a_world_readable_entry_is_not_read(tmp_path: Path, cache: Path) -> None:
    path = task_file(tmp_path)
    load_task(path, None, BUILTINS, {})
    (entry,) = entries(cache)
    entry.chmod(0o644)
    text, _ = _extract_templates(path.read_text(), path)
    assert parse_cache.load(text) is None


def test_a_planted_symlink_is_neither_read_nor_written_through(tmp_path: Path, cache: Path) -> None:
    path = task_file(tmp_path)
    load_task(path, None, BUILTINS, {})
    (entry,) = entries(cache)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    entry.unlink()
    entry.symlink_to(victim)
    load_task(path, None, BUILTINS, {})
    assert victim.read_text() == "keep me"
    assert not entry.is_symlink(), "the symlink is replaced, not written through"


def test_an_old_world_readable_default_cache_is_tightened_and_emptied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSTREAM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    old = tmp_path / "xdg" / "dstream" / "hcl"
    old.mkdir(parents=True)
    old.chmod(0o755)
    leaked = old / ("0" * 64 + ".json")
    leaked.write_text(json.dumps({"doc": {"password": SECRET}}))
    load_task(task_file(tmp_path), None, BUILTINS, {})
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o700
    assert not leaked.exists(), "entries of older versions held values"
    assert all(SECRET not in p.read_text() for p in old.iterdir())


def test_entries_are_pruned(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_cache, "MAX_ENTRIES", 3)
    for n in range(5):
        load_task(task_file(tmp_path, TASK.replace("count = 3", f"count = {n}")), None, BUILTINS, {})
    assert len(entries(cache)) == 3
