"""The power DAGs.

- ``rackflow_power_monitor`` — every ``[rackflow] power_poll_interval`` seconds (default 60): poll all
  BMCs and libvirtds concurrently, record statuses, reconcile mode vs status.
- ``rackflow_power_planner`` — the autonomous planner (reservation-driven power on/off); param
  ``dry_run`` prints the plan without acting. Its thresholds are checked when its DAG file
  (``dags/rackflow_power_planner.py``, kept apart from the other two) is parsed, so
  ``power_off_threshold <= power_on_threshold`` shows up as that file's import error with the reason
  while the monitor and manual DAGs keep working.
- ``rackflow_power`` — manual power on/off of one node (params node, action, migrate, hard, reason),
  what the power page and external applications trigger.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from rackflow.dag_factories.vms import inventory_host_names
from rackflow.operators.power import PowerControlOperator

MONITOR_DAG_ID = "rackflow_power_monitor"
PLANNER_DAG_ID = "rackflow_power_planner"
CONTROL_DAG_ID = "rackflow_power"
START = datetime(2025, 1, 1)


def create_monitor_dag(
    dag_id: str = MONITOR_DAG_ID, *, interval: float | None = None, tags: list[str] | None = None
) -> DAG:
    """Periodic BMC/libvirt poll and reconcile.

    :param dag_id: DAG id.
    :param interval: seconds between cycles; default ``[rackflow] power_poll_interval`` (60).
    :param tags: DAG tags.
    """
    from rackflow import settings

    seconds = interval if interval is not None else settings.poll_interval("power", 60.0)
    with DAG(
        dag_id=dag_id,
        schedule=timedelta(seconds=seconds),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=timedelta(seconds=max(seconds * 5, 300)),
        tags=tags or ["rackflow", "power"],
        doc_md=__doc__,
    ) as dag:

        @task(task_id="monitor")
        def monitor() -> dict[str, Any]:
            from rackflow.services.power.monitor import monitor_cycle

            report = monitor_cycle()
            for node in report.nodes:
                print(
                    f"{node.node}: reading={node.reading} status={node.status} {node.action}: {node.reason}"
                )
            print(f"cycle took {report.seconds:.2f}s")
            return {n.node: n.status for n in report.nodes}

        monitor()
    return dag


def create_planner_dag(
    dag_id: str = PLANNER_DAG_ID, *, interval: float = 300, tags: list[str] | None = None
) -> DAG:
    """The autonomous planner.

    :param dag_id: DAG id.
    :param interval: seconds between cycles.
    :param tags: DAG tags.
    """
    from rackflow.services.power.config import load_power_config

    load_power_config()  # raises PowerConfigError with the reason: the file fails to import
    with DAG(
        dag_id=dag_id,
        schedule=timedelta(seconds=interval),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=tags or ["rackflow", "power"],
        params={"dry_run": Param(False, type="boolean", description="Print the plan, do nothing.")},
        doc_md=__doc__,
    ) as dag:

        @task(task_id="plan")
        def plan(params: dict[str, Any] | None = None) -> dict[str, Any]:
            from rackflow.services.power.control import plan_cycle

            dry_run = bool((params or {}).get("dry_run", False))
            report = plan_cycle(dry_run=dry_run)
            for line in report.lines():
                print(line)
            return {
                "dry_run": dry_run,
                "actions": [
                    {"node": a.node, "action": a.action.value, "reason": a.reason}
                    for a in report.plan.actions
                ],
                "done": report.done,
                "failed": report.failed,
            }

        plan()
    return dag


def create_control_dag(
    dag_id: str = CONTROL_DAG_ID, *, hosts: list[str] | None = None, tags: list[str] | None = None
) -> DAG:
    """Manual power control of one node.

    :param dag_id: DAG id (the power page and API trigger ``rackflow_power``).
    :param hosts: allowed node names; default: the inventory's.
    :param tags: DAG tags.
    """
    hosts = inventory_host_names() if hosts is None else hosts
    node_extra: dict[str, Any] = {"enum": hosts} if hosts else {"minLength": 1}
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        tags=tags or ["rackflow", "power"],
        params={
            "node": Param(hosts[0] if hosts else "", type="string", title="Node", **node_extra),
            "action": Param("on", type="string", enum=["on", "off"], title="Action"),
            "migrate": Param(False, type="boolean", title="Migrate VMs before power off"),
            "hard": Param(False, type="boolean", title="Force off (no graceful shutdown)"),
            "reason": Param("", type="string", title="Reason (recorded in the node's history)"),
        },
        render_template_as_native_obj=True,
        doc_md=__doc__,
    ) as dag:
        PowerControlOperator(
            task_id="power",
            node="{{ params.node }}",
            action="{{ params.action }}",
            migrate="{{ params.migrate }}",
            hard="{{ params.hard }}",
            reason="{{ params.reason }}",
            retries=0,
        )
    return dag
