"""PowerControlOperator and the rackflow_power DAG, run with dag.test() against the power fleet."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.conftest import REPO


@pytest.fixture
def fleet(power_fleet, airflow_db, monkeypatch):
    """The power fleet's inventory is the one the DAG's tasks use (read at execute time)."""
    monkeypatch.setenv("AIRFLOW__RACKFLOW__DATABASE_URL", power_fleet.url)
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_BMC_TIMEOUT", "8")  # IPMI is slow on a loaded CI box
    power_fleet.reset()
    from rackflow.services.power.monitor import monitor_cycle

    monitor_cycle(url=power_fleet.url)
    return power_fleet


def _power_dags(file: str = "rackflow_power.py") -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"dags_{file[:-3]}", REPO / "dags" / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rackflow_power_dag_powers_a_node_off_and_on_and_records_the_run(fleet):
    dag = _power_dags().control_dag
    assert set(dag.params.get_param("node").schema["enum"]) >= {"pw-a", "pw-b", "pw-c"}
    run = dag.test(run_conf={"node": "pw-c", "action": "off", "reason": "maintenance"})
    assert run.state == "success"
    out = run.get_task_instance("power").xcom_pull(task_ids="power")
    assert (out["node"], out["action"], out["status"]) == ("pw-c", "off", "stopping")
    assert not fleet.powered("pw-c")
    run = dag.test(run_conf={"node": "pw-c", "action": "on"})
    assert run.state == "success"
    assert fleet.powered("pw-c")


def test_rackflow_power_dag_refuses_power_off_with_vm_and_fails_with_names(fleet):
    fleet.add_vm("pw-b", "web-01")
    dag = _power_dags().control_dag
    run = dag.test(run_conf={"node": "pw-b", "action": "off"})
    assert run.state == "failed"
    assert fleet.powered("pw-b")
    assert fleet.vms("pw-b") == ["web-01"]


def test_rackflow_power_dag_migrates_then_powers_off(fleet):
    fleet.add_vm("pw-b", "web-01")
    dag = _power_dags().control_dag
    run = dag.test(run_conf={"node": "pw-b", "action": "off", "migrate": True})
    assert run.state == "success"
    out = run.get_task_instance("power").xcom_pull(task_ids="power")
    assert out["migrations"] == {"web-01": "pw-a"}
    assert fleet.vms("pw-a") == ["web-01"]
    assert not fleet.powered("pw-b")


def test_monitor_and_planner_dags_run_one_cycle(fleet):
    dags = _power_dags()
    fleet.set_powered("pw-a", False)
    run = dags.monitor_dag.test()
    assert run.state == "success"
    assert run.get_task_instance("monitor").xcom_pull(task_ids="monitor")["pw-a"] == "booting"
    assert fleet.powered("pw-a")  # mode on + status off -> powered on
    plan = _power_dags("rackflow_power_planner.py").planner_dag.test(run_conf={"dry_run": True})
    assert plan.state == "success"
    assert plan.get_task_instance("plan").xcom_pull(task_ids="plan")["actions"] == []
