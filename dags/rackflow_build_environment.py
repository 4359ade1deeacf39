"""Airflow DAGs ``build_env_<jobnet>``: launch VMs, run the jobnet on them, revert and destroy on failure."""

from __future__ import annotations

from rackflow import settings
from rackflow.dag_factories.build_environment import build_environment_dags

globals().update(build_environment_dags(settings.jobnets_folder()))
