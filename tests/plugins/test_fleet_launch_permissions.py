"""Who may act on the fleet, on a real Airflow standalone with rackflow's auth manager.

Viewers and users (alice) read the layout but launch, destroy or power nothing, through Airflow's own
``/api/v2`` or rackflow's routes; the operator launches a VM, destroys it and powers a node on.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from rackflow.hooks.libvirt import LibvirtHook

LAUNCH, DESTROY, POWER = "rackflow_launch_vms", "rackflow_destroy_vms", "rackflow_power"


def _runs(stack: Any, dag_id: str) -> int:
    resp = stack.session("admin").get(f"{stack.url}/api/v2/dags/{dag_id}/dagRuns", timeout=30)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total_entries"])


def _trigger(stack: Any, session: Any, dag_id: str, conf: dict[str, Any]) -> Any:
    return session.post(
        f"{stack.url}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}, timeout=30
    )


def _finished(stack: Any, dag_id: str, run_id: str, timeout: float = 240) -> str:
    admin = stack.session("admin")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = admin.get(f"{stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30).json()
        if run["state"] in ("success", "failed"):
            return str(run["state"])
        time.sleep(0.5)
    raise AssertionError(f"{dag_id} run {run_id} did not finish within {timeout}s; see {stack.log}")


def _vms(prefix: str) -> set[str]:
    with LibvirtHook("libvirt_host_c") as hook:
        return {vm.name for vm in hook.list_domains(addresses=False) if vm.name.startswith(prefix)}


def test_a_viewer_reads_the_layout_but_cannot_launch_and_invalid_params_record_no_run(
    airflow_stack: Any,
) -> None:
    airflow_stack.wait_for_dag(LAUNCH)
    viewer, operator = airflow_stack.session("victor"), airflow_stack.session("operator")
    assert viewer.get(f"{airflow_stack.url}/rackflow/api/hosts", timeout=30).status_code == 200
    before = _runs(airflow_stack, LAUNCH)
    conf = {"host": "host-a", "count": 1, "pattern": "perm-{seq:02d}"}
    assert _trigger(airflow_stack, viewer, LAUNCH, conf).status_code == 403
    # Invalid params are the operator's 400 (alice, a user, is refused before: see the test below).
    for bad in ({"count": 0}, {"count": 101}, {"host": "host-z"}, {"pattern": "no-seq"}, {"image": "../x"}):
        resp = _trigger(airflow_stack, operator, LAUNCH, {**conf, **bad})
        assert resp.status_code == 400, (bad, resp.status_code, resp.text)
    assert _runs(airflow_stack, LAUNCH) == before


def test_alice_is_refused_fleet_actions_and_the_operator_launches_destroys_and_powers(
    airflow_stack: Any,
) -> None:
    for dag_id in (LAUNCH, DESTROY, POWER):
        airflow_stack.wait_for_dag(dag_id)
    url = airflow_stack.url
    alice, operator = airflow_stack.session("alice"), airflow_stack.session("operator")
    prefix = f"az{uuid.uuid4().hex[:5]}"
    launch = {"host": "host-c", "count": 1, "pattern": f"{prefix}-{{seq:02d}}", "memory_mib": 128}
    destroy = {"host": "host-c", "names": [f"{prefix}-01"]}
    power = {"node": "host-c", "action": "on", "migrate": False, "hard": False, "reason": "authz test"}
    before = {dag_id: _runs(airflow_stack, dag_id) for dag_id in (LAUNCH, DESTROY, POWER)}

    # alice (role user): every fleet action is 403 and records nothing, on both APIs.
    for dag_id, conf in ((LAUNCH, launch), (DESTROY, destroy), (POWER, power)):
        assert _trigger(airflow_stack, alice, dag_id, conf).status_code == 403, dag_id
    for action in ("on", "off"):
        resp = alice.post(f"{url}/rackflow/api/power/nodes/host-c/{action}", json={}, timeout=30)
        assert resp.status_code == 403, (action, resp.text)
    reservation = {
        "name": "alice-cluster",
        "start": "2030-01-01T00:00:00+00:00",
        "end": "2030-01-01T01:00:00+00:00",
        "vm_count": 1,
        "vcpus_per_vm": 1,
        "memory_mib_per_vm": 128,
    }
    refused = alice.post(f"{url}/rackflow/api/power/reservations", json=reservation, timeout=30)
    assert refused.status_code == 403, refused.text
    assert {dag_id: _runs(airflow_stack, dag_id) for dag_id in before} == before

    # The operator: a real VM is launched, then destroyed; a power-on run is accepted.
    try:
        run = _trigger(airflow_stack, operator, LAUNCH, launch)
        assert run.status_code == 200, run.text
        assert _finished(airflow_stack, LAUNCH, run.json()["dag_run_id"]) == "success"
        assert _vms(prefix) == {f"{prefix}-01"}
        run = _trigger(airflow_stack, operator, DESTROY, destroy)
        assert run.status_code == 200, run.text
        assert _finished(airflow_stack, DESTROY, run.json()["dag_run_id"]) == "success"
        assert _vms(prefix) == set()
    finally:
        with LibvirtHook("libvirt_host_c") as hook:
            for name in _vms(prefix):
                hook.destroy_domain(name)
    on = operator.post(f"{url}/rackflow/api/power/nodes/host-c/on", json={"reason": "authz"}, timeout=60)
    assert on.status_code == 202, on.text
    made = operator.get(f"{url}/api/v2/dags/{POWER}/dagRuns/{on.json()['run_id']}", timeout=30).json()
    assert made["triggering_user_name"] == "operator"


def test_the_operator_launches_over_a_group_and_an_unknown_group_records_no_run(airflow_stack: Any) -> None:
    """A launch over a network group through Airflow's API: the run's plan puts the VMs on hosts of
    that group only; a group the inventory does not have is the params' 400."""
    from rackflow.operators.libvirt import PLAN_KEY

    airflow_stack.wait_for_dag(LAUNCH)
    url = airflow_stack.url
    operator = airflow_stack.session("operator")
    prefix = f"gr{uuid.uuid4().hex[:5]}"
    conf = {
        "host": None,
        "group": "rack-1",
        "count": 2,
        "pattern": f"{prefix}-{{seq:02d}}",
        "memory_mib": 128,
    }
    before = _runs(airflow_stack, LAUNCH)
    bad = _trigger(airflow_stack, operator, LAUNCH, {**conf, "group": "rack-9"})
    assert bad.status_code == 400 and "group" in bad.text, bad.text
    assert _runs(airflow_stack, LAUNCH) == before

    resp = _trigger(airflow_stack, operator, LAUNCH, conf)
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    try:
        assert _finished(airflow_stack, LAUNCH, run_id) == "success"
        entry = f"{url}/api/v2/dags/{LAUNCH}/dagRuns/{run_id}/taskInstances/launch/xcomEntries"
        plan = operator.get(f"{entry}/{PLAN_KEY}", timeout=30).json()["value"]
        assert sorted(plan) == [f"{prefix}-01", f"{prefix}-02"]
        assert set(plan.values()) <= {"host-a", "host-b"}
        vms = operator.get(f"{entry}/return_value", timeout=30).json()["value"]
        assert {vm["name"]: vm["host"] for vm in vms} == plan
    finally:
        for conn_id in ("libvirt_host_a", "libvirt_host_b"):
            with LibvirtHook(conn_id) as hook:
                for vm in hook.list_domains(addresses=False):
                    if vm.name.startswith(prefix):
                        hook.destroy_domain(vm.name)
