"""Who may launch: Airflow's own dagRuns route for rackflow_launch_vms, on a real Airflow standalone."""

from __future__ import annotations

from typing import Any

DAG = "rackflow_launch_vms"


def _runs(stack: Any) -> int:
    resp = stack.session("admin").get(f"{stack.url}/api/v2/dags/{DAG}/dagRuns", timeout=30)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total_entries"])


def test_a_viewer_reads_the_layout_but_cannot_launch_and_invalid_params_record_no_run(
    airflow_stack: Any,
) -> None:
    airflow_stack.wait_for_dag(DAG)
    url = f"{airflow_stack.url}/api/v2/dags/{DAG}/dagRuns"
    viewer, alice = airflow_stack.session("victor"), airflow_stack.session("alice")
    assert viewer.get(f"{airflow_stack.url}/rackflow/api/hosts", timeout=30).status_code == 200
    before = _runs(airflow_stack)
    conf = {"host": "host-a", "count": 1, "pattern": "perm-{seq:02d}"}
    assert viewer.post(url, json={"logical_date": None, "conf": conf}, timeout=30).status_code == 403
    for bad in ({"count": 0}, {"count": 101}, {"host": "host-z"}, {"pattern": "no-seq"}, {"image": "../x"}):
        resp = alice.post(url, json={"logical_date": None, "conf": {**conf, **bad}}, timeout=30)
        assert resp.status_code == 400, (bad, resp.status_code, resp.text)
    assert _runs(airflow_stack) == before
