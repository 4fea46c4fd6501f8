"""Task files: HCL2 with `{{ env "NAME" }}` templates, validated strictly.

Read-only. Every error names the file and line, and suggests the closest
valid key for typos. python-hcl2 silently keeps the last of duplicate
attributes, so duplicates are found on the parse tree before it converts.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from state import parse_cache
from state.errors import TaskFileError

DEFAULT_FILE = "dstream.hcl"
ENV_ACTION = re.compile(r'^\s*env\s+\\?"([^"\\]+)\\?"\s*(?:\|\s*default\s+\\?"((?:[^"\\]|\\\\)*)\\?"\s*)?$')
PLACEHOLDER = re.compile(r"__dstream_tpl_(\d+)__")
TOP_LEVEL = ("task", "backend")
TASK_KEYS = ("type", "input", "output")
PROVIDER_KEYS = ("provider", "provider_path", "config")
BACKENDS = {"local": ("path",), "azureblob": ("container", "prefix", "account_url", "connection_string", "lease_duration")}
BACKEND_TYPES: dict[str, type] = {"path": str, "container": str, "prefix": str, "account_url": str, "connection_string": str, "lease_duration": int}
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TASK_NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"
# what a parser error expects, in words; the offending token itself is never quoted (it may be a secret)
VALUE_START = {"DBLQUOTE", "NAME", "INT_LITERAL", "FLOAT_LITERAL", "LSQB", "LBRACE"}
EXPECTED_WORDS = {"RBRACE": "'}'", "LBRACE": "'{'", "EQ": "'='", "DBLQUOTE": "'\"'", "NAME": "a name", "RSQB": "']'",
                  "COMMA": "','", "NEWLINE": "a new line", "NL_OR_COMMENT": "a new line", "RPAR": "')'", "COLON": "':'"}
Path_ = tuple[str, ...]


@dataclass(frozen=True)
class ProviderSpec:
    role: str  # "input" or "output"
    name: str  # the built-in's name, or provider_path as written
    executable: Path | None  # resolved provider_path; None for a built-in
    config: dict[str, Any]
    line: int


@dataclass(frozen=True)
class BackendSpec:
    kind: str
    settings: dict[str, Any]
    line: int = 0


@dataclass(frozen=True)
class Task:
    name: str
    file: Path
    input: ProviderSpec
    output: ProviderSpec
    backend: BackendSpec
    lines: dict[Path_, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def directory(self) -> Path:
        return self.file.parent

    def provider(self, role: str) -> ProviderSpec:
        return self.input if role == "input" else self.output

    def where(self, *path: str) -> str:
        """file:line of a key in this task, or just the file when unknown."""
        line = self.lines.get(("task", self.name, *path)) or self.lines.get(("task", self.name, *path[:-1]))
        return f"{self.file}:{line}" if line else str(self.file)


@dataclass(frozen=True)
class _Template:
    variable: str
    default: str | None
    line: int
    column: int = 0  # where it starts in the original text
    growth: int = 0  # original length minus placeholder length
    bare: bool = False  # unquoted (`count = {{ env "N" }}`): a number or bool when the value is one


# --- loading -------------------------------------------------------------------


def load_task(file: Path, task_name: str | None, builtins: dict[str, tuple[str, str, str]], env: dict[str, str] | None = None) -> Task:
    """Parse `file` and return the task named `task_name` (or its only task)."""
    env = dict(os.environ) if env is None else env
    text = _read(file)
    text, templates = _extract_templates(text, file)
    doc, lines = _parse_document(text, file, templates)
    _check_keys(doc, TOP_LEVEL, "the top level", file, lines, ())
    tasks = _tasks(doc, file, lines)
    name = _select(tasks, task_name, file)
    resolve = _Resolver(templates, env, file)
    body = tasks[name]
    task_path = ("task", name)
    _check_keys(body, TASK_KEYS, f'task "{name}"', file, lines, task_path)
    kind = body.get("type", "providers")
    if kind != "providers":
        raise TaskFileError(f'{file}:{lines.get((*task_path, "type"), 0)}: task "{name}" has type {kind!r}', hint='the only type is "providers"')
    roles = {}
    for role in ("input", "output"):
        block = _one_block(body, role, f'task "{name}"', file, lines, task_path)
        roles[role] = _provider(role, resolve.value(block), file, lines, (*task_path, role), builtins)
    backend = _backend(doc, resolve, file, lines)
    return Task(name, file.resolve(), roles["input"], roles["output"], backend, lines)


def find_task_file(target: str, config_file: str | None) -> tuple[Path, str | None]:
    """TARGET is an HCL file, or a task name looked up in -c FILE / ./dstream.hcl."""
    if target.endswith(".hcl") or os.sep in target or (config_file is None and Path(target).is_file()):
        return Path(target), None
    return Path(config_file or DEFAULT_FILE), target


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(f"task file {file} not found", hint=f"give a path to an .hcl file, or run where {DEFAULT_FILE} is") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"cannot read task file {file}: {getattr(exc, 'strerror', None) or exc}") from None


def _extract_templates(text: str, file: Path) -> tuple[str, list[_Template]]:
    """Swap each {{ ... }} outside comments for a placeholder, so values can never break HCL syntax."""
    templates: list[_Template] = []
    pieces: list[str] = []
    done = 0
    for start, end, bare in _template_spans(text):
        line = text.count("\n", 0, start) + 1
        column = start - text.rfind("\n", 0, start)
        source = text[start:end]
        action = ENV_ACTION.match(source[2:-2])
        if not action:
            raise TaskFileError(
                f"{file}:{line}: unsupported template {source}",
                hint='use {{ env "NAME" }} or {{ env "NAME" | default "value" }}',
            )
        default = action.group(2).replace("\\\\", "\\") if action.group(2) is not None else None
        placeholder = f"__dstream_tpl_{len(templates)}__"
        templates.append(_Template(action.group(1), default, line, column, len(source) - len(placeholder), bare))
        pieces += [text[done:start], placeholder]
        done = end
    return "".join(pieces) + text[done:], templates


HEREDOC_START = re.compile(r"<<-?([A-Za-z_][\w-]*)[ \t]*\r?\n")


def _template_spans(text: str) -> Iterator[tuple[int, int, bool]]:
    """Where each {{ ... }} (on one line) starts and ends, and whether it is unquoted; skips #, // and /* */ comments.

    A small HCL scanner: it knows strings (so "http://x" is no comment) and heredocs."""
    i, n = 0, len(text)
    in_string = False
    while i < n:
        if text.startswith("{{", i):
            end = text.find("}}", i + 2, _line_end(text, i))
            if end >= 0:
                yield i, end + 2, not in_string
                i = end + 2
                continue
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char in '"\n':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "#" or text.startswith("//", i):
            i = _line_end(text, i)
            continue
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = n if close < 0 else close + 2
            continue
        elif heredoc := HEREDOC_START.match(text, i):
            yield from _heredoc_spans(text, heredoc.end(), heredoc.group(1))
            i = _heredoc_end(text, heredoc.end(), heredoc.group(1))
            continue
        i += 1


def _heredoc_spans(text: str, start: int, marker: str) -> Iterator[tuple[int, int, bool]]:
    body = text[start:_heredoc_end(text, start, marker)]
    for match in re.finditer(r"\{\{[^\n]*?\}\}", body):
        yield start + match.start(), start + match.end(), False


def _heredoc_end(text: str, start: int, marker: str) -> int:
    """The offset of the heredoc's closing marker line (its content ends there)."""
    closing = re.compile(rf"^[ \t]*{re.escape(marker)}[ \t]*\r?$", re.M).search(text, start)
    return closing.start() if closing else len(text)


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _parse_document(text: str, file: Path, templates: list[_Template]) -> tuple[dict[str, Any], dict[Path_, int]]:
    """The document and its line index; a file parsed before comes from the parse cache."""
    cached = parse_cache.load(text)
    if cached is not None:
        return cached
    tree = _parse(text, file, templates)
    lines = _index_lines(tree, file)
    doc = _to_dict(tree)
    literals = [(node.meta.start_pos, node.meta.end_pos) for node in tree.iter_subtrees() if node.data in ("string", "heredoc_template")]
    parse_cache.store(text, doc, lines, literals)
    return doc, lines


def _parse(text: str, file: Path, templates: list[_Template] = ()) -> Any:  # type: ignore[assignment]
    import hcl2  # imported here: parsing is the only code path that needs lark
    from lark.exceptions import UnexpectedInput

    try:
        return hcl2.parses_to_tree(text)
    except UnexpectedInput as exc:
        column = _original_column(exc.line, exc.column, templates)
        raise TaskFileError(f"{file}:{exc.line}:{column}: HCL syntax error: {_syntax_detail(exc)}", hint=_syntax_hint(exc)) from None
    except Exception as exc:  # python-hcl2 raises assorted types for odd input; their text may quote a value
        raise TaskFileError(f"{file}: HCL syntax error ({type(exc).__name__})") from None


def _syntax_detail(exc: Any) -> str:
    """What the parser wanted, in words; never the text it found there (it may be a secret)."""
    token = getattr(exc, "token", None)
    if token is not None and getattr(token, "type", "") == "$END":
        return "unexpected end of file"
    expected = set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    if expected & VALUE_START and len(expected) > 3:
        return "expected a value (a quoted string, a number, a list or a block)"
    words = sorted({EXPECTED_WORDS[name] for name in expected if name in EXPECTED_WORDS})
    return f"expected {' or '.join(words[:4])}" if words else "unexpected input"


def _syntax_hint(exc: Any) -> str | None:
    found = str(getattr(exc, "token", None) or getattr(exc, "char", None) or "")
    return "HCL strings use double quotes" if found.startswith("'") else None


def _original_column(line: int, column: int, templates: list[_Template]) -> int:
    """A column in the placeholder text, mapped back to the file as written."""
    for template in sorted((t for t in templates if t.line == line), key=lambda t: t.column):
        if template.column < column:
            column += template.growth
    return column


def _to_dict(tree: Any) -> dict[str, Any]:
    import hcl2

    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    return hcl2.serialize(hcl2.transform(tree, discard_comments=True), serialization_options=options)


# --- the parse tree: line numbers and duplicates -------------------------------


def _index_lines(tree: Any, file: Path) -> dict[Path_, int]:
    lines: dict[Path_, int] = {}
    body = next(c for c in tree.children if getattr(c, "data", None) == "body")
    _walk(body, (), lines, file)
    return lines


def _walk(body: Any, path: Path_, lines: dict[Path_, int], file: Path) -> None:
    for node in body.children:
        kind = getattr(node, "data", None)
        if kind not in ("attribute", "block"):
            continue
        key = (*path, *_node_names(node))
        line = node.meta.line
        if key in lines and (kind == "attribute" or len(key) - len(path) > 1 or key[-1] in ("input", "output", "config")):
            what = "attribute" if kind == "attribute" else "block"
            raise TaskFileError(f"{file}:{line}: duplicate {what} {'.'.join(key)} (first at line {lines[key]})", hint="remove one of them")
        lines.setdefault(key, line)
        if kind == "block":
            inner = next(c for c in node.children if getattr(c, "data", None) == "body")
            _walk(inner, key, lines, file)


def _node_names(node: Any) -> Path_:
    """The identifier and labels of a block, or the name of an attribute."""
    names = []
    for child in node.children:
        data = getattr(child, "data", None)
        if data == "identifier":
            names.append(str(child.children[0]))
        elif data == "string":
            names.append("".join(str(t) for part in child.children if hasattr(part, "children") for t in part.children))
        if node.data == "attribute" and names:
            break
    return tuple(names)


# --- structure ------------------------------------------------------------------


def _check_keys(body: dict[str, Any], allowed: tuple[str, ...], where: str, file: Path, lines: dict[Path_, int], path: Path_) -> None:
    for key in body:
        if key not in allowed:
            line = lines.get((*path, key)) or min((n for k, n in lines.items() if k[: len(path) + 1] == (*path, key)), default=0)
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            raise TaskFileError(f"{file}:{line}: unknown key '{key}' in {where}", hint=hint)


def _tasks(doc: dict[str, Any], file: Path, lines: dict[Path_, int]) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for block in _blocks(doc, "task", file, lines):
        for name, body in block.items():
            if not isinstance(body, dict):
                raise TaskFileError(f'{file}:{lines.get(("task", name), 0)}: task "{name}" must be a block')
            check_task_name(name, f'{file}:{lines.get(("task", name), 0)}: ')
            tasks[name] = body
    if not tasks:
        raise TaskFileError(f"{file}: no task block", hint='add task "<name>" { input { ... } output { ... } }')
    return tasks


def _blocks(doc: dict[str, Any], key: str, file: Path, lines: dict[Path_, int]) -> list[dict[str, Any]]:
    """The labelled top-level blocks named `key`; an attribute of that name is an error, not a crash."""
    blocks = doc.get(key) or []
    if not isinstance(blocks, list) or not all(isinstance(b, dict) and all(isinstance(v, dict) for v in b.values()) for b in blocks):
        raise TaskFileError(f"{file}:{lines.get((key,), 0)}: {key} must be a labelled block", hint=f'{key} "NAME" {{ ... }}')
    return blocks


def check_task_name(name: str, where: str = "") -> None:
    """Task names become file and blob names: no path separators, no '..', nothing hidden."""
    if not TASK_NAME.fullmatch(name) or ".." in name:
        raise TaskFileError(f"{where}invalid task name {name[:140]!r}", hint=f"a task name is {TASK_NAME_RULE}")


def _select(tasks: dict[str, Any], name: str | None, file: Path) -> str:
    if name is None:
        if len(tasks) == 1:
            return next(iter(tasks))
        raise TaskFileError(f"{file} holds several tasks: {', '.join(sorted(tasks))}", hint="choose one with --task NAME")
    if name not in tasks:
        close = difflib.get_close_matches(name, list(tasks), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"tasks in it: {', '.join(sorted(tasks))}"
        raise TaskFileError(f"no task '{name}' in {file}", hint=hint)
    return name


def _one_block(body: dict[str, Any], key: str, where: str, file: Path, lines: dict[Path_, int], path: Path_) -> dict[str, Any]:
    blocks = body.get(key)
    if not blocks:
        raise TaskFileError(f"{file}:{lines.get(path, 0)}: {where} has no {key} block", hint=f"add {key} {{ provider = \"...\" config {{ ... }} }}")
    if not isinstance(blocks, list) or not isinstance(blocks[0], dict):
        raise TaskFileError(f"{file}:{lines.get((*path, key), 0)}: {key} must be a block, not an attribute")
    return blocks[0]


def _provider(role: str, block: dict[str, Any], file: Path, lines: dict[Path_, int], path: Path_, builtins: dict[str, tuple[str, str, str]]) -> ProviderSpec:
    _check_keys(block, PROVIDER_KEYS, f"the {role} block", file, lines, path)
    line = lines.get(path, 0)
    configs = block.get("config", [{}])
    config = configs[0] if isinstance(configs, list) and configs else configs
    if not isinstance(config, dict):
        raise TaskFileError(f"{file}:{lines.get((*path, 'config'), line)}: config must be a block")
    if ("provider" in block) == ("provider_path" in block):
        raise TaskFileError(f"{file}:{line}: the {role} block needs exactly one of provider or provider_path")
    if "provider" in block:
        name = str(block["provider"])
        _check_builtin(name, role, builtins, f"{file}:{lines.get((*path, 'provider'), line)}")
        return ProviderSpec(role, name, None, config, line)
    written = str(block["provider_path"])
    executable = (file.parent / written).resolve()
    if not executable.is_file():
        raise TaskFileError(f"{file}:{lines.get((*path, 'provider_path'), line)}: provider_path {written} not found (looked at {executable})")
    if not os.access(executable, os.X_OK):
        raise TaskFileError(f"{file}:{lines.get((*path, 'provider_path'), line)}: provider_path {written} is not executable", hint=f"chmod +x {executable}")
    return ProviderSpec(role, written, executable, config, line)


def _check_builtin(name: str, role: str, builtins: dict[str, tuple[str, str, str]], where: str) -> None:
    if name not in builtins:
        close = difflib.get_close_matches(name, list(builtins), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"built-in providers: {', '.join(sorted(builtins))}; or use provider_path"
        raise TaskFileError(f"{where}: unknown provider '{name}'", hint=hint)
    if builtins[name][1] != role:
        raise TaskFileError(f"{where}: provider '{name}' is an {builtins[name][1]} provider, not an {role} provider")


def _backend(doc: dict[str, Any], resolve: _Resolver, file: Path, lines: dict[Path_, int]) -> BackendSpec:
    blocks = _blocks(doc, "backend", file, lines)
    if not blocks:
        return BackendSpec("local", {})
    if len(blocks) > 1 or len(blocks[0]) > 1:
        raise TaskFileError(f"{file}: more than one backend block", hint="keep one")
    kind, settings = next(iter(blocks[0].items()))
    line = lines.get(("backend", kind), 0)
    if kind not in BACKENDS:
        raise TaskFileError(f"{file}:{line}: unknown backend '{kind}'", hint=f"supported: {', '.join(BACKENDS)}")
    settings = resolve.value(settings or {})
    _check_keys(settings, BACKENDS[kind], f'backend "{kind}"', file, lines, ("backend", kind))
    for key, value in settings.items():
        wanted = BACKEND_TYPES[key]
        if not _is_a(value, wanted):
            where = lines.get(("backend", kind, key), line)
            raise TaskFileError(f'{file}:{where}: backend "{kind}": {key} must be a {"string" if wanted is str else "whole number"}')
    return BackendSpec(kind, settings, line)


def _is_a(value: Any, wanted: type) -> bool:
    if wanted is int:  # a quoted "30" (e.g. from an env template) counts as a number too
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())
    return isinstance(value, wanted)


# --- templates -------------------------------------------------------------------


class _Resolver:
    """Replaces placeholders with environment values, only in what is used."""

    def __init__(self, templates: list[_Template], env: dict[str, str], file: Path):
        self.templates = templates
        self.env = env
        self.file = file

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str) and "__dstream_tpl_" in value:
            whole = re.fullmatch(r"(?:\$\{)?__dstream_tpl_(\d+)__\}?", value)
            if whole:  # a whole value; unquoted (`count = {{ env "N" }}`) it may be a number or bool
                template = self.templates[int(whole.group(1))]
                return _scalar(self._value_of(template)) if template.bare else self._value_of(template)
            return PLACEHOLDER.sub(self._lookup, value)
        return value

    def _lookup(self, match: re.Match[str]) -> str:
        return self._value_of(self.templates[int(match.group(1))])

    def _value_of(self, template: _Template) -> str:
        value = self.env.get(template.variable)
        if value is not None:
            return value
        if template.default is not None:
            return template.default
        raise TaskFileError(
            f"{self.file}:{template.line}: environment variable {template.variable} is not set",
            hint=f'set it, or give a default: {{{{ env "{template.variable}" | default "..." }}}}',
        )


def _scalar(text: str) -> Any:
    """A JSON number, true or false as that type; anything else stays the string it is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, bool)) else text
