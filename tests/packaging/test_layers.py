"""The layers of docs/architecture.md hold: each layer of the rackflow package imports only the layers
below it, ``core`` imports nothing of Airflow, and nothing in the package imports the plugin."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "providers" / "rackflow"

# layer -> the rackflow layers it may import (besides itself); docs/architecture.md draws the same.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "settings": {"core"},
    "db": {"core", "settings"},
    "hooks": {"core", "settings"},
    "services": {"core", "settings", "db", "hooks"},
    "triggers": {"core", "settings", "db", "hooks", "services"},
    "sensors": {"core", "settings", "db", "hooks", "services", "triggers"},
    "operators": {"core", "settings", "db", "hooks", "services", "triggers", "sensors"},
    "dag_factories": {"core", "settings", "db", "hooks", "services", "triggers", "sensors", "operators"},
    "auth_manager": {"settings", "dag_factories"},
    "get_provider_info": {"hooks"},
    "cli": {"core", "settings"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if "migrations" in rel.parts or (rel.name == "__init__.py" and len(rel.parts) == 1):
            continue
        layer = rel.parts[0].removesuffix(".py")
        assert layer in ALLOWED, f"{rel}: a layer docs/architecture.md does not describe"
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] == "rackflow_plugin":
                wrong.append(f"{rel} imports the plugin ({module})")
            elif parts[0] == "rackflow" and len(parts) > 1 and parts[1] != layer:
                if parts[1] not in ALLOWED[layer] and parts[1] != "__version__":
                    wrong.append(f"{rel} ({layer}) imports {module}")
            elif layer == "core" and parts[0] == "airflow":
                wrong.append(f"{rel}: core imports Airflow ({module})")
    assert not wrong, "\n".join(wrong)
