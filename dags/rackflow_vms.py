"""Airflow DAGs for VM launch and destroy on a chosen physical host (see rackflow.dag_factories.vms)."""

from __future__ import annotations

from rackflow.dag_factories.vms import create_destroy_dag, create_launch_dag

launch_dag = create_launch_dag()
destroy_dag = create_destroy_dag()
