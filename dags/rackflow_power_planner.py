"""airflow DAG: the reservation-driven power planner (rackflow.dag_factories.power).

A file of its own: invalid ``[rackflow] power_off_threshold``/``power_on_threshold`` make only this file
fail to import (the import error gives the reason); the monitor and manual power DAGs keep working.
"""

from __future__ import annotations

from rackflow.dag_factories.power import create_planner_dag

planner_dag = create_planner_dag()
