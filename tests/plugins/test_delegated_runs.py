"""rackflow's routes start runs through Airflow's public REST API with a delegated-run token
(rackflow_plugin.runs, RackflowAuthManager.delegated_run_token): the run is the caller's, and the token
allows creating a run of its one DAG and nothing else."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sync_dags_folder

JOBS = "/rackflow/api/jobs"


@pytest.fixture(scope="module")
def dags(airflow_db: Path, rackflow_db: str) -> set[str]:
    found = sync_dags_folder()
    assert {"rackflow_job", "rackflow_power"} <= found
    return found


def _delegated(user: str, dag_id: str) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().delegated_run_token(SimpleAuthManagerUser(username=user, role="user"), dag_id)
    return {"Authorization": f"Bearer {token}"}


def test_a_job_submitted_by_alice_is_a_run_she_triggered(api: Any, auth: Any, dags: set[str]) -> None:
    resp = api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("alice"))
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["job_id"]
    run = api.get(f"/api/v2/dags/rackflow_job/dagRuns/{job_id}", headers=auth("admin"))
    assert run.status_code == 200, run.text
    assert run.json()["triggering_user_name"] == "alice"
    # and alice herself still cannot reach the run through Airflow's API
    assert api.get(f"/api/v2/dags/rackflow_job/dagRuns/{job_id}", headers=auth("alice")).status_code == 403


def test_a_delegated_token_creates_a_run_of_its_dag_and_nothing_else(api: Any, dags: set[str]) -> None:
    token = _delegated("alice", "rackflow_job")
    run_id = f"delegated__{uuid.uuid4().hex}"
    created = api.post(
        "/api/v2/dags/rackflow_job/dagRuns",
        json={"dag_run_id": run_id, "logical_date": None, "conf": {"job": {"executable": "/bin/true"}}},
        headers=token,
    )
    assert created.status_code == 200, created.text
    assert created.json()["triggering_user_name"] == "alice"
    other = api.post(
        "/api/v2/dags/rackflow_power/dagRuns",
        json={"dag_run_id": f"delegated__{uuid.uuid4().hex}", "logical_date": None, "conf": {}},
        headers=token,
    )
    assert other.status_code == 403, other.text
    for path in (
        "/api/v2/dags/rackflow_job/dagRuns",
        f"/api/v2/dags/rackflow_job/dagRuns/{run_id}",
        "/api/v2/dags",
        "/api/v2/connections",
        "/api/v2/variables",
        JOBS,
    ):
        assert api.get(path, headers=token).status_code == 403, path
    assert api.patch(f"/api/v2/dags/rackflow_job/dagRuns/{run_id}", json={"state": "failed"},
                     headers=token).status_code == 403  # fmt: skip
