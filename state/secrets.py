"""Recognises secrets in provider configs and keeps them out of every output.

A value is secret when its key looks secret (password, key, token,
connection string...) or it contains a credential assignment (AccountKey=,
SharedAccessKey=, PWD=...). The Redactor replaces every occurrence of those
values in text, and secret-keyed values in documents, with "(sensitive)".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

SENSITIVE = "(sensitive)"
SECRET_KEY = re.compile(r"password|passwd|pwd|secret|token|key|connection_?string|sas|credential", re.I)
# An ODBC value may be braced, `PWD={a;b}}c}` (`}}` escapes `}`), and then runs past `;`; an
# unterminated one ends at a line end or a `"`, a plain value at `;`, a line end or a `"` (so a
# credential inside a JSON document does not swallow the rest of the document).
CREDENTIAL = re.compile(r"(?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|PWD|sig|ClientSecret)\s*=\s*(\{(?:[^}\n]|\}\})*\}|\{[^\r\n\"]*|[^;\r\n\"]+)", re.I)
MIN_SECRET_LEN = 4  # shorter values would redact ordinary words
CUT = "..."


def mask_credentials(text: str) -> str:
    """Credential assignments (`AccountKey=...`, `PWD={...}`) masked, the rest of `text` untouched."""
    return CREDENTIAL.sub(lambda m: m.group(0).replace(m.group(1), SENSITIVE), text)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def find_secrets(config: Any, key: str = "") -> set[str]:
    """Every secret string in a config tree."""
    found: set[str] = set()
    if isinstance(config, dict):
        for k, v in config.items():
            found |= find_secrets(v, str(k))
    elif isinstance(config, list):
        for item in config:
            found |= find_secrets(item, key)
    elif isinstance(config, str):
        if is_secret_key(key) and len(config) >= MIN_SECRET_LEN:
            found.add(config)
        for match in CREDENTIAL.finditer(config):
            found |= {value for value in _credential_values(match.group(1).strip()) if len(value) >= MIN_SECRET_LEN}
    return found


def _credential_values(value: str) -> set[str]:
    """A credential as written, and a braced ODBC value also as the driver reads it (a provider may log that)."""
    if not value.startswith("{"):
        return {value}
    inner = {value[1:], value[1:-1]} if value.endswith("}") else {value[1:]}
    return {value} | inner | {part.replace("}}", "}") for part in inner}


def _forms(secret: str) -> set[str]:
    """The ways a secret can appear in text: as is, JSON-escaped, and in Python's repr/ascii and bytes-repr escapes."""
    forms = {secret, json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1], repr(secret)[1:-1], ascii(secret)[1:-1]}
    forms.add(repr(secret.encode("utf-8"))[2:-1])
    return {form for form in forms if form}


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        forms = {form for s in secrets if s for form in _forms(s)}
        # longest first, so a connection string goes before the key inside it
        self._secrets = sorted(set(self._secrets) | forms, key=len, reverse=True)

    def text(self, value: str, cut: bool = False) -> str:
        """`value` with every secret masked; `cut`: the text was truncated, so a trailing secret prefix is masked too."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, SENSITIVE)
        value = mask_credentials(value)
        return self._mask_partial_tail(value) if cut else value

    def snippet(self, value: str, limit: int) -> str:
        """At most `limit` characters of `value`, redacted before it is cut (a cut secret escapes the matcher)."""
        text = self.text(value, cut=True)
        return text if len(text) <= limit else text[: max(0, limit - len(CUT))] + CUT

    def raw(self, data: bytes, limit: int | None = None) -> str:
        """Bytes as redacted text: decoded, never repr()'d (a repr escapes non-ASCII secrets past the matcher)."""
        text = data.decode("utf-8", "backslashreplace")
        return self.text(text) if limit is None else self.snippet(text, limit)

    def _mask_partial_tail(self, value: str) -> str:
        """A text cut inside a secret ends with the secret's first characters: mask them."""
        longest = 0
        for secret in self._secrets:
            for size in range(min(len(secret) - 1, len(value)), MIN_SECRET_LEN - 1, -1):
                if size > longest and value.endswith(secret[:size]):
                    longest = size
                    break
        return value[: len(value) - longest] + SENSITIVE if longest else value

    def document(self, value: Any, key: str = "") -> Any:
        """A copy of a JSON-like value with secret-keyed and secret-bearing values masked."""
        if isinstance(value, dict):
            return {k: self.document(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.document(v, key) for v in value]
        if isinstance(value, str):
            if is_secret_key(key) and value:
                return SENSITIVE
            return self.text(value)
        return value
