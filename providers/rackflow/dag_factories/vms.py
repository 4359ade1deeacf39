"""The VM DAGs: ``rackflow_launch_vms`` (N VMs from an image on one chosen host, or over a network
group as the placement policy places them) and its reverse.

Both take validated params, so a bad host, group, count or pattern is refused by the UI form and by
``POST /api/v2/dags/<dag_id>/dagRuns`` (400, no run recorded). The host and group lists come from the
rackflow inventory when the file is parsed (the fleet file if the inventory cannot be read). A launch
over a group: ``{"group": "rack-1", "count": 6, ...}`` (``host`` is then ignored); the run's
``launch`` task pushes its plan (VM -> host) under the XCom key ``plan``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param

from rackflow.core.placement import MAX_MEMORY_MIB_PER_VM, MAX_VCPUS_PER_VM
from rackflow.core.vm_naming import MAX_COUNT, NAME_PATTERN
from rackflow.hooks.libvirt import DEFAULT_POOL
from rackflow.operators.libvirt import DestroyVMsOperator, LaunchVMsOperator

LAUNCH_DAG_ID = "rackflow_launch_vms"
DESTROY_DAG_ID = "rackflow_destroy_vms"
# One {seq} field with optional zero padding, DNS-label characters around it.
PATTERN_RE = r"^[a-z0-9-]*\{seq(:0?[0-9]{0,2}d?)?\}[a-z0-9-]*$"
IMAGE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$"


def _inventory(column: str) -> list[str]:
    """Distinct values of a host field: the inventory's, else the fleet file's, else none (no enum)."""
    try:
        from sqlalchemy import select

        from rackflow.db.models import Host
        from rackflow.db.session import session_scope

        with session_scope() as session:
            values = sorted(set(session.scalars(select(getattr(Host, column)))))
        if values:
            return values
    except Exception:  # no inventory yet: fall back to the fleet file
        pass
    try:
        from rackflow import settings
        from rackflow.core.fleet import Fleet

        return sorted({getattr(h, column) for h in Fleet.load(settings.fleet_file()).hosts})
    except Exception:
        return []


def inventory_host_names() -> list[str]:
    """Host names for the params' enum: the inventory, else the fleet file, else none (no enum)."""
    return _inventory("name")


def inventory_groups() -> list[str]:
    """Network groups for the params' enum, found like :func:`inventory_host_names`."""
    return _inventory("group")


def group_param(groups: list[str]) -> Param:
    """The ``group`` param of a launch: empty launches on ``host``, a group spreads over its hosts."""
    extra: dict[str, Any] = {"enum": [None, *groups]} if groups else {"pattern": r"^[A-Za-z0-9._-]{1,128}$"}
    return Param(
        None,
        type=["null", "string"],
        title="Network group (empty: the host above)",
        description="Launch over the powered-on hosts of this group, placed by the placement policy.",
        **extra,
    )


def _host_param(hosts: list[str], *, with_group: bool = False) -> Param:
    """The ``host`` param; beside a ``group`` param it may be null (a launch over the group)."""
    extra: dict[str, Any] = (
        {"enum": [*hosts, None] if with_group else hosts} if hosts else {"pattern": NAME_PATTERN}
    )
    return Param(
        hosts[0] if hosts else "",
        type=["string", "null"] if with_group else "string",
        title="Physical host",
        description="Host from the rackflow inventory"
        + (" (ignored, and may be null, when a group is given)." if with_group else "."),
        **extra,
    )


def create_launch_dag(
    dag_id: str = LAUNCH_DAG_ID,
    *,
    hosts: list[str] | None = None,
    groups: list[str] | None = None,
    timeout: timedelta = timedelta(minutes=10),
    storage_pool: str = DEFAULT_POOL,
    tags: list[str] | None = None,
) -> DAG:
    """Build the launch DAG.

    :param dag_id: DAG id (the layout page triggers ``rackflow_launch_vms``).
    :param hosts: allowed host names; default: the inventory's.
    :param groups: allowed network groups; default: the inventory's.
    :param timeout: how long the VMs may take to run before the launch is rolled back.
    :param storage_pool: libvirt pool holding images and clones.
    :param tags: DAG tags.
    """
    hosts = inventory_host_names() if hosts is None else hosts
    groups = inventory_groups() if groups is None else groups
    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        tags=tags or ["rackflow", "vms"],
        doc_md=__doc__,
        render_template_as_native_obj=True,
        params={
            "host": _host_param(hosts, with_group=True),
            "group": group_param(groups),
            "image": Param("debian-12.qcow2", type="string", pattern=IMAGE_RE, title="Base image"),
            "count": Param(1, type="integer", minimum=1, maximum=MAX_COUNT, title="Number of VMs"),
            "pattern": Param(
                "vm-{seq:02d}",
                type="string",
                pattern=PATTERN_RE,
                title="Name pattern",
                description="One {seq} field, e.g. hadoop-{seq:02d}.",
            ),
            "start": Param(None, type=["null", "integer"], minimum=0, title="First number (empty: continue)"),
            "vcpus": Param(1, type="integer", minimum=1, maximum=MAX_VCPUS_PER_VM, title="vCPUs per VM"),
            "memory_mib": Param(
                512, type="integer", minimum=16, maximum=MAX_MEMORY_MIB_PER_VM, title="MiB per VM"
            ),
            "network": Param(None, type=["null", "string"], title="libvirt network (empty: none)"),
            "keep_on_failure": Param(False, type="boolean", title="Keep VMs of a failed launch"),
        },
    ) as dag:
        LaunchVMsOperator(
            task_id="launch",
            host="{{ params.host or '' }}",
            group="{{ params.group or '' }}",
            image="{{ params.image }}",
            count="{{ params.count }}",
            name_pattern="{{ params.pattern }}",
            start="{{ params.start }}",
            vcpus="{{ params.vcpus }}",
            memory_mib="{{ params.memory_mib }}",
            network="{{ params.network or '' }}",
            storage_pool=storage_pool,
            timeout=timeout,
            keep_on_failure="{{ params.keep_on_failure }}",  # type: ignore[arg-type]
            deferrable=True,
        )
    return dag


def create_destroy_dag(dag_id: str = DESTROY_DAG_ID, *, hosts: list[str] | None = None) -> DAG:
    """Build the destroy DAG (``host`` + ``names``)."""
    hosts = inventory_host_names() if hosts is None else hosts
    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        tags=["rackflow", "vms"],
        doc_md="Destroy VMs on one host: power off, undefine, delete the disks rackflow cloned.",
        render_template_as_native_obj=True,
        params={
            "host": _host_param(hosts),
            "names": Param(
                [],
                type="array",
                items={"type": "string", "pattern": NAME_PATTERN},
                minItems=1,
                maxItems=MAX_COUNT,
                title="VM names",
            ),
        },
    ) as dag:
        DestroyVMsOperator(task_id="destroy", host="{{ params.host }}", names="{{ params.names }}")
    return dag
