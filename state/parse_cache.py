"""A cache of parsed task files, so cron runs skip loading the HCL parser (~0.1 s).

Keyed by a digest of the text (with env templates still as placeholders, so
no value from the environment is ever cached) and of the parser's version.
Only files that parsed and indexed cleanly are stored. Best effort: an
unwritable or corrupt cache is ignored. Set DSTREAM_CACHE_DIR to move it,
or to an empty string to turn it off.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FORMAT = "1"
PARSER = "python-hcl2 8"  # bump when the parser's output shape may change


def _directory() -> Path | None:
    configured = os.environ.get("DSTREAM_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dstream" / "hcl"


def _path(text: str) -> Path | None:
    directory = _directory()
    if directory is None:
        return None
    digest = hashlib.sha256(f"{FORMAT}\0{PARSER}\0{text}".encode()).hexdigest()
    return directory / f"{digest}.json"


def load(text: str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]] | None:
    path = _path(text)
    if path is None:
        return None
    try:
        entry = json.loads(path.read_bytes())
        return entry["doc"], {tuple(key): int(line) for key, line in entry["lines"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(text: str, doc: dict[str, Any], lines: dict[tuple[str, ...], int]) -> None:
    path = _path(text)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"doc": doc, "lines": [[list(k), v] for k, v in lines.items()]}))
        os.replace(temp, path)
    except (OSError, TypeError, ValueError):
        pass
