"""The fleet layout as JSON: physical hosts with group, power, capacity and VMs.

Reading needs read access to the launch DAG (so Airflow viewers can read); launching is a run of
``rackflow_launch_vms`` through Airflow's own ``POST /api/v2/dags/rackflow_launch_vms/dagRuns``, which
checks the right to trigger it (with rackflow's auth manager: the op role or a grant) and validates the
params (400 and no run when they are invalid); destroying is a run of ``rackflow_destroy_vms``, alike.
A launch goes to one host (conf ``host``) or over a network group (conf ``group``, one of the
layout's ``groups``; ``host`` is then ignored and may be null), placed by the placement policy.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from rackflow.dag_factories.vms import LAUNCH_DAG_ID
from rackflow.services.fleet_layout import LayoutService, inventory_hosts, layout_summary
from rackflow_plugin.limits import PathName
from rackflow_plugin.security import CurrentUser, can_read, may_trigger

router = APIRouter(tags=["fleet"])


@cache
def layout_service() -> LayoutService:
    """One per API server process: pooled libvirt connections, cached connection URIs."""
    return LayoutService()


class VmOut(BaseModel):
    name: str
    state: str = Field(description="running, paused, shutoff, stopping, crashed, suspended or unknown")
    vcpus: int
    memory_mib: int
    image: str | None
    addresses: list[str]
    launch: str | None = Field(description="dag_id/run_id/task_id of the launch that created it")
    uuid: str | None = None
    disks: list[str] | None = None
    volumes: list[str] | None = None


class HostOut(BaseModel):
    name: str
    group: str
    rack: str | None
    cpus: int
    memory_mib: int
    mode: str | None = Field(description="power mode asked for (on/off)")
    status: str | None = Field(description="power status the BMC last reported")
    status_since: str | None
    last_error: str | None
    hypervisor: str = Field(description="ok, or unreachable (see hypervisor_error)")
    hypervisor_error: str | None
    used_cpus: int | None
    used_memory_mib: int | None
    free_cpus: int | None
    free_memory_mib: int | None
    vm_count: int | None
    running_vms: int | None
    vms: list[VmOut]


class LayoutOut(BaseModel):
    generated_at: str
    took_ms: float
    summary: dict[str, Any]
    groups: list[str] = Field(
        description="every group of the inventory (for the filter, and the launch DAG's group param)"
    )
    launch_dag_id: str
    can_launch: bool = Field(description="whether the caller may trigger the launch DAG (the page hides it)")
    hosts: list[HostOut]


@router.get(
    "/hosts",
    response_model=LayoutOut,
    summary="Every physical host with its group, power, capacity and VMs",
    dependencies=[can_read(LAUNCH_DAG_ID)],  # type: ignore[list-item]
)
def list_hosts(
    user: CurrentUser,
    group: str | None = Query(None, max_length=128, description="only hosts of this network group"),
) -> Any:
    started = time.perf_counter()
    every = inventory_hosts()
    chosen = [h for h in every if not group or h.group == group]
    hosts = layout_service().build(chosen)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
        "summary": layout_summary(hosts),
        "groups": sorted({h.group for h in every}),
        "launch_dag_id": LAUNCH_DAG_ID,
        "can_launch": may_trigger(user, LAUNCH_DAG_ID),
        "hosts": hosts,
    }


@router.get(
    "/hosts/{name}",
    response_model=HostOut,
    summary="One physical host with its VMs' disks and volumes",
    dependencies=[can_read(LAUNCH_DAG_ID)],  # type: ignore[list-item]
)
def get_host(name: PathName) -> Any:
    found = [h for h in inventory_hosts() if h.name == name]
    if not found:
        raise HTTPException(status_code=404, detail=f"no host {name!r} in the inventory")
    return layout_service().build(found, detail=True)[0]
