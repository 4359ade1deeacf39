"""The rackflow wheel ships the provider and the plugin, and no code that starts daemons.

The dev fleet (loopback libvirtd, Slurm, sshd, SeaweedFS, BMC emulators) is its own distribution,
``rackflow-devfleet`` in ``devfleet/``, installed by ``make demo``/``make test`` next to rackflow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_holds_provider_and_plugin_but_no_devfleet(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree it builds.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("providers", "plugins", "devfleet"):
        shutil.copytree(
            REPO / name,
            source / name,
            ignore=shutil.ignore_patterns("node_modules", "__pycache__", "*.egg-info"),
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("rackflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rackflow/hooks/scheduler.py" in names
    assert "rackflow_plugin/__init__.py" in names
    assert "rackflow/db/migrations/env.py" in names
    assert not [n for n in names if "devfleet" in n]


def _imported_top_level_modules(*roots: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found


def test_dependencies_are_declared_exactly_as_imported() -> None:
    """Every third-party module providers/ and plugins/ import comes from a declared distribution
    (runtime, or the ``psij`` extra for the optional PSI/J interop), and every declared runtime
    distribution is imported."""
    import importlib.metadata as md
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}

    runtime = names(project["dependencies"])
    optional = names(project["optional-dependencies"]["psij"])
    modules = _imported_top_level_modules(REPO / "providers", REPO / "plugins")
    third_party = modules - set(sys.stdlib_module_names) - {"rackflow", "rackflow_plugin"}
    distributions = md.packages_distributions()
    provided_by = {m: {d.lower().replace("_", "-") for d in distributions.get(m, [])} for m in third_party}
    undeclared = {m: d for m, d in provided_by.items() if not d & (runtime | optional)}
    assert not undeclared, f"imported but not declared: {undeclared}"
    # `airflow` comes from the apache-airflow distribution (core + task SDK); its provider packages are
    # imported as airflow.providers.<name>
    imported_dists = set().union(*provided_by.values()) | (
        {"apache-airflow"} if "airflow" in modules else set()
    )
    for provider in ("amazon", "ssh"):
        if any(f"airflow.providers.{provider}" in p.read_text() for p in (REPO / "providers").rglob("*.py")):
            imported_dists.add(f"apache-airflow-providers-{provider}")
    assert not runtime - imported_dists, f"declared but not imported: {runtime - imported_dists}"
