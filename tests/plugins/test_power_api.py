"""/rackflow/api/power through Airflow's real API app, on the power fleet's inventory and BMCs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture
def fleet(power_fleet, monkeypatch):
    monkeypatch.setenv("AIRFLOW__RACKFLOW__DATABASE_URL", power_fleet.url)
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_BMC_TIMEOUT", "8")  # IPMI is slow on a loaded CI box
    power_fleet.reset()
    from rackflow.services.power.monitor import monitor_cycle

    monitor_cycle(url=power_fleet.url)
    return power_fleet


@pytest.fixture
def power_dag_serialized(airflow_db, fleet):
    """rackflow_power in Airflow's DB as the dag-processor leaves it, parsed with the power fleet's
    inventory (its node enum comes from the inventory): the API triggers runs of it."""
    from tests.conftest import sync_dags_folder

    assert "rackflow_power" in sync_dags_folder()


def test_power_routes_need_a_token(api):
    assert api.get("/rackflow/api/power/nodes").status_code == 401
    assert api.post("/rackflow/api/power/nodes/pw-a/off").status_code == 401


def test_nodes_show_mode_status_and_last_transition(api, auth, fleet):
    resp = api.get("/rackflow/api/power/nodes", headers=auth("victor"))
    assert resp.status_code == 200
    nodes = {n["name"]: n for n in resp.json()}
    assert {n: (v["mode"], v["status"]) for n, v in nodes.items()} == {
        "pw-a": ("on", "on"),
        "pw-b": ("on", "on"),
        "pw-c": ("on", "on"),
    }
    last = nodes["pw-c"]["last_transition"]
    assert (last["to_value"], last["actor"]) == ("on", "rackflow_power_monitor")


def test_power_off_with_vm_answers_409_with_vm_names_and_changes_nothing(api, auth, fleet):
    fleet.add_vm("pw-a", "db-07")
    resp = api.post("/rackflow/api/power/nodes/pw-a/off", headers=auth("operator"), json={})
    assert resp.status_code == 409
    detail = resp.json()["detail"]
    assert detail["vms"] == ["db-07"] and "db-07" in detail["message"]
    assert fleet.powered("pw-a")
    history = api.get("/rackflow/api/power/nodes/pw-a/history", headers=auth("alice")).json()
    assert [h["field"] for h in history] == ["status"]


def test_viewer_and_user_cannot_power_or_reserve(api, auth, fleet):
    # Power and reservations are fleet actions: the op role (or a dag_grants entry), not the user role.
    for user in ("victor", "alice"):
        assert api.post("/rackflow/api/power/nodes/pw-a/on", headers=auth(user), json={}).status_code == 403
        assert api.post("/rackflow/api/power/nodes/pw-a/off", headers=auth(user), json={}).status_code == 403
        assert api.get("/rackflow/api/power/can-act", headers=auth(user)).json()["can_act"] is False
    assert api.get("/rackflow/api/power/can-act", headers=auth("operator")).json()["can_act"] is True
    assert fleet.powered("pw-a")


def test_allowed_power_off_with_migration_triggers_a_rackflow_power_run(
    api, auth, fleet, power_dag_serialized
):
    fleet.add_vm("pw-a", "db-07")
    resp = api.post("/rackflow/api/power/nodes/pw-a/off", headers=auth("operator"), json={"migrate": True})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["migrations"] == {"db-07": "pw-b"}
    run = api.get(f"/api/v2/dags/rackflow_power/dagRuns/{body['run_id']}", headers=auth("admin")).json()
    assert run["conf"] == {"node": "pw-a", "action": "off", "migrate": True, "hard": False, "reason": ""}
    assert run["triggering_user_name"] == "operator"


def test_reservations_create_list_cancel_and_plan_shows_next_actions(api, auth, fleet):
    start = datetime.now(UTC) + timedelta(minutes=20)
    new = {
        "name": "hpc-course",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=2)).isoformat(),
        "vm_count": 2,
        "vcpus_per_vm": 8,
        "memory_mib_per_vm": 1024,
        "group": "pw-g1",
    }
    made = api.post("/rackflow/api/power/reservations", headers=auth("operator"), json=new)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    listed = api.get("/rackflow/api/power/reservations", headers=auth("victor")).json()
    assert [r["key"] for r in listed] == [key]
    plan = api.get("/rackflow/api/power/plan", headers=auth("victor")).json()
    # pw-a/pw-b are needed (and on); pw-c, idle in another group, is the planner's next power off.
    assert [(a["node"], a["action"]) for a in plan["actions"]] == [("pw-c", "off")]
    assert key in plan["actions"][0]["reason"] or "not needed" in plan["actions"][0]["reason"]
    assert fleet.powered("pw-c")  # the plan is a dry run
    bad = api.post(
        "/rackflow/api/power/reservations", headers=auth("operator"), json={**new, "group": "nowhere"}
    )
    assert bad.status_code == 400
    assert (
        api.delete(f"/rackflow/api/power/reservations/{made.json()['id']}", headers=auth("operator")).json()[
            "state"
        ]
        == "canceled"
    )
    assert api.get("/rackflow/api/power/reservations", headers=auth("victor")).json() == []


def test_power_page_is_a_react_app_in_the_nav(api, auth, token):
    plugin = next(
        p
        for p in api.get("/api/v2/plugins", headers=auth("admin")).json()["plugins"]
        if p["name"] == "rackflow"
    )
    (app,) = [a for a in plugin["react_apps"] if a["url_route"] == "rackflow-power"]
    assert app["destination"] == "nav" and app["bundle_url"].startswith("rackflow/ui/app/rackflow.umd.js")
    bundle = api.get("/rackflow/ui/app/rackflow.umd.js", headers={"Cookie": f"_token={token('victor')}"})
    assert bundle.status_code == 200 and "power/timeline" in bundle.text
