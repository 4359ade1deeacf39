"""Batch job tests: s3:// staging goes to the devfleet's SeaweedFS (set before Airflow reads its config)."""

from __future__ import annotations

import json
import os

import pytest

from rackflow_devfleet.fleet import JOB_ACCOUNTS

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")


@pytest.fixture(autouse=True)
def dag_test_user_has_a_job_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dag.test()`` runs are triggered by the user ``dag_test``: map it like alice."""
    monkeypatch.setenv(
        "AIRFLOW__RACKFLOW__JOB_ACCOUNTS", json.dumps({**JOB_ACCOUNTS, "dag_test": JOB_ACCOUNTS["alice"]})
    )
