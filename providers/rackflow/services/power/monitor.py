"""The monitor cycle: read every BMC concurrently, record what changed, reconcile each node.

A BMC that hangs or is gone costs the cycle at most its deadline and turns its node ``error-stopped``
with the error, while the other nodes are read, recorded and reconciled as usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import select

from rackflow.core.placement import VmRequest
from rackflow.core.power import (
    NodeView,
    PowerMode,
    PowerStatus,
    ReconcileAction,
    UnknownPowerState,
    reconcile_node,
)
from rackflow.db.models import Host
from rackflow.db.session import session_scope
from rackflow.hooks.libvirt import LibvirtHook
from rackflow.services.power.bmc import (
    CallResult,
    NodeRef,
    bmc_power_state,
    bmc_set_power,
    redfish_power_states,
    run_bounded,
    status_from_reading,
)
from rackflow.services.power.config import PowerConfig, load_power_config
from rackflow.services.power.history import record_status

log = logging.getLogger(__name__)

MONITOR_ACTOR = "rackflow_power_monitor"
# libvirt states of a VM that holds the node (a shut-off definition does not).
VM_RUNNING_STATES = frozenset({"running", "paused", "stopping", "suspended", "crashed"})
VM_BOOTING_STATES = frozenset({"unknown"})


def _vms_of(node: NodeRef) -> tuple[list[VmRequest], list[VmRequest]]:
    """(running, booting) VMs on the node, from its libvirtd."""
    with LibvirtHook(node.libvirt_conn_id) as hook:
        domains = hook.list_domains(addresses=False)
    running: list[VmRequest] = []
    booting: list[VmRequest] = []
    for d in domains:
        vm = VmRequest(d.name, d.vcpus, d.memory_mib, cluster=getattr(d, "launch", None))
        if d.state in VM_RUNNING_STATES:
            running.append(vm)
        elif d.state in VM_BOOTING_STATES:
            booting.append(vm)
    return running, booting


def _view(host: Host, vms: tuple[list[VmRequest], list[VmRequest]] | None, *, now: datetime) -> NodeView:
    running, booting = vms if vms is not None else ([], [])
    return NodeView(
        name=host.name,
        group=host.group,
        cpus=host.cpus,
        memory_mib=host.memory_mib,
        mode=PowerMode(host.mode or "on"),
        status=PowerStatus(host.status) if host.status else PowerStatus.OFF,
        status_since=host.status_since or now,
        vms_running=tuple(running),
        vms_booting=tuple(booting),
        last_error=host.last_error,
    )


@dataclass
class NodeCycle:
    """One node's part of a monitoring cycle."""

    node: str
    reading: str | None = None
    bmc_seconds: float = 0.0
    status: str | None = None
    action: str = ReconcileAction.NONE.value
    reason: str = ""
    error: str | None = None


@dataclass
class MonitorReport:
    started: datetime
    seconds: float = 0.0
    nodes: list[NodeCycle] = field(default_factory=list)

    def node(self, name: str) -> NodeCycle:
        return next(n for n in self.nodes if n.node == name)

    def summary(self) -> str:
        return "; ".join(
            f"{n.node}: {n.status} ({n.action}{': ' + n.reason if n.reason else ''})" for n in self.nodes
        )


def monitor_cycle(
    *,
    url: str | None = None,
    config: PowerConfig | None = None,
    now: datetime | None = None,
    actor: str = MONITOR_ACTOR,
    dry_run: bool = False,
    nodes: Sequence[str] | None = None,
) -> MonitorReport:
    """Poll every BMC and libvirtd concurrently, record statuses, reconcile mode vs status, act.

    Per node: a BMC that does not answer within ``config.bmc_timeout`` makes the node
    ``error-stopped`` with the error; otherwise the reading updates the status. Then
    :func:`rackflow.core.power.reconcile_node` decides (power on when mode on and off, power off when
    mode off and on without VMs, error-stop booting/stopping past their timeouts) and the power
    calls go out, again concurrently and bounded. ``dry_run`` records nothing and acts on nothing.
    """
    config = config or load_power_config()
    start = time.monotonic()
    now = now or datetime.now(UTC)
    report = MonitorReport(started=now)
    with session_scope(url) as session:
        query = select(Host).order_by(Host.name)
        if nodes is not None:
            query = query.where(Host.name.in_(list(nodes)))
        hosts = list(session.scalars(query))
        refs = {h.name: NodeRef.of(h) for h in hosts}
    timeout = config.bmc_timeout
    deadline = timeout * 2 + 1  # hooks retry once: two attempts per BMC
    redfish = [ref for ref in refs.values() if ref.bmc_kind == "redfish" and ref.bmc_conn_id]
    on_loop = {ref.name for ref in redfish}
    calls: dict[str, Callable[[], Any]] = {}
    if redfish:  # first, so the loop starts before the per-call threads
        calls["redfish"] = partial(redfish_power_states, redfish, timeout=timeout, deadline=deadline)
    for name, ref in refs.items():
        if name not in on_loop:
            calls[f"bmc:{name}"] = partial(bmc_power_state, ref, timeout=timeout)
        calls[f"vms:{name}"] = partial(_vms_of, ref)
    # The Redfish poll enforces each BMC's deadline itself; the margin covers starting its loop.
    results = run_bounded(calls, timeout=deadline + 0.5)
    if redfish:
        batch = results.pop("redfish")
        for ref in redfish:
            results[f"bmc:{ref.name}"] = (
                batch.value[ref.name] if batch.ok else CallResult(error=batch.error, seconds=batch.seconds)
            )

    steps: dict[str, tuple[NodeRef, ReconcileAction, PowerStatus | None, str]] = {}
    with session_scope(url) as session:
        for host in session.scalars(select(Host).where(Host.name.in_(list(refs))).order_by(Host.name)):
            ref = refs[host.name]
            bmc, vms = results[f"bmc:{host.name}"], results[f"vms:{host.name}"]
            cycle = NodeCycle(host.name, bmc_seconds=bmc.seconds)
            report.nodes.append(cycle)
            previous = PowerStatus(host.status) if host.status else PowerStatus.OFF
            bmc_error = bmc.error
            if bmc.ok:
                cycle.reading = str(bmc.value)
                try:
                    new = status_from_reading(ref, str(bmc.value), previous=previous)
                except UnknownPowerState as err:
                    bmc_error = str(err)
                else:
                    if not dry_run:
                        host.last_seen = now
                        if host.status != new.value:
                            record_status(
                                session, host, new, actor=actor, reason=f"BMC says {bmc.value}", now=now
                            )
                            if new is not PowerStatus.ERROR_STOPPED:
                                host.last_error = None
                    previous = new
            view = _view(host, vms.value if vms.ok else None, now=now)
            view = view.model_copy(update={"status": previous}) if dry_run else view
            if not vms.ok:
                # Unknown VMs: never power the node off on a guess.
                view = view.model_copy(
                    update={"vms_booting": (VmRequest(f"(libvirt unreachable: {vms.error})", 0, 0),)}
                )
            step = reconcile_node(view, now=now, timeouts=config.timeouts, bmc_error=bmc_error)
            cycle.action, cycle.reason, cycle.error = step.action.value, step.reason, step.error
            cycle.status = previous.value
            if dry_run:
                continue
            if step.action is ReconcileAction.MARK_ERROR:
                record_status(
                    session,
                    host,
                    PowerStatus.ERROR_STOPPED,
                    actor=actor,
                    reason=step.reason,
                    now=now,
                    error=step.error,
                )
                cycle.status = PowerStatus.ERROR_STOPPED.value
            elif step.action in (ReconcileAction.POWER_ON, ReconcileAction.POWER_OFF):
                steps[host.name] = (ref, step.action, step.new_status, step.reason)

    if steps:
        actions = {
            name: partial(
                bmc_set_power, ref, "on" if act is ReconcileAction.POWER_ON else "soft_off", timeout=timeout
            )
            for name, (ref, act, _new, _why) in steps.items()
        }
        done = run_bounded(actions, timeout=timeout * 2 + 1)
        with session_scope(url) as session:
            for host in session.scalars(select(Host).where(Host.name.in_(list(steps)))):
                _ref, act, target, why = steps[host.name]
                cycle = report.node(host.name)
                if done[host.name].ok and target is not None:
                    record_status(session, host, target, actor=actor, reason=why, now=now)
                    cycle.status = target.value
                else:
                    error = f"{act.value} failed: {done[host.name].error}"
                    record_status(
                        session,
                        host,
                        PowerStatus.ERROR_STOPPED,
                        actor=actor,
                        reason=error,
                        now=now,
                        error=error,
                    )
                    cycle.status, cycle.error = PowerStatus.ERROR_STOPPED.value, error
    report.seconds = time.monotonic() - start
    return report
