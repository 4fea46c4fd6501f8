"""Issue 8 through the built zipapp: names, typed settings, the parse cache, state directories."""

from __future__ import annotations

import os
from pathlib import Path

from ._support import error_line, files_output, generator_input, write_task

SECRET = "Literal-S3cret-in-the-file"


def test_a_task_name_that_escapes_the_state_directory_is_a_usage_error(dstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path, "../../escape", generator_input(3), files_output())
    error_line(dstream("init", "task.hcl"), 3, "task.hcl:1", "invalid task name")
    assert not (tmp_path.parent / "escape.state.json").exists() and not (tmp_path / ".dstream").exists()


def test_a_backend_path_that_is_a_number_is_a_usage_error(dstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = write_task(tmp_path, "demo", generator_input(3), files_output())
    task.write_text(task.read_text() + 'backend "local" {\n  path = 5\n}\n')
    error_line(dstream("plan", "task.hcl"), 3, "task.hcl:", "path must be a string")


def test_the_parse_cache_holds_no_secret_and_is_private(dstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    task = write_task(tmp_path, "demo", generator_input(3, f'      api_token = "{SECRET}"\n'), files_output())
    env = {"DSTREAM_CACHE_DIR": str(cache)}
    for _ in range(2):  # the generator may refuse the key: the file is parsed (and cached) before that
        assert "Traceback" not in dstream("validate", task.name, env=env).stderr
    entries = list(cache.iterdir())
    assert entries, "the cache was used"
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"
    for entry in entries:
        assert oct(os.stat(entry).st_mode & 0o777) == "0o600"
        assert SECRET not in entry.read_text()


def test_a_world_writable_state_directory_is_refused(dstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path, "demo", generator_input(3), files_output())
    (tmp_path / ".dstream").mkdir()
    (tmp_path / ".dstream").chmod(0o777)
    error_line(dstream("init", "task.hcl"), 1, "other users can write", "chmod go-w")
    assert list((tmp_path / ".dstream").iterdir()) == []
