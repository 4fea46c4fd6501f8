"""The one-way dependency rule of docs/architecture.md, checked from the imports of every product module.

CLI -> lifecycle -> {state, host} -> protocol; a provider imports only the protocol layer and its own
package. Function-level imports count too (the CLI loads heavy modules lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_PACKAGES = ("providers.files", "providers.jsonl", "providers.generator", "providers.mssql_cdc", "providers.asb_queues")
PROTOCOL = ("providers", "providers.protocol", "providers.helper", "providers.diff")  # the wire contract, the helper, the diff, the registry

# layer -> the layers it may import (besides itself)
ALLOWED = {
    "cli": {"lifecycle", "state", "host", "protocol"},
    "lifecycle": {"state", "host", "protocol"},
    "state": {"protocol"},  # the one error base (providers.protocol.Failure)
    "host": {"protocol"},
    "protocol": set(),
}


def layer(module: str) -> str:
    if module == "dstream":
        return "cli"
    if module == "state.lifecycle":
        return "lifecycle"
    if module == "state" or module.startswith("state."):
        return "state"
    if module == "host" or module.startswith("host."):
        return "host"
    if module in PROTOCOL:
        return "protocol"
    for package in PROVIDER_PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    raise AssertionError(f"module {module} belongs to no layer of docs/architecture.md")


def product_modules() -> dict[str, Path]:
    found = {"dstream": ROOT / "dstream.py"}
    for top in ("state", "host", "providers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules `path` imports (a `from package import name` naming a module counts as that module)."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules}
    return {n for n in named if n in modules}


def test_every_import_points_down_the_layers() -> None:
    modules = product_modules()
    assert len(modules) > 30, "the walk found too few modules to mean anything"
    wrong = []
    for module, path in modules.items():
        mine = layer(module)
        for target in imports(path, modules):
            theirs = layer(target)
            if theirs == mine:
                continue
            allowed = ALLOWED.get(mine, {"protocol"})  # a provider package: the protocol layer only
            if theirs not in allowed:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_rule_can_fail() -> None:
    """The checker itself: an upward and a sideways import are both caught."""
    modules = product_modules()
    assert layer("host.process") == "host" and "state" not in ALLOWED["host"]
    assert "host" not in ALLOWED["state"] and "lifecycle" not in ALLOWED["state"] and "state" not in ALLOWED["protocol"]
    assert layer("providers.files") == "providers.files" and "providers.files" not in ALLOWED["protocol"]
    assert imports(ROOT / "state" / "lifecycle.py", modules) >= {"host.process", "host.pipeline", "state.backend"}


def test_the_architecture_doc_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(ROOT)) for module, path in product_modules().items()
               if path.name != "__init__.py" and str(path.relative_to(ROOT)) not in text]
    assert not missing, f"docs/architecture.md does not say where these live: {missing}"
