"""Who may do what, through rackflow's auth manager in Airflow's real API app (in process).

Jobs belong to their owners (only admins reach ``rackflow_job`` runs through Airflow's own API, end users
use the job API); fleet actions need the op role or a ``[rackflow] dag_grants`` entry (the test
environment grants bob ``rackflow_power_planner``, and ``rackflow_job``, which a grant never reaches);
reservations are cancelled by their owner or an admin; jobnet reports need read access to the runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sync_dags_folder

JOBS = "/rackflow/api/jobs"
RUNS = "/api/v2/dags/rackflow_job/dagRuns"
NON_ADMINS = ("victor", "alice", "bob", "operator")
# Every DAG that acts on the fleet (jobnet and build-environment DAGs: one of each is enough).
FLEET_DAGS = (
    "rackflow_power",
    "rackflow_power_monitor",
    "rackflow_power_planner",
    "rackflow_launch_vms",
    "rackflow_destroy_vms",
    "jobnet_hadoop-cluster",
    "build_env_hadoop-cluster",
)


@pytest.fixture(scope="module")
def dags(airflow_db: Path, rackflow_db: str) -> set[str]:
    found = sync_dags_folder()
    assert {"rackflow_job", *FLEET_DAGS} <= found
    return found


@pytest.fixture(scope="module")
def alices_job(api: Any, auth: Any, dags: set[str]) -> tuple[str, str]:
    """A job of alice's submitted through the job API: (job id, a string only its description holds)."""
    marker = f"alice-private-{uuid.uuid4().hex}"
    resp = api.post(JOBS, json={"executable": "/bin/echo", "arguments": [marker]}, headers=auth("alice"))
    assert resp.status_code == 201, resp.text
    return resp.json()["job_id"], marker


def _run_ids(resp: Any) -> set[tuple[str, str]]:
    assert resp.status_code == 200, resp.text
    return {(r["dag_id"], r["dag_run_id"]) for r in resp.json()["dag_runs"]}


def test_only_admins_read_rackflow_job_runs_through_api_v2(api: Any, auth: Any, alices_job: Any) -> None:
    job_id, marker = alices_job
    assert api.get(RUNS).status_code == 401
    for user in NON_ADMINS:
        assert api.get(RUNS, headers=auth(user)).status_code == 403, user
        assert api.get(f"{RUNS}/{job_id}", headers=auth(user)).status_code == 403, user
        every = api.get("/api/v2/dags/~/dagRuns", params={"limit": 1000}, headers=auth(user))
        assert not any(dag == "rackflow_job" for dag, _ in _run_ids(every)) and marker not in every.text
        listed = api.post("/api/v2/dags/~/dagRuns/list", json={"page_limit": 1000}, headers=auth(user))
        assert not any(dag == "rackflow_job" for dag, _ in _run_ids(listed)), user
        dags = api.get("/api/v2/dags", params={"limit": 1000}, headers=auth(user)).json()["dags"]
        assert "rackflow_job" not in {d["dag_id"] for d in dags} and dags, user
    # Admins keep the whole view, so the checks above can fail.
    run = api.get(f"{RUNS}/{job_id}", headers=auth("admin"))
    assert run.status_code == 200 and run.json()["conf"]["job"]["arguments"] == [marker]
    every = api.get("/api/v2/dags/~/dagRuns", params={"limit": 1000}, headers=auth("admin"))
    assert ("rackflow_job", job_id) in _run_ids(every)


def test_bob_cannot_fail_delete_or_clear_alices_run_through_api_v2(
    api: Any, auth: Any, alices_job: Any
) -> None:
    job_id, _ = alices_job
    task_id = api.get("/api/v2/dags/rackflow_job/tasks", headers=auth("admin")).json()["tasks"][0]["task_id"]
    attempts = [
        ("PATCH", f"{RUNS}/{job_id}", {"state": "failed"}),
        ("DELETE", f"{RUNS}/{job_id}", None),
        ("POST", f"{RUNS}/{job_id}/clear", {"dry_run": False}),
        ("POST", "/api/v2/dags/rackflow_job/clearTaskInstances", {"dry_run": False, "dag_run_id": job_id}),
        ("PATCH", f"{RUNS}/{job_id}/taskInstances/{task_id}", {"new_state": "failed"}),
        (
            "PATCH",
            "/api/v2/dags/~/dagRuns",
            {
                "actions": [
                    {
                        "action": "update",
                        "entities": [{"dag_id": "rackflow_job", "dag_run_id": job_id, "state": "failed"}],
                    }
                ]
            },
        ),
        (
            "POST",
            "/api/v2/dags/~/clearDagRuns",
            {"dag_runs": [{"dag_id": "rackflow_job", "dag_run_id": job_id}]},
        ),
    ]
    for method, url, body in attempts:
        assert api.request(method, url).status_code == 401, url
        for user in ("bob", "alice", "operator"):  # not even the owner: her route is the job API
            resp = api.request(method, url, json=body, headers=auth(user))
            assert resp.status_code == 403, (user, method, url, resp.status_code, resp.text)
    # The bulk task-instance route on ~ checks each entity's DAG: the operator passes the route, not
    # the rackflow_job entity (users are refused at the route).
    bulk_ti = {
        "actions": [
            {
                "action": "update",
                "entities": [
                    {
                        "dag_id": "rackflow_job",
                        "dag_run_id": job_id,
                        "task_id": task_id,
                        "new_state": "failed",
                    }
                ],
            }
        ]
    }
    assert (
        api.patch("/api/v2/dags/~/dagRuns/~/taskInstances", json=bulk_ti, headers=auth("bob")).status_code
        == 403
    )
    bulk = api.patch("/api/v2/dags/~/dagRuns/~/taskInstances", json=bulk_ti, headers=auth("operator"))
    assert bulk.status_code == 200 and bulk.json()["update"]["success"] == [], bulk.text
    assert [e["status_code"] for e in bulk.json()["update"]["errors"]] == [403]
    ti = api.get(f"{RUNS}/{job_id}/taskInstances/{task_id}", headers=auth("admin")).json()
    assert ti["state"] != "failed"
    # Through rackflow's job API bob does not learn that alice's job exists; a viewer may not terminate.
    for path in (f"{JOBS}/{job_id}", f"{JOBS}/{job_id}/events"):
        assert api.get(path).status_code == 401
        assert api.get(path, headers=auth("bob")).status_code == 404
    assert api.post(f"{JOBS}/{job_id}/terminate", json={}).status_code == 401
    assert api.post(f"{JOBS}/{job_id}/terminate", json={}, headers=auth("victor")).status_code == 403
    assert api.post(f"{JOBS}/{job_id}/terminate", json={}, headers=auth("bob")).status_code == 404
    run = api.get(f"{RUNS}/{job_id}", headers=auth("admin")).json()
    assert run["state"] == "queued"
    assert api.get(f"{JOBS}/{job_id}", headers=auth("alice")).json()["terminate_requested_by"] is None


def _api_routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every read route of Airflow's REST API and UI API, mounts included."""
    from fastapi.routing import APIRoute
    from starlette.routing import Mount

    def walk(routes: Any, prefix: str) -> Iterator[tuple[str, str]]:
        for route in routes:
            if isinstance(route, Mount):
                yield from walk(route.routes, prefix + route.path)
            elif isinstance(route, APIRoute):
                path = prefix + route.path
                if not path.startswith(("/api/v2/", "/ui/")):
                    continue
                if "GET" in route.methods:
                    yield "GET", path
                elif path.endswith("/list") and "POST" in route.methods:
                    yield "POST", path  # list routes that read with a POST body

    yield from walk(app.routes, "")


def test_no_api_v2_or_ui_route_shows_a_job_description_to_non_admins(
    api: Any, auth: Any, alices_job: Any
) -> None:
    import re

    job_id, marker = alices_job
    task_id = api.get("/api/v2/dags/rackflow_job/tasks", headers=auth("admin")).json()["tasks"][0]["task_id"]
    routes = sorted(set(_api_routes(api.app)))
    # /wait streams until the run ends (it is checked like every route of the DAG: requires_access_dag);
    # login/logout redirect to the auth manager.
    routes = [(m, p) for m, p in routes if not p.endswith("/wait") and "/auth/log" not in p]
    assert len(routes) > 60, routes
    seen_by_admin = 0
    for dag_id, run_id in (("rackflow_job", job_id), ("~", "~")):
        values = {
            "dag_id": dag_id,
            "dag_run_id": run_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": "-1",
        }
        for method, path in routes:
            url = re.sub(r"\{(\w+)(:path)?\}", lambda m, v=values: v.get(m.group(1), "1"), path)  # type: ignore[misc]
            for user in ("victor", "bob", "operator", "admin"):
                kwargs: dict[str, Any] = {"headers": auth(user), "params": {"dag_id": "rackflow_job"}}
                if method == "POST":
                    kwargs["json"] = {"dag_ids": ["rackflow_job"]}
                try:
                    resp = api.request(method, url, **kwargs)
                except Exception:  # an error inside Airflow's route: a 500 without a body for the client
                    continue
                if user == "admin":
                    seen_by_admin += marker in resp.text
                else:
                    assert marker not in resp.text, (user, method, url, resp.status_code)
    assert seen_by_admin >= 3  # the sweep does reach the job's description where admins may read it


def test_users_submit_through_the_job_api_and_api_v2_runs_are_for_admins(
    api: Any, auth: Any, alices_job: Any
) -> None:
    conf = {"logical_date": None, "conf": {"job": {"executable": "/bin/true"}}}
    total = api.get(RUNS, headers=auth("admin")).json()["total_entries"]
    for user in NON_ADMINS:
        assert api.post(RUNS, json=conf, headers=auth(user)).status_code == 403, user
    assert api.get(RUNS, headers=auth("admin")).json()["total_entries"] == total
    # The job API's own right: viewers read (their own, none), users and up submit.
    assert api.post(JOBS, json={"executable": "/bin/true"}).status_code == 401
    assert api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("victor")).status_code == 403
    assert api.get(JOBS, headers=auth("victor")).json() == {"jobs": [], "total": 0}
    made = api.post(JOBS, json={"executable": "/bin/true"}, headers=auth("bob"))
    assert made.status_code == 201 and made.json()["owner"] == "bob"
    # An admin may still create a run through Airflow's API; it is the admin's job.
    by_admin = api.post(RUNS, json=conf, headers=auth("admin"))
    assert by_admin.status_code == 200 and by_admin.json()["triggering_user_name"] == "admin"


def test_fleet_dags_need_the_op_role_or_a_grant_through_api_v2(api: Any, auth: Any, dags: set[str]) -> None:
    bad_conf = {
        "rackflow_power": {"node": "no-such-node", "action": "off"},
        "rackflow_launch_vms": {"host": "host-a", "count": 0},
        "rackflow_destroy_vms": {"host": "host-a", "names": []},
    }
    for dag_id in FLEET_DAGS:
        runs = f"/api/v2/dags/{dag_id}/dagRuns"
        trigger = {"logical_date": None, "conf": bad_conf.get(dag_id, {})}
        clear = (f"/api/v2/dags/{dag_id}/clearTaskInstances", {"dry_run": True})
        assert api.post(runs, json=trigger).status_code == 401
        for user in ("victor", "alice"):
            assert api.get(runs, headers=auth(user)).status_code == 200, (user, dag_id)  # they read
            assert api.post(runs, json=trigger, headers=auth(user)).status_code == 403, (user, dag_id)
            assert api.post(clear[0], json=clear[1], headers=auth(user)).status_code == 403, (user, dag_id)
            pause = api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": True}, headers=auth(user))
            assert pause.status_code == 403, (user, dag_id)
        # The operator passes the auth manager: a dry-run clear answers, an invalid conf is the DAG's 400.
        assert api.post(clear[0], json=clear[1], headers=auth("operator")).status_code == 200, dag_id
        if dag_id in bad_conf:
            refused = api.post(runs, json=trigger, headers=auth("operator"))
            assert refused.status_code == 400, (dag_id, refused.text)
    # bob's grant: the planner, nothing else; his grant on rackflow_job is ignored (owned by its users).
    planner = ("/api/v2/dags/rackflow_power_planner/clearTaskInstances", {"dry_run": True})
    assert api.post(planner[0], json=planner[1], headers=auth("bob")).status_code == 200
    power = ("/api/v2/dags/rackflow_power/clearTaskInstances", {"dry_run": True})
    assert api.post(power[0], json=power[1], headers=auth("bob")).status_code == 403
    assert api.get(RUNS, headers=auth("bob")).status_code == 403


def test_power_and_reservations_are_refused_to_users_through_rackflow_api(
    api: Any, auth: Any, dags: set[str]
) -> None:
    start = datetime.now(UTC) + timedelta(days=400)  # far ahead: no planner acts on these
    new = {
        "name": "authz-course",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "vm_count": 1,
        "vcpus_per_vm": 1,
        "memory_mib_per_vm": 256,
    }
    reservations = "/rackflow/api/power/reservations"
    assert api.post(reservations, json=new).status_code == 401
    for user in ("victor", "alice"):
        for action in ("on", "off"):
            resp = api.post(f"/rackflow/api/power/nodes/host-a/{action}", json={}, headers=auth(user))
            assert resp.status_code == 403, (user, action)
        assert api.post(reservations, json=new, headers=auth(user)).status_code == 403, user
        assert api.get(reservations, headers=auth(user)).status_code == 200, user  # they read

    mine = api.post(reservations, json=new, headers=auth("operator"))
    admins = api.post(reservations, json={**new, "name": "admins"}, headers=auth("admin"))
    assert mine.status_code == admins.status_code == 201
    assert (mine.json()["created_by"], admins.json()["created_by"]) == ("operator", "admin")
    mine_id, admins_id = mine.json()["id"], admins.json()["id"]
    try:
        assert api.delete(f"{reservations}/{mine_id}").status_code == 401
        assert api.delete(f"{reservations}/{mine_id}", headers=auth("alice")).status_code == 403
        # Another user's reservation answers as one that does not exist, and stays active.
        others = api.delete(f"{reservations}/{admins_id}", headers=auth("operator"))
        missing = api.delete(f"{reservations}/{admins_id + 1000}", headers=auth("operator"))
        assert others.status_code == missing.status_code == 404
        assert others.json()["detail"] == f"no reservation {admins_id}"
        active = {r["id"] for r in api.get(reservations, headers=auth("victor")).json()}
        assert {mine_id, admins_id} <= active
        done = api.delete(f"{reservations}/{mine_id}", headers=auth("operator")).json()
        assert (done["state"], done["canceled_by"]) == ("canceled", "operator") and done["canceled_at"]
    finally:
        # An admin cancels anyone's.
        by_admin = api.delete(f"{reservations}/{admins_id}", headers=auth("admin")).json()
        api.delete(f"{reservations}/{mine_id}", headers=auth("admin"))
    assert (by_admin["state"], by_admin["canceled_by"]) == ("canceled", "admin")


def test_jobnet_report_needs_read_access_to_the_dags_runs(api: Any, auth: Any, alices_job: Any) -> None:
    job_id, _ = alices_job
    url = f"/rackflow/api/jobnets/rackflow_job/runs/{job_id}/report"
    assert api.get(url).status_code == 401
    for user in NON_ADMINS:  # nobody but admins may read rackflow_job's runs
        assert api.get(url, headers=auth(user)).status_code == 403, user
    assert api.get(url, headers=auth("admin")).status_code == 404  # allowed, but not a jobnet
