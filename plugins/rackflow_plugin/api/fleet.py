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

from rackflow.core.vm_naming import MAX_COUNT, VmNamingError, expand_names
from rackflow.dag_factories.vms import LAUNCH_DAG_ID
from rackflow.db.vm_claims import held_claims
from rackflow.services.fleet_layout import LayoutService, inventory_hosts, layout_summary
from rackflow_plugin.limits import LINE_PATTERN, MAX_ID, PathName
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


class VmNamesOut(BaseModel):
    host: str | None
    group: str | None
    names: list[str] = Field(description="the names a launch with this pattern would create now")


@router.get(
    "/vm-names",
    response_model=VmNamesOut,
    summary="Preview the VM names a launch would create from a name pattern (nothing is created)",
    responses={400: {"description": "The pattern, count or start cannot give VM names (the field named)"}},
    dependencies=[can_read(LAUNCH_DAG_ID)],  # type: ignore[list-item]
)
def preview_vm_names(
    pattern: str = Query(
        min_length=1,
        max_length=128,
        pattern=LINE_PATTERN,
        description="one {seq} field, e.g. hadoop-{seq:02d}",
    ),
    count: int = Query(ge=1, le=MAX_COUNT, description="number of VMs"),
    start: int | None = Query(None, ge=0, le=MAX_ID, description="first number; empty: continue"),
    host: str | None = Query(None, min_length=1, max_length=63, pattern=LINE_PATTERN),
    group: str | None = Query(None, min_length=1, max_length=128, pattern=LINE_PATTERN),
) -> Any:
    """The same rule the launch applies (:func:`rackflow.core.vm_naming.expand_names`): numbering goes on
    after the highest number taken among the VMs already on the host (or on every host of the group)
    and the names launches in progress have claimed there."""
    if (host is None) == (group is None):
        raise HTTPException(status_code=400, detail={"field": "host", "message": "give a host or a group"})
    chosen = [h for h in inventory_hosts() if h.name == host or (host is None and h.group == group)]
    if not chosen:
        field, value = ("host", host) if host is not None else ("group", group)
        raise HTTPException(status_code=404, detail={"field": field, "message": f"no {field} {value!r}"})
    existing = [vm["name"] for h in layout_service().build(chosen, addresses=False) for vm in h["vms"]]
    # Names other launches have claimed and not yet defined are taken too (rackflow.db.vm_claims).
    existing += [claim.name for claim in held_claims(h.name for h in chosen)]
    try:
        names = expand_names(pattern, count, existing, start)
    except VmNamingError as err:
        # count and start are bounded above, so the pattern is at fault, or start hits taken names.
        field = "start" if str(err).startswith("names already exist") else "pattern"
        raise HTTPException(status_code=400, detail={"field": field, "message": str(err)}) from err
    return {"host": host, "group": group, "names": names}
