"""Airflow power DAGs: BMC monitoring, reservation planner, manual power control (dag_factories.power)."""

from __future__ import annotations

from rackflow.dag_factories.power import create_control_dag, create_monitor_dag, create_planner_dag

monitor_dag = create_monitor_dag()
planner_dag = create_planner_dag()
control_dag = create_control_dag()
