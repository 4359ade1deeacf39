"""A bad power threshold setting disables only the planner DAG file; monitor and manual power still load."""

from __future__ import annotations

from tests.conftest import REPO


def test_invalid_thresholds_fail_only_the_planner_file_naming_both_thresholds(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    # OffThreshold must exceed OnThreshold: 10 min / 15 min is the flapping case load_power_config rejects.
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_OFF_THRESHOLD", "10m")
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_ON_THRESHOLD", "15m")
    bag = DagBag(dag_folder=str(REPO / "dags"))

    assert list(bag.import_errors) == [str(REPO / "dags" / "rackflow_power_planner.py")]
    reason = next(iter(bag.import_errors.values()))
    assert "power_off_threshold='10m'" in reason
    assert "power_on_threshold='15m'" in reason
    assert "OffThreshold (10 min) must exceed OnThreshold (15 min)" in reason
    assert "rackflow_power_planner" not in bag.dag_ids
    assert {"rackflow_power_monitor", "rackflow_power"} <= set(bag.dag_ids)


def test_valid_thresholds_load_all_three_power_dags(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_OFF_THRESHOLD", "60m")
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_ON_THRESHOLD", "30m")
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not any("rackflow_power" in path for path in bag.import_errors), bag.import_errors
    assert {"rackflow_power_monitor", "rackflow_power_planner", "rackflow_power"} <= set(bag.dag_ids)
