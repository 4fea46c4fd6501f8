"""A small T-SQL tokenizer and T-SQL -> SQLite translator for the test peer.

Handles the subset the CDC reader and the tests send: bracket/quoted
identifiers (']]' escapes), N'...' strings, 0x.. binary literals, exact
decimal literals, ODBC '?' and '@P1' parameters, TOP (n) -> LIMIT n,
sys.fn_* calls and a few built-in functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<str>N?'(?:[^']|'')*')
  | (?P<bracket>\[(?:[^\]]|\]\])*\])
  | (?P<dquote>"(?:[^"]|"")*")
  | (?P<hex>0x[0-9A-Fa-f]*)
  | (?P<num>\d+\.\d*(?:[eE][+-]?\d+)?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<var>@@?[A-Za-z_][\w$#@]*)
  | (?P<word>[A-Za-z_#][\w$#@]*)
  | (?P<param>\?)
  | (?P<op><>|!=|<=|>=|\|\||[-+*/%=<>(),.;~&|^])
    """,
    re.X | re.S,
)


class SqlError(Exception):
    """A T-SQL error with SQL Server's number."""

    def __init__(self, number: int, message: str, severity: int = 16):
        super().__init__(message)
        self.number = number
        self.message = message
        self.severity = severity


@dataclass
class Tok:
    kind: str  # ws str bracket dquote hex num var word param op
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""

    @property
    def is_ident(self) -> bool:
        return self.kind in ("word", "bracket", "dquote")

    @property
    def name(self) -> str:
        """Identifier value without quoting."""
        if self.kind == "bracket":
            return self.text[1:-1].replace("]]", "]")
        if self.kind == "dquote":
            return self.text[1:-1].replace('""', '"')
        return self.text

    @property
    def value(self) -> str:
        """A string literal's value."""
        body = self.text[2:-1] if self.text.startswith(("N", "n")) else self.text[1:-1]
        return body.replace("''", "'")


def tokenize(sql: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(sql):
        m = TOKEN_RE.match(sql, pos)
        if not m:
            raise SqlError(102, f"Incorrect syntax near '{sql[pos:pos + 10]}'.")
        kind = m.lastgroup or "op"
        out.append(Tok(kind, m.group()))
        pos = m.end()
    return out


def split_statements(tokens: list[Tok]) -> list[list[Tok]]:
    """Split on ';' (and on GO) at top level; drop whitespace-only statements."""
    out: list[list[Tok]] = []
    cur: list[Tok] = []
    depth = 0
    for t in tokens:
        if t.kind == "op" and t.text == "(":
            depth += 1
        elif t.kind == "op" and t.text == ")":
            depth -= 1
        if depth == 0 and ((t.kind == "op" and t.text == ";") or t.upper == "GO"):
            out.append(cur)
            cur = []
            continue
        cur.append(t)
    out.append(cur)
    return [[t for t in s] for s in out if any(t.kind != "ws" for t in s)]


def significant(tokens: list[Tok]) -> list[Tok]:
    return [t for t in tokens if t.kind != "ws"]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


FUNCTIONS = {"ISNULL": "ifnull", "LEN": "length", "GETDATE": "GETDATE", "NEWID": "NEWID"}


class Translator:
    """Renders tokens as SQLite text; '?'/'@Pn' parameters become ?N by position or name."""

    def __init__(self, param_names: list[str] | None = None, variables: dict[str, str] | None = None, first_param: int = 0):
        self.param_names = [n.lower() for n in (param_names or [])]
        self.variables = {k.lower(): v for k, v in (variables or {}).items()}
        self.next_param = first_param

    def render(self, tokens: list[Tok]) -> str:
        toks = [t for t in tokens if not (t.kind == "ws" and t.text.startswith(("--", "/*")))]
        out: list[str] = []
        limits: list[tuple[int, str]] = []  # (paren depth, limit text) waiting for their scope to end
        depth = 0
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.kind == "op" and t.text == "(":
                depth += 1
            if t.kind == "op" and t.text == ")":
                while limits and limits[-1][0] == depth:
                    out.append(f" LIMIT {limits.pop()[1]}")
                depth -= 1
            if t.upper == "SELECT":
                j = self._skip_ws(toks, i + 1)
                if j < len(toks) and toks[j].upper == "DISTINCT":
                    j = self._skip_ws(toks, j + 1)
                if j < len(toks) and toks[j].upper == "TOP":
                    head = toks[i + 1:j]
                    k = self._skip_ws(toks, j + 1)
                    if toks[k].text == "(":
                        end = k
                        while toks[end].text != ")":
                            end += 1
                        limit = self.render_simple(toks[k + 1:end])
                        i = end + 1
                    else:
                        limit = self.render_simple([toks[k]])
                        i = k + 1
                    limits.append((depth, limit))
                    out.append("SELECT" + "".join(self.render_simple([h]) for h in head) + " ")
                    continue
            out.append(self.render_simple([t], toks, i))
            i += 1
        while limits:
            out.append(f" LIMIT {limits.pop()[1]}")
        return "".join(out)

    @staticmethod
    def _skip_ws(toks: list[Tok], i: int) -> int:
        while i < len(toks) and toks[i].kind == "ws":
            i += 1
        return i

    def render_simple(self, tokens: list[Tok], context: list[Tok] | None = None, index: int = 0) -> str:
        parts = []
        for t in tokens:
            k = t.kind
            if k == "str":
                parts.append("'" + t.value.replace("'", "''") + "'")
            elif k in ("bracket", "dquote"):
                parts.append(quote(t.name))
            elif k == "hex":
                parts.append(f"X'{t.text[2:]}'" if len(t.text) % 2 == 0 else f"X'0{t.text[2:]}'")
            elif k == "num" and ("." in t.text or "e" in t.text.lower()):
                parts.append("'" + t.text + "'")  # exact: SQLite would make a REAL
            elif k == "param":
                self.next_param += 1
                parts.append(f":p{self.next_param}")
            elif k == "var":
                low = t.text.lower()
                if low in self.variables:
                    parts.append(self.variables[low])
                elif low in self.param_names:
                    parts.append(f":p{self.param_names.index(low) + 1}")
                else:
                    raise SqlError(137, f"Must declare the scalar variable \"{t.text}\".", 15)
            elif k == "word":
                up = t.upper
                if up == "SYS" and context is not None and self._sys_function(context, index):
                    parts.append("")
                elif up in FUNCTIONS and context is not None and self._next_is_paren(context, index):
                    parts.append(FUNCTIONS[up])
                else:
                    parts.append(t.text)
            elif k == "op" and t.text == "+" and context is not None and self._next_to_string(context, index):
                parts.append("||")  # T-SQL's string concatenation
            elif k == "op" and t.text == "." and context is not None and index > 0 and context[index - 1].upper == "SYS" and self._sys_function(context, index - 1):
                parts.append("")
            else:
                parts.append(t.text)
        return "".join(parts)

    @staticmethod
    def _next_to_string(toks: list[Tok], i: int) -> bool:
        near = [t for t in toks[max(0, i - 3):i] if t.kind != "ws"][-1:] + [t for t in toks[i + 1:i + 4] if t.kind != "ws"][:1]
        return any(t.kind == "str" for t in near)

    @staticmethod
    def _next_is_paren(toks: list[Tok], i: int) -> bool:
        j = i + 1
        while j < len(toks) and toks[j].kind == "ws":
            j += 1
        return j < len(toks) and toks[j].text == "("

    @staticmethod
    def _sys_function(toks: list[Tok], i: int) -> bool:
        """sys.fn_xxx( : the schema prefix of a system function is dropped."""
        return i + 2 < len(toks) and toks[i + 1].text == "." and toks[i + 2].text.lower().startswith("fn_")


def parse_exec(tokens: list[Tok]) -> tuple[str, list[tuple[str | None, object]]]:
    """EXEC schema.proc @a = N'x', @b = 1, 0x00, NULL -> (proc name, [(name|None, value)])."""
    toks = significant(tokens)
    i = 1
    name_parts = []
    while i < len(toks):
        if toks[i].is_ident:
            name_parts.append(toks[i].name)
            i += 1
            if i < len(toks) and toks[i].text == ".":
                i += 1
                continue
        break
    args: list[tuple[str | None, object]] = []
    while i < len(toks):
        key = None
        if toks[i].kind == "var" and i + 1 < len(toks) and toks[i + 1].text == "=":
            key = toks[i].text.lower()
            i += 2
        neg = False
        if toks[i].text == "-":
            neg = True
            i += 1
        t = toks[i]
        value: object
        if t.kind == "str":
            value = t.value
        elif t.kind == "num":
            value = -int(t.text) if neg and t.text.isdigit() else int(t.text) if t.text.isdigit() else t.text
        elif t.kind == "hex":
            value = bytes.fromhex(t.text[2:] if len(t.text) % 2 == 0 else "0" + t.text[2:])
        elif t.upper == "NULL":
            value = None
        elif t.is_ident:
            value = t.name
        else:
            raise SqlError(102, f"Incorrect syntax near '{t.text}'.", 15)
        args.append((key, value))
        i += 1
        if i < len(toks) and toks[i].text == ",":
            i += 1
    return ".".join(name_parts), args
