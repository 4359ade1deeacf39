"""The rackflow wheel ships the provider and the plugin, and no code that starts daemons.

The dev fleet (loopback libvirtd, Slurm, sshd, SeaweedFS, BMC emulators) is its own distribution,
``rackflow-devfleet`` in ``devfleet/``, installed by ``make demo``/``make test`` next to rackflow.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_holds_provider_and_plugin_but_no_devfleet(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("rackflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rackflow/hooks/scheduler.py" in names
    assert "rackflow_plugin/__init__.py" in names
    assert "rackflow/db/migrations/env.py" in names
    assert not [n for n in names if "devfleet" in n]
