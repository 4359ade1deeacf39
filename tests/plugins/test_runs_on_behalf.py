"""rackflow's routes start runs on the caller's behalf (rackflow_plugin.runs): the run is the caller's,
and the caller still cannot reach the job DAG through Airflow's own API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sync_dags_folder

JOBS = "/rackflow/api/jobs"


@pytest.fixture(scope="module")
def dags(airflow_db: Path, rackflow_db: str) -> set[str]:
    found = sync_dags_folder()
    assert "rackflow_job" in found
    return found


def test_a_job_submitted_by_alice_is_a_run_she_triggered(api: Any, auth: Any, dags: set[str]) -> None:
    resp = api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("alice"))
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["job_id"]
    run = api.get(f"/api/v2/dags/rackflow_job/dagRuns/{job_id}", headers=auth("admin"))
    assert run.status_code == 200, run.text
    assert run.json()["triggering_user_name"] == "alice"
    assert run.json()["conf"]["job"]["executable"] == "/bin/true"
    assert api.get(f"/api/v2/dags/rackflow_job/dagRuns/{job_id}", headers=auth("alice")).status_code == 403
