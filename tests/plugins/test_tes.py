"""The GA4GH TES routes in Airflow's real API app (in process): auth, ownership, validation, views."""

from __future__ import annotations

import base64
from typing import Any

import pytest

TES = "/rackflow/ga4gh/tes/v1"
RUNS = "/api/v2/dags/rackflow_job/dagRuns"
TASK = {
    "name": "in-process task",
    "inputs": [{"content": "secret inline\n", "path": "/data/in.txt"}],
    "executors": [{"image": "alpine", "command": ["cat", "data/in.txt"]}],
    "tags": {"project": "tes-test"},
}


def _runs(api: Any, auth: Any) -> int:
    return int(api.get(RUNS, headers=auth("admin")).json()["total_entries"])


def test_routes_need_a_token_and_the_job_right(api: Any, auth: Any, job_dag: str) -> None:
    assert api.get(f"{TES}/service-info").status_code == 401
    assert api.get(f"{TES}/tasks").status_code == 401
    assert api.post(f"{TES}/tasks", json=TASK).status_code == 401
    assert api.get(f"{TES}/tasks/tes__x").status_code == 401
    assert api.post(f"{TES}/tasks/tes__x:cancel").status_code == 401
    info = api.get(f"{TES}/service-info", headers=auth("alice"))
    assert info.status_code == 200
    assert info.json()["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert api.post(f"{TES}/tasks", json=TASK, headers=auth("victor")).status_code == 403
    # One prefix only: the fallbacks py-tes tries after a failure are not TES here.
    assert api.get("/rackflow/v1/tasks", headers=auth("alice")).status_code == 404
    assert api.get("/rackflow/tasks", headers=auth("alice")).status_code == 404


def test_tes_1_0_clients_find_service_info_under_tasks(api: Any, auth: Any, job_dag: str) -> None:
    """py-tes 0.4 (TES 1.0) asks ``/v1/tasks/service-info`` and reads only name, doc and storage."""
    assert api.get(f"{TES}/tasks/service-info").status_code == 401
    info = api.get(f"{TES}/tasks/service-info", headers=auth("alice"))
    assert info.status_code == 200
    assert set(info.json()) == {"name", "doc", "storage"} and "s3://" in info.json()["storage"]


def test_basic_credentials_go_through_the_auth_managers_login(api: Any, auth: Any, job_dag: str) -> None:
    """HTTP Basic on TES routes: the simple auth manager's own login checks the password."""
    from tests.conftest import PASSWORDS

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    listed = api.get(f"{TES}/tasks", headers=basic("alice", PASSWORDS["alice"]))
    assert listed.status_code == 200, listed.text
    wrong = api.get(f"{TES}/tasks", headers=basic("alice", "not-her-password"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    assert api.get(f"{TES}/tasks", headers=basic("nobody", "x")).status_code == 401
    assert api.get(f"{TES}/tasks", headers={"Authorization": "Basic %%%"}).status_code == 401
    # The rights are the token's: a viewer may not create tasks, whichever way it logs in.
    victor = api.post(f"{TES}/tasks", json=TASK, headers=basic("victor", PASSWORDS["victor"]))
    assert victor.status_code == 403
    # Only TES routes take Basic: the job API stays Bearer (or the UI's cookie).
    jobs = api.get("/rackflow/api/jobs", headers=basic("alice", PASSWORDS["alice"]))
    assert jobs.status_code == 401


def test_invalid_task_is_400_naming_the_field_and_records_nothing(api: Any, auth: Any, job_dag: str) -> None:
    before = _runs(api, auth)
    for body, field in (
        ({"name": "x", "executors": []}, "executors"),
        ({"executors": [{"image": "a", "command": ["x"]}], "extra": True}, "extra"),
        ({"executors": [{"image": "a", "command": ["x"]}],
          "inputs": [{"url": "s3://not-allowed/k", "path": "/in"}]}, "inputs[0].url"),
        ({"executors": [{"image": "a", "command": ["x"]}],
          "outputs": [{"url": "s3://rackflow-jobs/k", "path": "/out"}]}, "outputs[0].url"),
    ):  # fmt: skip
        resp = api.post(f"{TES}/tasks", json=body, headers=auth("alice"))
        assert resp.status_code == 400, resp.text
        assert any(p.startswith(field) for p in resp.json()["detail"]["problems"]), resp.text
    json_type = {"Content-Type": "application/json"}
    resp = api.post(f"{TES}/tasks", content=b"[1", headers={**auth("alice"), **json_type})
    assert resp.status_code == 400
    assert _runs(api, auth) == before


def test_unmapped_user_is_403_naming_the_mapping(
    api: Any, auth: Any, job_dag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__RACKFLOW__JOB_ACCOUNTS", '{"bob": "rf-bob"}')
    resp = api.post(f"{TES}/tasks", json=TASK, headers=auth("alice"))
    assert resp.status_code == 403 and "job_accounts" in resp.text


def test_create_views_list_ownership_and_cancel(api: Any, auth: Any, job_dag: str) -> None:
    resp = api.post(f"{TES}/tasks", json=TASK, headers=auth("alice"))
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"id"}
    task_id = resp.json()["id"]
    # A second POST of the same body is a second task (py-tes only repeats a POST that failed).
    other = api.post(f"{TES}/tasks", json={**TASK, "name": "other"}, headers=auth("alice")).json()["id"]
    assert other != task_id

    minimal = api.get(f"{TES}/tasks/{task_id}", params={"view": "MINIMAL"}, headers=auth("alice")).json()
    assert minimal == {"id": task_id, "state": "QUEUED"}
    basic = api.get(f"{TES}/tasks/{task_id}", headers=auth("alice")).json()
    assert basic["name"] == "in-process task" and basic["tags"] == {"project": "tes-test"}
    assert "content" not in basic["inputs"][0]  # BASIC leaves inline content out
    assert None not in basic.values() and "system_logs" not in basic["logs"][0]
    full = api.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}, headers=auth("alice")).json()
    assert full["inputs"][0]["content"] == "secret inline\n"
    assert "creation_time" in full and full["executors"] == TASK["executors"]
    huge = api.get(f"{TES}/tasks/{task_id}", params={"view": "HUGE"}, headers=auth("alice"))
    assert huge.status_code == 422

    # The same job through the job API.
    assert api.get(f"/rackflow/api/jobs/{task_id}", headers=auth("alice")).json()["owner"] == "alice"

    # Ownership: bob sees nothing of alice's, admins everything.
    for who, status in (("bob", 404), ("admin", 200)):
        assert api.get(f"{TES}/tasks/{task_id}", headers=auth(who)).status_code == status
    assert api.post(f"{TES}/tasks/{task_id}:cancel", headers=auth("bob")).status_code == 404
    assert api.get(f"{TES}/tasks/no-such", headers=auth("alice")).status_code == 404
    bobs = api.get(f"{TES}/tasks", headers=auth("bob")).json()["tasks"]
    assert task_id not in [t["id"] for t in bobs]

    listed = api.get(f"{TES}/tasks", params={"name_prefix": "in-process"}, headers=auth("alice")).json()
    assert task_id in [t["id"] for t in listed["tasks"]] and other not in [t["id"] for t in listed["tasks"]]
    wrong_tag = {"tag_key": "project", "tag_value": "nope"}
    tagged = api.get(f"{TES}/tasks", params=wrong_tag, headers=auth("alice"))
    assert tagged.json()["tasks"] == []
    page = api.get(f"{TES}/tasks", params={"page_size": 1}, headers=auth("alice")).json()
    assert page["tasks"] == [{"id": other, "state": "QUEUED"}]
    rest = api.get(
        f"{TES}/tasks", params={"page_size": 1, "page_token": page["next_page_token"]}, headers=auth("alice")
    ).json()
    assert rest["tasks"][0]["id"] == task_id

    assert api.post(f"{TES}/tasks/{task_id}:cancel", headers=auth("alice")).json() == {}
    minimal = api.get(f"{TES}/tasks/{task_id}", params={"view": "MINIMAL"}, headers=auth("alice")).json()
    assert minimal["state"] == "CANCELING"
    assert api.get(f"{TES}/tasks", params={"state": "CANCELING"}, headers=auth("alice")).json()["tasks"] == [
        {"id": task_id, "state": "CANCELING"}
    ]
    assert api.post(f"{TES}/tasks/{task_id}:cancel", headers=auth("alice")).status_code == 200
