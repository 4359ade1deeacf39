"""The React pages' shared layer (API client, UTC dates, state colours, table, polling): its Vitest
unit tests, run through npm, and the bundle Airflow serves being built from the current sources."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

WWW = Path(__file__).resolve().parents[2] / "plugins" / "rackflow_plugin" / "www"


def test_vitest_unit_tests_of_the_shared_layer_pass() -> None:
    npm = shutil.which("npm")
    assert npm, "npm is not on PATH (Node 20+ and npm are needed: see the README)"
    assert (WWW / "node_modules").is_dir(), f"no {WWW}/node_modules: run `make ui`"
    done = subprocess.run([npm, "test"], cwd=WWW, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


def test_bundle_is_built_from_the_current_sources() -> None:
    bundle = WWW / "dist" / "rackflow.umd.js"
    assert bundle.is_file(), "the UI bundle is not built: run `make ui`"
    sources = [p for p in (WWW / "src").rglob("*") if p.is_file() and ".test." not in p.name]
    sources += [WWW / "vite.config.ts", WWW / "package-lock.json"]
    stale = [str(p.relative_to(WWW)) for p in sources if p.stat().st_mtime > bundle.stat().st_mtime]
    assert not stale, f"the UI bundle is older than {stale}: run `make ui`"
