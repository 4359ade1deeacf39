"""The job API in Airflow's real API app (in process): validation, ownership, termination bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest

JOBS = "/rackflow/api/jobs"
RUNS = "/api/v2/dags/rackflow_job/dagRuns"


def _runs(api: Any, auth: Any) -> int:
    resp = api.get(RUNS, headers=auth("admin"))
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total_entries"])


def test_invalid_description_is_400_naming_the_field_and_records_nothing(
    api: Any, auth: Any, job_dag: str
) -> None:
    before = _runs(api, auth)
    resp = api.post(JOBS, json={"executable": 5}, headers=auth("alice"))
    assert resp.status_code == 400, resp.text
    assert any(p.startswith("executable") for p in resp.json()["detail"]["problems"])
    # Through Airflow's own API only admins may create rackflow_job runs (rackflow's auth manager);
    # the DAG's params schema refuses the same description there.
    raw = api.post(
        RUNS, json={"logical_date": None, "conf": {"job": {"executable": 5}}}, headers=auth("admin")
    )
    assert raw.status_code == 400
    json_type = {"Content-Type": "application/json"}
    assert api.post(JOBS, content=b"{not json", headers={**auth("alice"), **json_type}).status_code == 400
    assert _runs(api, auth) == before


def test_submit_list_get_and_ownership(api: Any, auth: Any, job_dag: str) -> None:
    resp = api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("alice"))
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["job_id"]
    assert resp.json()["owner"] == "alice"

    mine = api.get(JOBS, headers=auth("alice")).json()["jobs"]
    assert job_id in [j["job_id"] for j in mine]
    assert all(j["owner"] == "alice" for j in mine)
    assert job_id not in [j["job_id"] for j in api.get(JOBS, headers=auth("bob")).json()["jobs"]]
    assert job_id in [j["job_id"] for j in api.get(JOBS, headers=auth("admin")).json()["jobs"]]

    job = api.get(f"{JOBS}/{job_id}", headers=auth("alice")).json()
    assert job["state"] == "QUEUED" and job["owner"] == "alice"
    assert api.get(f"{JOBS}/{job_id}", headers=auth("admin")).status_code == 200
    # bob can neither see nor cancel alice's job, nor learn that it exists.
    assert api.get(f"{JOBS}/{job_id}", headers=auth("bob")).status_code == 404
    assert api.get(f"{JOBS}/{job_id}/events", headers=auth("bob")).status_code == 404
    assert api.post(f"{JOBS}/{job_id}/terminate", json={}, headers=auth("bob")).status_code == 404
    assert api.get(f"{JOBS}/no-such-job", headers=auth("alice")).status_code == 404
    assert api.get(JOBS).status_code == 401
    assert api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("victor")).status_code == 403


def test_terminate_first_request_acts_later_ones_say_already_terminating(
    api: Any, auth: Any, job_dag: str
) -> None:
    from rackflow.db import jobs

    job_id = api.post(
        JOBS, json={"executable": "/bin/sleep", "arguments": ["60"]}, headers=auth("bob")
    ).json()["job_id"]
    first = api.post(f"{JOBS}/{job_id}/terminate", json={"reason": "wrong input"}, headers=auth("bob"))
    second = api.post(f"{JOBS}/{job_id}/terminate", json={}, headers=auth("bob"))
    assert first.status_code == 202 and first.json()["acted"] is True
    assert second.status_code == 200 and second.json()["acted"] is False
    assert "already terminating" in second.json()["message"]
    assert jobs.termination_requested("rackflow_job", job_id) == "bob"
    events = api.get(f"{JOBS}/{job_id}/events", headers=auth("bob")).json()
    assert [e["message"] for e in events] == ["termination requested by bob: wrong input"]


def test_openapi_documents_the_job_routes(api: Any) -> None:
    paths = api.get("/rackflow/openapi.json").json()["paths"]
    assert {
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/events",
        "/api/jobs/{job_id}/terminate",
    } <= set(paths)


def test_user_without_a_job_account_gets_403_naming_the_mapping_and_nothing_is_recorded(
    api: Any, auth: Any, job_dag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from rackflow_devfleet.fleet import JOB_ACCOUNTS

    monkeypatch.setenv(
        "AIRFLOW__RACKFLOW__JOB_ACCOUNTS", json.dumps({u: a for u, a in JOB_ACCOUNTS.items() if u != "bob"})
    )
    before = _runs(api, auth)
    resp = api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("bob"))
    assert resp.status_code == 403, resp.text
    assert "job_accounts" in resp.json()["detail"] and "'bob'" in resp.json()["detail"]
    assert _runs(api, auth) == before
    assert api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("alice")).status_code == 201
