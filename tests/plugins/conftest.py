"""Fixtures of the plugin's tests: the rackflow_job DAG in Airflow's metadata DB, and one failed run of
the hadoop example's build environment on the session's Airflow stack."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sync_dags_folder

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")


@pytest.fixture(scope="module")
def job_dag(airflow_db: Path, rackflow_db: str) -> str:
    """The dags folder parsed into the metadata DB, as the dag-processor would (rackflow_job among them)."""
    assert "rackflow_job" in sync_dags_folder()
    return "rackflow_job"


HADOOP_BUILD_DAG = "build_env_hadoop-cluster"


@pytest.fixture(scope="session")
def failed_hadoop_build(
    airflow_stack: Any, devfleet: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """One run of the hadoop example's build-environment DAG on the session's stack, ended: it launches
    three VMs on host-b, fails its smoke test on purpose, reverts the steps and destroys the VMs.
    ``(run_id, root)``; what it did is the tests' to check.

    Shared by the jobnet e2e test (tests/plugins/test_jobnet_e2e.py) and the report tab's browser test
    (test_jobnet_report_browser.py): the run defers some thirty steps, minutes on a loaded machine.
    """
    airflow_stack.wait_for_dag(HADOOP_BUILD_DAG)
    admin = airflow_stack.session("admin")
    root = tmp_path_factory.mktemp("hadoop-build") / "root"
    resp = admin.post(
        f"{airflow_stack.url}/api/v2/dags/{HADOOP_BUILD_DAG}/dagRuns",
        json={
            "logical_date": None,
            "conf": {
                "host": "host-b",
                "pattern": "e2e-hd-{seq:02d}",
                "root": str(root),
                "fail_smoke_test": True,
            },
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    run_id = str(resp.json()["dag_run_id"])
    run_url = f"{airflow_stack.url}/api/v2/dags/{HADOOP_BUILD_DAG}/dagRuns/{run_id}"
    deadline = time.monotonic() + 400
    while admin.get(run_url, timeout=30).json()["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, f"the build run {run_id} did not finish; see {airflow_stack.log}"
        time.sleep(0.5)
    return run_id, root
