"""Fixtures of the plugin's route tests: the rackflow_job DAG in Airflow's metadata DB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import sync_dags_folder

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")


@pytest.fixture(scope="module")
def job_dag(airflow_db: Path, rackflow_db: str) -> str:
    """The dags folder parsed into the metadata DB, as the dag-processor would (rackflow_job among them)."""
    assert "rackflow_job" in sync_dags_folder()
    return "rackflow_job"
