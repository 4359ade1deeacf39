"""airflow power DAGs: BMC monitoring and manual power control (rackflow.dag_factories.power).

The reservation planner lives in ``rackflow_power_planner.py``: its thresholds are checked when that
file is parsed, so a bad ``[rackflow] power_*_threshold`` disables only the planner, not these DAGs.
"""

from __future__ import annotations

from rackflow.dag_factories.power import create_control_dag, create_monitor_dag

monitor_dag = create_monitor_dag()
control_dag = create_control_dag()
