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
CREDENTIAL = re.compile(r"(?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|PWD|sig|ClientSecret)\s*=\s*([^;]+)", re.I)
MIN_SECRET_LEN = 4  # shorter values would redact ordinary words


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
        found |= {m.group(1).strip() for m in CREDENTIAL.finditer(config) if len(m.group(1).strip()) >= MIN_SECRET_LEN}
    return found


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also the JSON-escaped form: a provider may log its config as JSON."""
        forms = {form for s in secrets if s for form in (s, json.dumps(s, ensure_ascii=False)[1:-1], json.dumps(s)[1:-1])}
        # longest first, so a connection string goes before the key inside it
        self._secrets = sorted(set(self._secrets) | forms, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, SENSITIVE)
        return CREDENTIAL.sub(lambda m: m.group(0).replace(m.group(1), SENSITIVE), value)

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
