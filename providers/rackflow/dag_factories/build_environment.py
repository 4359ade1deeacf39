"""Build an environment: launch N VMs on a host or over a group, run a jobnet on them, undo it all on failure.

``build_env_<jobnet>`` for every jobnet whose servers come ``from_launch`` (one launch name)::

    launch (LaunchVMsOperator: N VMs named by a pattern on ``host``, or over the powered-on hosts of
            ``group`` as the placement policy places them; waits until they run)
      >> jobnet steps (servers bound to the launched VMs by index) >> revert_plan >> reverts
      >> destroy_vms (only if the jobnet failed and destroy_on_failure) >> report

A launched VM reaches SSH through a connection chosen by its name (``server_connections``; by default
every VM maps to ``[rackflow] jobnet_ssh_conn_id``), its name exported as ``RACKFLOW_SERVER`` and its
first address as ``RACKFLOW_SERVER_ADDRESS``; ``use_launch_address`` connects to that address instead
(real VMs).
In the demo the VMs are libvirt test-driver domains, so the steps run over SSH on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Param

from rackflow import settings
from rackflow.core.jobnet import JobnetLibrary, LaunchedServer, Stage
from rackflow.dag_factories.jobnet import (
    JOBNET_TAG_PREFIX,
    ServerBinding,
    add_jobnet_tasks,
    cached_library,
    dag_params,
    jobnet_doc,
)
from rackflow.dag_factories.vms import group_param, inventory_groups
from rackflow.operators.jobnet import DestroyVMsOnFailureOperator
from rackflow.operators.libvirt import PLAN_KEY, LaunchVMsOperator

if TYPE_CHECKING:
    pass

DAG_ID_PREFIX = "build_env_"
DESTROY_TASK_ID = "destroy_vms"
_LAUNCH_PARAMS = ("host", "group", "image", "count", "pattern", "vcpus", "memory_mib", "destroy_on_failure")


def launch_names(stages: Sequence[Stage]) -> dict[str, int]:
    """``from_launch`` name -> how many servers of it the jobnet uses (highest index + 1)."""
    needed: dict[str, int] = {}
    for stage in stages:
        for step in stage:
            for action in (step.run, step.revert):
                server = action.server if action is not None else None
                if isinstance(server, LaunchedServer):
                    needed[server.from_launch] = max(needed.get(server.from_launch, 0), server.index + 1)
    return needed


def build_environment_dag(
    library: JobnetLibrary,
    name: str,
    *,
    host: str = "host-a",
    groups: list[str] | None = None,
    image: str = "debian-12.qcow2",
    name_pattern: str | None = None,
    server_connections: Mapping[str, str] | None = None,
    use_launch_address: bool = False,
    launch_timeout: timedelta = timedelta(minutes=10),
    retry_delay: timedelta = timedelta(seconds=5),
    dag_id: str | None = None,
) -> DAG:
    """The build-environment DAG of jobnet ``name``, whose servers come from one launch.

    :param library: the jobnets (see :func:`rackflow.dag_factories.jobnet.cached_library`).
    :param name: the jobnet to run on the launched VMs.
    :param host: default physical host to launch on (a run param).
    :param groups: network groups the ``group`` run param offers; default: the inventory's.
    :param image: default base image (a run param).
    :param name_pattern: default VM name pattern (a run param); default ``<name>-{seq:02d}``.
    :param server_connections: VM name -> SSH connection id, ``"*"`` the default
        (``[rackflow] jobnet_ssh_conn_id``).
    :param use_launch_address: connect to each VM's address rather than the connection's host.
    :param launch_timeout: how long the VMs may take to run.
    :param retry_delay: delay between a step's retries.
    :param dag_id: default ``build_env_<name>``.
    """
    jobnet = library.jobnets[name]
    stages = library.stages(name)
    specs = library.params(name)
    launches = launch_names(stages)
    if len(launches) != 1:
        raise ValueError(
            f"jobnet {name!r} must take its servers from exactly one launch, not {sorted(launches)}"
        )
    ((launch_name, needed),) = launches.items()
    clash = sorted(set(specs) & set(_LAUNCH_PARAMS))
    if clash:
        raise ValueError(f"jobnet {name!r} params {clash} clash with the launch's params")
    binding = ServerBinding(
        launch_tasks={launch_name: launch_name},
        server_connections=dict(server_connections or {"*": settings.jobnet_ssh_conn_id()}),
        use_launch_address=use_launch_address,
    )
    params: dict[str, Param] = {
        "host": Param(host, type="string", title="Physical host", description="Host to launch the VMs on."),
        "group": group_param(inventory_groups() if groups is None else groups),
        "image": Param(image, type="string", title="Base image"),
        "count": Param(
            needed,
            type="integer",
            minimum=needed,
            maximum=100,
            title="Number of VMs",
            description=f"At least {needed}: the jobnet uses that many launched servers.",
        ),
        "pattern": Param(name_pattern or f"{name}-{{seq:02d}}", type="string", title="VM name pattern"),
        "vcpus": Param(1, type="integer", minimum=1, title="vCPUs per VM"),
        "memory_mib": Param(256, type="integer", minimum=16, title="MiB per VM"),
        "destroy_on_failure": Param(
            True, type="boolean", title="Destroy the VMs when the jobnet fails (after its reverts)"
        ),
        **dag_params(specs),
    }
    with DAG(
        dag_id=dag_id or f"{DAG_ID_PREFIX}{name}",
        description=f"Launch VMs, run jobnet {name} on them, revert and destroy on failure"[:200],
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        params=params,
        render_template_as_native_obj=True,
        tags=["rackflow", "jobnet", "build-environment", f"{JOBNET_TAG_PREFIX}{name}"],
        doc_md=__doc__ + "\n\n" + jobnet_doc(name, jobnet.description, stages),
        max_active_runs=1,
    ) as dag:
        launch = LaunchVMsOperator(
            task_id=launch_name,
            host="{{ params.host }}",
            group="{{ params.group or '' }}",
            image="{{ params.image }}",
            count="{{ params.count }}",
            name_pattern="{{ params.pattern }}",
            vcpus="{{ params.vcpus }}",
            memory_mib="{{ params.memory_mib }}",
            timeout=launch_timeout,
            deferrable=True,
        )
        destroy = DestroyVMsOnFailureOperator(
            task_id=DESTROY_TASK_ID,
            launch_task_id=launch_name,
            plan=f"{{{{ ti.xcom_pull(task_ids='{launch_name}', key='{PLAN_KEY}') or {{}} }}}}",
        )
        tasks = add_jobnet_tasks(
            stages, specs, binding=binding, retry_delay=retry_delay, before_report=[destroy]
        )
        launch.set_downstream(tasks.first)
        destroy.set_upstream(tasks.last_revert)
    return dag


def build_environment_dags(folder: str | Path, **kwargs: Any) -> dict[str, DAG]:
    """A build-environment DAG for every usable jobnet of ``folder`` that takes servers from one launch."""
    library = cached_library(folder)
    dags = {}
    for name in sorted(library.jobnets):
        if len(launch_names(library.stages(name))) == 1:
            dag = build_environment_dag(library, name, **kwargs)
            dags[dag.dag_id] = dag
    return dags
