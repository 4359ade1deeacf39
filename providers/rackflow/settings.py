"""rackflow's settings: one place, Airflow's config section ``[rackflow]``.

Each option can be set in airflow.cfg or as ``AIRFLOW__RACKFLOW__<OPTION>``; defaults are declared in
``get_provider_info()["config"]`` so ``airflow config list`` shows them.
"""

from __future__ import annotations

import os
from pathlib import Path

SECTION = "rackflow"


def _get(option: str, fallback: str) -> str:
    from airflow.configuration import conf

    value = conf.get(SECTION, option, fallback=fallback)
    return fallback if value in (None, "") else str(value)


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))


def database_url() -> str:
    """The rackflow inventory database: a SQLite file under AIRFLOW_HOME unless a URL is configured."""
    return _get("database_url", f"sqlite:///{airflow_home() / 'rackflow.db'}")


def fleet_file() -> Path:
    return Path(_get("fleet_file", str(airflow_home() / "fleet.yaml")))


def jobnets_folder() -> Path:
    return Path(_get("jobnets_folder", str(airflow_home() / "jobnets")))


def poll_interval(kind: str, fallback: float) -> float:
    """Seconds between polls for ``kind`` (e.g. ``vm``, ``scheduler``, ``s3``, ``power``)."""
    return float(_get(f"{kind}_poll_interval", str(fallback)))
