"""A pytest marker declared in pyproject.toml is one some test uses (issue 9: `slow` was declared and never used)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def declared_markers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    return [entry.split(":", 1)[0].strip() for entry in config.get("markers", [])]


def test_every_declared_marker_is_used() -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != Path(__file__).name)
    unused = [name for name in declared_markers() if not re.search(rf"\bmark\.{re.escape(name)}\b", sources)]
    assert unused == [], f"declared in pyproject.toml but used by no test: {unused}"
