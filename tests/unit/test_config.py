"""Task files (state/config.py): templates, strict keys, file:line errors, task selection."""

from __future__ import annotations

import os
import re
import stat
import textwrap
from pathlib import Path

import pytest

from providers import BUILTINS
from state.backend import open_backend
from state.config import BackendSpec, find_task_file, load_task
from state.errors import TaskFileError, UsageError

INPUT = """\
  input {
    provider = "jsonl"
    config {
      path = "data/changes.jsonl"
    }
  }
"""
OUTPUT = """\
  output {
    provider = "files"
    config {
      directory = "out"
    }
  }
"""


def task_block(name: str = "demo", input: str = INPUT, output: str = OUTPUT, extra: str = "") -> str:
    return f'task "{name}" {{\n{input}{output}{extra}}}\n'


def write(tmp_path: Path, text: str, name: str = "task.hcl") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line of the n-th line holding `fragment` (computed from the fixture, not the code)."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line]
    assert len(hits) >= occurrence, f"{fragment!r} not in fixture"
    return hits[occurrence - 1]


def load(path: Path, name: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_task(path, name, BUILTINS, {} if env is None else env)


def error(path: Path, name: str | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(TaskFileError) as caught:
        load(path, name, env)
    assert isinstance(caught.value, UsageError)  # exit code 3
    return str(caught.value)


# --- a valid file ----------------------------------------------------------------


def test_valid_file(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(extra='  type = "providers"\n') + 'backend "local" {\n  path = "state-dir"\n}\n')
    task = load(path)
    assert task.name == "demo"
    assert task.file == path.resolve()
    assert task.directory == tmp_path.resolve()
    assert (task.input.role, task.input.name, task.input.executable) == ("input", "jsonl", None)
    assert task.input.config == {"path": "data/changes.jsonl"}
    assert task.input.line == line_of(path, "input {")
    assert (task.output.role, task.output.name) == ("output", "files")
    assert task.output.config == {"directory": "out"}
    assert task.output.line == line_of(path, "output {")
    assert task.provider("input") is task.input and task.provider("output") is task.output
    assert task.backend == BackendSpec("local", {"path": "state-dir"}, line_of(path, 'backend "local"'))
    assert task.where("output", "config", "directory") == f"{path.resolve().parent / path.name}:{line_of(path, 'directory =')}"


def test_defaults_without_config_type_or_backend(tmp_path: Path) -> None:
    path = write(tmp_path, 'task "t" {\n  input {\n    provider = "generator"\n  }\n  output {\n    provider = "files"\n  }\n}\n')
    task = load(path)
    assert task.input.config == {} and task.output.config == {}
    assert task.backend.kind == "local" and task.backend.settings == {}


def test_config_values_keep_their_types(tmp_path: Path) -> None:
    text = task_block(input='  input {\n    provider = "generator"\n    config {\n      count = 5\n      tables = ["A", "B"]\n      ratio = 0.5\n    }\n  }\n',
                      output='  output {\n    provider = "files"\n    config {\n      fsync = false\n    }\n  }\n')
    task = load(write(tmp_path, text))
    assert task.input.config == {"count": 5, "tables": ["A", "B"], "ratio": 0.5}
    assert task.output.config == {"fsync": False}


def test_wrong_task_type(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(extra='  type = "sql"\n'))
    message = error(path)
    assert f"{path}:{line_of(path, 'type =')}:" in message
    assert "'sql'" in message and '"providers"' in message


# --- templates --------------------------------------------------------------------


def output_with(directory_value: str) -> str:
    return f'  output {{\n    provider = "files"\n    config {{\n      directory = "{directory_value}"\n    }}\n  }}\n'


@pytest.mark.parametrize("template", ['{{ env "OUT_DIR" }}', '{{ env \\"OUT_DIR\\" }}', '{{env "OUT_DIR"}}', '{{  env  \\"OUT_DIR\\"  }}'])
def test_env_template_forms(tmp_path: Path, template: str) -> None:
    task = load(write(tmp_path, task_block(output=output_with(template))), env={"OUT_DIR": "from-env"})
    assert task.output.config["directory"] == "from-env"


@pytest.mark.parametrize("template", ['{{ env "OUT_DIR" | default "fallback" }}', '{{ env \\"OUT_DIR\\" | default \\"fallback\\" }}'])
def test_default_used_only_when_unset(tmp_path: Path, template: str) -> None:
    path = write(tmp_path, task_block(output=output_with(template)))
    assert load(path, env={}).output.config["directory"] == "fallback"
    assert load(path, env={"OUT_DIR": "set"}).output.config["directory"] == "set"
    assert load(path, env={"OUT_DIR": ""}).output.config["directory"] == "", "an empty but set variable is used as it is"


def test_default_with_escaped_backslash(tmp_path: Path) -> None:
    # in the file: default "C:\\tmp" inside an HCL string, i.e. one backslash
    path = write(tmp_path, task_block(output=output_with('{{ env "NOPE" | default "C:\\\\tmp" }}')))
    assert load(path).output.config["directory"] == "C:\\tmp"


def test_template_inside_a_longer_string(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output=output_with('{{ env "ROOT" }}/out-{{ env "SUFFIX" | default "x" }}')))
    assert load(path, env={"ROOT": "/srv"}).output.config["directory"] == "/srv/out-x"


@pytest.mark.parametrize("value", ['quote"inside', "back\\slash", "${interpolation}", 'all "of\\ ${them} }}', "Endpoint=sb://x/;SharedAccessKey=abc==", "%{ if true }x%{ endif }",
                                   '{{ env "OTHER" }}', "__dstream_tpl_0__", "line\nbreak"])
def test_values_are_substituted_verbatim(tmp_path: Path, value: str) -> None:
    """Values can never break or inject HCL or another template: they arrive byte for byte."""
    path = write(tmp_path, task_block(output=output_with('{{ env "VALUE" }}')))
    task = load(path, env={"VALUE": value, "OTHER": "not this"})
    assert task.output.config["directory"] == value


def test_templates_in_list_values_and_backend(tmp_path: Path) -> None:
    text = task_block(input='  input {\n    provider = "jsonl"\n    config {\n      tables = ["{{ env "T1" }}", "B"]\n    }\n  }\n')
    text += 'backend "local" {\n  path = "{{ env "STATE_DIR" }}"\n}\n'
    task = load(write(tmp_path, text), env={"T1": "Persons", "STATE_DIR": "/var/lib/dstream"})
    assert task.input.config["tables"] == ["Persons", "B"]
    assert task.backend.settings == {"path": "/var/lib/dstream"}


def test_unset_variable_names_it_and_its_line(tmp_path: Path) -> None:
    output = '  output {\n    provider = "files"\n    config {\n      directory = "{{ env "SET_ONE" }}"\n      file_template = "{{ env "MISSING_VAR" }}"\n    }\n  }\n'
    path = write(tmp_path, task_block(output=output))
    message = error(path, env={"SET_ONE": "x"})
    assert "MISSING_VAR" in message
    assert "SET_ONE" not in message
    assert message.startswith(f"{path}:{line_of(path, 'MISSING_VAR')}:")
    assert "default" in message  # the hint shows how to give one


def test_unset_variable_in_another_task_does_not_fail(tmp_path: Path) -> None:
    other = task_block("other", output=output_with('{{ env "ONLY_FOR_OTHER" }}'))
    path = write(tmp_path, task_block("mine") + other)
    task = load(path, "mine")
    assert task.name == "mine" and task.output.config == {"directory": "out"}
    assert "ONLY_FOR_OTHER" in error(path, "other")


def test_unset_variable_in_a_comment_does_not_fail(tmp_path: Path) -> None:
    path = write(tmp_path, '# directory = "{{ env "IN_A_COMMENT" }}"\n' + task_block())
    assert load(path).output.config == {"directory": "out"}


@pytest.mark.parametrize("template", ["{{ foo }}", '{{ env "A" | upper }}', "{{ env A }}", '{{ default "x" }}', '{{ env "A" | default x }}'])
def test_unsupported_template(tmp_path: Path, template: str) -> None:
    path = write(tmp_path, task_block(output=output_with(template)))
    message = error(path, env={"A": "a"})
    assert f"unsupported template {template}" in message
    assert message.startswith(f"{path}:{line_of(path, template)}:")
    assert '{{ env "NAME" }}' in message


# --- HCL syntax ---------------------------------------------------------------------


def test_syntax_error_has_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output='  output {\n    provider = = "files"\n  }\n'))
    message = error(path)
    line = line_of(path, "= =")
    column = path.read_text().splitlines()[line - 1].index("= =") + 3  # the second '=', 1-based
    assert message.startswith(f"{path}:{line}:{column}: HCL syntax error: expected a value"), message


def test_syntax_error_column_after_a_template_is_the_files_column(tmp_path: Path) -> None:
    """Templates are swapped for placeholders before parsing; columns must still be those of the file."""
    path = write(tmp_path, task_block(output='  output {\n    provider = "files"\n    config {\n      directory = "{{ env \\"OUT\\" | default \\"some/where\\" }}" ]\n    }\n  }\n'))
    message = error(path, env={"OUT": "x"})
    line = line_of(path, '" ]')
    column = path.read_text().splitlines()[line - 1].index("]") + 1
    assert re.match(rf"{re.escape(str(path))}:{line}:(\d+):", message), message
    assert message.startswith(f"{path}:{line}:{column}:"), message


def test_unexpected_end_of_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'task "demo" {\n' + INPUT)
    message = error(path)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: HCL syntax error: unexpected end of file", message), message


def test_missing_file_and_no_task_block(tmp_path: Path) -> None:
    assert "not found" in error(tmp_path / "nope.hcl")
    message = error(write(tmp_path, 'backend "local" {\n}\n'))
    assert "no task block" in message


# --- unknown keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "typo", "suggestion", "where"),
    [
        (task_block() + "tsak = 1\n", "tsak", "task", "the top level"),
        (task_block() + 'backand "local" {\n  path = "x"\n}\n', "backand", "backend", "the top level"),
        (task_block(extra='  typ = "providers"\n'), "typ", "type", 'task "demo"'),
        (task_block(extra="  outptu {\n  }\n"), "outptu", "output", 'task "demo"'),
        (task_block(extra='  inptu "x" {\n  }\n'), "inptu", "input", 'task "demo"'),
        (task_block(input='  input {\n    provder = "jsonl"\n  }\n'), "provder", "provider", "the input block"),
        (task_block(input='  input {\n    provider = "jsonl"\n    confg {\n    }\n  }\n'), "confg", "config", "the input block"),
        (task_block(output='  output {\n    provider_pth = "./x"\n  }\n'), "provider_pth", "provider_path", "the output block"),
        (task_block() + 'backend "local" {\n  pth = "x"\n}\n', "pth", "path", 'backend "local"'),
    ],
    ids=["top-attribute", "top-block", "task-attribute", "task-block", "task-labelled-block", "input-attribute", "input-block", "output-attribute", "backend"],
)
def test_unknown_key_suggests_the_closest(tmp_path: Path, text: str, typo: str, suggestion: str, where: str) -> None:
    path = write(tmp_path, text)
    message = error(path)
    assert message.startswith(f"{path}:{line_of(path, typo)}: unknown key '{typo}' in {where}"), message
    assert f"did you mean '{suggestion}'?" in message


def test_unknown_key_without_a_close_match_lists_the_allowed(tmp_path: Path) -> None:
    message = error(write(tmp_path, task_block(extra="  zzzzzz = 1\n")))
    assert "unknown key 'zzzzzz'" in message
    assert "type, input, output" in message


# --- duplicates ------------------------------------------------------------------------


def test_duplicate_attribute_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output='  output {\n    provider = "files"\n    config {\n      directory = "a"\n      directory = "b"\n    }\n  }\n'))
    message = error(path)
    first, second = line_of(path, 'directory = "a"'), line_of(path, 'directory = "b"')
    assert message.startswith(f"{path}:{second}: duplicate attribute")
    assert f"first at line {first}" in message
    assert "directory" in message


def test_duplicate_top_level_backend_attribute(tmp_path: Path) -> None:
    path = write(tmp_path, task_block() + 'backend "local" {\n  path = "a"\n  path = "b"\n}\n')
    message = error(path)
    first, second = line_of(path, 'path = "a"'), line_of(path, 'path = "b"')
    assert f":{second}: duplicate attribute" in message and f"first at line {first}" in message


def test_duplicate_task_names(tmp_path: Path) -> None:
    path = write(tmp_path, task_block("same") + task_block("same"))
    message = error(path)
    first, second = line_of(path, 'task "same"'), line_of(path, 'task "same"', 2)
    assert message.startswith(f"{path}:{second}: duplicate block")
    assert "same" in message and f"first at line {first}" in message


def test_two_input_blocks(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(input=INPUT + INPUT))
    message = error(path)
    assert message.startswith(f"{path}:{line_of(path, 'input {', 2)}: duplicate block")
    assert "input" in message and f"first at line {line_of(path, 'input {')}" in message


def test_missing_output_block(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output=""))
    message = error(path)
    line = line_of(path, 'task "demo"')
    assert message.startswith(f"{path}:{line}: ")
    assert "has no output block" in message


def test_output_as_an_attribute(tmp_path: Path) -> None:
    assert "must be a block" in error(write(tmp_path, task_block(output='  output = "files"\n')))


# --- providers -----------------------------------------------------------------------------


def test_provider_and_provider_path_together(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output='  output {\n    provider = "files"\n    provider_path = "./x"\n  }\n'))
    message = error(path)
    assert message.startswith(f"{path}:{line_of(path, 'output {')}:")
    assert "exactly one of provider or provider_path" in message


def test_neither_provider_nor_provider_path(tmp_path: Path) -> None:
    assert "exactly one of provider or provider_path" in error(write(tmp_path, task_block(output="  output {\n  }\n")))


def test_unknown_builtin_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output='  output {\n    provider = "file"\n  }\n'))
    message = error(path)
    line = line_of(path, 'provider = "file"')
    assert message.startswith(f"{path}:{line}: unknown provider 'file'")
    assert "did you mean 'files'?" in message


def test_unknown_builtin_without_a_close_match_lists_them(tmp_path: Path) -> None:
    message = error(write(tmp_path, task_block(input='  input {\n    provider = "postgres-wal"\n  }\n')))
    assert "unknown provider 'postgres-wal'" in message
    assert ", ".join(sorted(BUILTINS)) in message and "provider_path" in message


@pytest.mark.parametrize(("role", "name", "wrong"), [("input", "files", "output"), ("output", "jsonl", "input"), ("output", "generator", "input")])
def test_provider_in_the_wrong_role(tmp_path: Path, role: str, name: str, wrong: str) -> None:
    other_input = "generator" if name == "jsonl" else "jsonl"
    blocks = {"input": f'  input {{\n    provider = "{other_input}"\n  }}\n', "output": '  output {\n    provider = "files"\n  }\n'}
    blocks[role] = f'  {role} {{\n    provider = "{name}"\n  }}\n'
    path = write(tmp_path, task_block(**blocks))
    message = error(path)
    line = line_of(path, f'provider = "{name}"')
    assert message.startswith(f"{path}:{line}:")
    assert f"provider '{name}' is an {wrong} provider, not an {role} provider" in message


def make_executable(path: Path, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def test_provider_path_is_relative_to_the_task_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = make_executable(tmp_path / "conf" / "bin" / "my-output")
    write(tmp_path / "conf", task_block(output='  output {\n    provider_path = "bin/my-output"\n  }\n'))
    monkeypatch.chdir(tmp_path)  # elsewhere: must not matter
    task = load(Path("conf/task.hcl"))
    assert task.output.executable == exe.resolve()
    assert task.output.name == "bin/my-output"
    assert task.output.config == {}


def test_provider_path_missing(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output='  output {\n    provider_path = "./nope.sh"\n  }\n'))
    message = error(path)
    assert message.startswith(f"{path}:{line_of(path, 'provider_path')}:")
    assert "./nope.sh not found" in message and str(tmp_path / "nope.sh") in message


def test_provider_path_not_executable(tmp_path: Path) -> None:
    exe = make_executable(tmp_path / "out.sh", executable=False)
    assert not exe.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    path = write(tmp_path, task_block(output='  output {\n    provider_path = "out.sh"\n  }\n'))
    message = error(path)
    assert message.startswith(f"{path}:{line_of(path, 'provider_path')}:")
    assert "is not executable" in message
    assert f"chmod +x {exe.resolve()}" in message


def test_provider_path_directory_is_not_a_provider(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    assert "not found" in error(write(tmp_path, task_block(output='  output {\n    provider_path = "adir"\n  }\n')))


# --- several tasks ---------------------------------------------------------------------------


def test_several_tasks_need_a_name(tmp_path: Path) -> None:
    path = write(tmp_path, task_block("beta") + task_block("alpha"))
    message = error(path)
    assert "several tasks: alpha, beta" in message
    assert "--task" in message


def test_task_selection_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, task_block("beta") + task_block("alpha", input='  input {\n    provider = "generator"\n  }\n'))
    assert load(path, "alpha").input.name == "generator"
    assert load(path, "beta").input.name == "jsonl"


def test_typod_task_name_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, task_block("beta") + task_block("alpha"))
    message = error(path, "alpah")
    assert f"no task 'alpah' in {path}" in message
    assert "did you mean 'alpha'?" in message
    assert "tasks in it: alpha, beta" in error(path, "zzzz")


def test_name_of_the_only_task_is_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, task_block("demo"))
    assert "did you mean 'demo'?" in error(path, "dmeo")


# --- backends ---------------------------------------------------------------------------------


def test_local_backend_path_is_relative_to_the_task_file(tmp_path: Path) -> None:
    path = write(tmp_path, task_block() + 'backend "local" {\n  path = "state-dir"\n}\n')
    task = load(path)
    backend = open_backend(task.backend, task.directory, task.name)
    assert backend.store.where("state") == str(tmp_path.resolve() / "state-dir" / "demo.state.json")


def test_local_backend_default_directory(tmp_path: Path) -> None:
    task = load(write(tmp_path, task_block()))
    backend = open_backend(task.backend, task.directory, task.name)
    assert backend.store.where("state") == str(tmp_path.resolve() / ".dstream" / "demo.state.json")


def test_local_backend_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "abs"
    (tmp_path / "conf").mkdir()
    task = load(write(tmp_path / "conf", task_block() + f'backend "local" {{\n  path = "{target}"\n}}\n'))
    assert open_backend(task.backend, task.directory, task.name).store.where("state") == str(target / "demo.state.json")


def test_unknown_backend(tmp_path: Path) -> None:
    path = write(tmp_path, task_block() + 'backend "s3" {\n  bucket = "x"\n}\n')
    message = error(path)
    assert message.startswith(f"{path}:{line_of(path, 'backend')}: unknown backend 's3'")
    assert "supported: local" in message


def test_two_backends(tmp_path: Path) -> None:
    path = write(tmp_path, task_block() + 'backend "local" {\n  path = "a"\n}\nbackend "local" {\n  path = "b"\n}\n')
    message = error(path)
    assert "backend" in message and ("duplicate" in message or "more than one" in message)


# --- find_task_file ------------------------------------------------------------------------------


def test_find_task_file_path_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_task_file("task.hcl", None) == (Path("task.hcl"), None)
    assert find_task_file("examples/local.hcl", None) == (Path("examples/local.hcl"), None)
    assert find_task_file(f"conf{os.sep}mytask", None) == (Path("conf/mytask"), None)
    assert find_task_file("other.hcl", "x.hcl") == (Path("other.hcl"), None)
    (tmp_path / "taskfile").write_text("")
    assert find_task_file("taskfile", None) == (Path("taskfile"), None), "an existing file in the current directory is a path"


def test_find_task_file_name_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_task_file("local-demo", None) == (Path("dstream.hcl"), "local-demo")
    assert find_task_file("local-demo", "tasks/all.hcl") == (Path("tasks/all.hcl"), "local-demo")
    (tmp_path / "local-demo").write_text("")
    assert find_task_file("local-demo", "tasks/all.hcl") == (Path("tasks/all.hcl"), "local-demo"), "with -c, TARGET is a name"


def test_name_target_loads_from_dstream_hcl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, task_block("first") + task_block("second"), name="dstream.hcl")
    monkeypatch.chdir(tmp_path)
    path, name = find_task_file("second", None)
    assert load(path, name).name == "second"


# --- issue 8: task names, typed backend settings, comments, unquoted templates ---------------


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", "a..b", "", "-dash", "x" * 129, "sp ace"])
def test_invalid_task_names_are_usage_errors_with_file_and_line(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "\n" + task_block(name))
    message = error(path, name)
    assert message.startswith(f"{path}:2: invalid task name"), message


@pytest.mark.parametrize("name", ["demo", "local-demo", "a.b_c-9", "9lives", "x" * 128])
def test_valid_task_names(tmp_path: Path, name: str) -> None:
    assert load(write(tmp_path, task_block(name))).name == name


@pytest.mark.parametrize(("backend", "key"), [('backend "local" {\n  path = 5\n}\n', "path = 5"), ('backend "local" {\n  path = ["a"]\n}\n', "path = ["),
                                               ('backend "azureblob" {\n  container = "c"\n  lease_duration = "soon"\n}\n', "lease_duration")])
def test_backend_settings_of_the_wrong_type_are_usage_errors(tmp_path: Path, backend: str, key: str) -> None:
    path = write(tmp_path, task_block() + backend)
    message = error(path)
    assert message.startswith(f"{path}:{line_of(path, key)}: backend"), message
    key = key.split()[0]
    assert key in message


@pytest.mark.parametrize("comment", ["# see {{ the docs }}", "// {{ not a template }}", "/* {{ env NOPE }}\n   {{ foo }} */"])
def test_templates_in_comments_are_ignored(tmp_path: Path, comment: str) -> None:
    path = write(tmp_path, comment + "\n" + task_block())
    assert load(path).output.config == {"directory": "out"}


def test_a_hash_inside_a_string_is_no_comment(tmp_path: Path) -> None:
    output = '  output {\n    provider = "files"\n    config {\n      directory = "http://x/#{{ env \\"D\\" }}"\n    }\n  }\n'
    assert load(write(tmp_path, task_block(output=output)), env={"D": "frag"}).output.config == {"directory": "http://x/#frag"}


@pytest.mark.parametrize(("value", "expected"), [("5", 5), ("2.5", 2.5), ("true", True), ("false", False), ("007", "007"), ("abc", "abc")])
def test_an_unquoted_template_gives_a_number_or_bool(tmp_path: Path, value: str, expected: object) -> None:
    input = '  input {\n    provider = "generator"\n    config {\n      count = {{ env "N" }}\n      label = "{{ env "N" }}"\n    }\n  }\n'
    config = load(write(tmp_path, task_block(input=input)), env={"N": value}).input.config
    assert config["count"] == expected and type(config["count"]) is type(expected)
    assert config["label"] == value, "a quoted template stays a string"


def test_a_syntax_error_never_quotes_the_offending_token(tmp_path: Path) -> None:
    path = write(tmp_path, task_block(output="  output {\n    provider = 'hunter2-secret'\n  }\n"))
    message = error(path)
    assert "hunter2" not in message
    assert re.match(rf"{re.escape(str(path))}:{line_of(path, 'hunter2')}:\d+: HCL syntax error: expected", message), message
    assert "double quotes" in message
