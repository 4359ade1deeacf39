"""Power control against the inventory DB, the BMCs and libvirt: what the DAGs, operator and API call.

``rackflow.core.power`` decides; this module gathers the facts it decides on (BMC readings, VMs per
node, the ``Host`` rows, reservations), carries the decisions out (BMC power calls, libvirt
migrations) and records every mode/status change with who asked and why in ``HostTransition``.

BMCs are polled concurrently, each call bounded by a per-BMC deadline: a BMC that hangs or is gone
costs the cycle at most that deadline and turns its node ``error-stopped`` with the error, while the
other nodes are read, recorded and reconciled as usual. Redfish BMCs are read on one event loop (one
plain GET each, see :func:`redfish_power_states`), so a cycle over hundreds of them costs about the
slowest BMC, not hundreds of thread starts and sushy logins; IPMI BMCs and libvirtds get a thread
per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from rackflow.core.placement import PlacementPolicy, VmRequest, load_placement_policy
from rackflow.core.power import (
    NodeView,
    PowerAction,
    PowerDecision,
    PowerMode,
    PowerPlan,
    PowerStatus,
    PowerThresholds,
    ReconcileAction,
    ReconcileTimeouts,
    Reservation,
    UnknownPowerState,
    decide_power_off,
    decide_power_on,
    plan_power,
    reconcile_node,
    status_from_ipmi,
    status_from_redfish,
)
from rackflow.db.models import Host, HostTransition
from rackflow.db.models import Reservation as ReservationRow
from rackflow.db.session import session_scope
from rackflow.hooks.ipmi import IpmiHook
from rackflow.hooks.libvirt import LibvirtHook
from rackflow.hooks.redfish import RedfishHook

log = logging.getLogger(__name__)
T = TypeVar("T")

MONITOR_ACTOR = "rackflow_power_monitor"
PLANNER_ACTOR = "rackflow_power_planner"
# libvirt states of a VM that holds the node (a shut-off definition does not).
VM_RUNNING_STATES = frozenset({"running", "paused", "stopping", "suspended", "crashed"})
VM_BOOTING_STATES = frozenset({"unknown"})


class PowerConfigError(ValueError):
    """The ``[rackflow]`` power options are invalid; the message says which and why."""


class PowerRefused(RuntimeError):
    """A manual power request was refused; ``decision`` carries the reason and the blocking VMs."""

    def __init__(self, decision: PowerDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


# ---------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class PowerConfig:
    thresholds: PowerThresholds
    timeouts: ReconcileTimeouts
    bmc_timeout: float
    placement_policy: str | None


def _conf(option: str, fallback: str) -> str:
    from rackflow import settings

    return settings._get(option, fallback)


def load_power_config() -> PowerConfig:
    """Read and check the ``[rackflow]`` power options; bad thresholds raise :class:`PowerConfigError`.

    ``power_off_threshold`` must exceed ``power_on_threshold`` (the design notes' flapping argument).
    """
    off, on = _conf("power_off_threshold", "60m"), _conf("power_on_threshold", "30m")
    try:
        thresholds = PowerThresholds(off_threshold=off, on_threshold=on)  # type: ignore[arg-type]
    except ValueError as err:
        reasons = "; ".join(e["msg"] for e in getattr(err, "errors", lambda: [])()) or str(err)
        raise PowerConfigError(
            f"[rackflow] power_off_threshold={off!r} / power_on_threshold={on!r} rejected: {reasons}"
        ) from err
    try:
        timeouts = ReconcileTimeouts(
            boot_timeout=timedelta(seconds=float(_conf("power_boot_timeout", "600"))),
            stop_timeout=timedelta(seconds=float(_conf("power_stop_timeout", "600"))),
        )
        bmc_timeout = float(_conf("power_bmc_timeout", "10"))
    except ValueError as err:
        raise PowerConfigError(f"[rackflow] power timeouts must be seconds: {err}") from err
    policy = _conf("placement_policy", "packing")
    return PowerConfig(thresholds, timeouts, bmc_timeout, policy)


# ---------------------------------------------------------------------------------------------------
# BMCs and hypervisors


@dataclass(frozen=True)
class NodeRef:
    """What is needed to reach one node's BMC and hypervisor (a detached copy of its ``Host`` row)."""

    name: str
    group: str
    cpus: int
    memory_mib: int
    libvirt_conn_id: str
    bmc_kind: str | None
    bmc_conn_id: str | None
    bmc_system: str | None

    @classmethod
    def of(cls, host: Host) -> NodeRef:
        return cls(
            host.name,
            host.group,
            host.cpus,
            host.memory_mib,
            host.libvirt_conn_id,
            host.bmc_kind,
            host.bmc_conn_id,
            host.bmc_system or host.name,
        )


class BmcUnavailable(RuntimeError):
    """The node's BMC did not answer (or has no BMC configured)."""


def bmc_power_state(node: NodeRef, *, timeout: float) -> str:
    """The raw power state from the node's BMC (Redfish ``PowerState`` or IPMI ``on``/``off``)."""
    if node.bmc_kind == "redfish" and node.bmc_conn_id:
        return RedfishHook(node.bmc_conn_id, timeout=timeout, retries=1, retry_delay=0.2).get_power_state(
            node.bmc_system or node.name
        )
    if node.bmc_kind == "ipmi" and node.bmc_conn_id:
        return IpmiHook(node.bmc_conn_id, timeout=timeout, retries=1, retry_delay=0.2).get_power_state()
    raise BmcUnavailable(f"{node.name} has no BMC configured")


def bmc_set_power(node: NodeRef, action: str, *, timeout: float) -> None:
    """``on``, ``soft_off`` or ``hard_off`` through the node's BMC."""
    if node.bmc_kind == "redfish" and node.bmc_conn_id:
        RedfishHook(node.bmc_conn_id, timeout=timeout, retries=1, retry_delay=0.2).set_power(
            node.bmc_system or node.name, action
        )
        return
    if node.bmc_kind == "ipmi" and node.bmc_conn_id:
        IpmiHook(node.bmc_conn_id, timeout=timeout, retries=1, retry_delay=0.2).set_power(action)
        return
    raise BmcUnavailable(f"{node.name} has no BMC configured")


def status_from_reading(node: NodeRef, raw: str, *, previous: PowerStatus) -> PowerStatus:
    """Map a raw BMC reading with the in-flight action implied by the recorded status."""
    in_flight = {PowerStatus.BOOTING: PowerAction.ON, PowerStatus.STOPPING: PowerAction.OFF}.get(previous)
    if node.bmc_kind == "ipmi":
        return status_from_ipmi(raw, previous=previous, action_in_flight=in_flight)
    return status_from_redfish(raw, previous=previous, action_in_flight=in_flight)


@dataclass(frozen=True)
class CallResult:
    """One bounded call: its value, or the error (a timeout counts), and how long it took."""

    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_bounded(
    calls: Mapping[str, Callable[[], Any]], *, timeout: float, max_workers: int = 512
) -> dict[str, CallResult]:
    """Run ``calls`` concurrently; each gets ``timeout`` seconds from the start, whatever the others do.

    A call still running at the deadline is reported as an error and abandoned (its thread finishes on
    its own; the hooks' own HTTP/IPMI timeouts bound it). With a thread per call (up to
    ``max_workers``) the whole batch takes about the slowest call or ``timeout``, whichever is
    smaller — not the sum.
    """
    if not calls:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(calls)), thread_name_prefix="rackflow-power")
    started = time.monotonic()
    finished: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return fn()
            finally:
                finished[name] = time.monotonic() - started

        return run

    futures: dict[str, Future[Any]] = {name: pool.submit(timed(name, fn)) for name, fn in calls.items()}
    wait(futures.values(), timeout=timeout)
    results: dict[str, CallResult] = {}
    for name, fut in futures.items():
        if not fut.done():
            results[name] = CallResult(error=f"no answer within {timeout:g}s", seconds=timeout)
            continue
        err = fut.exception()
        seconds = finished.get(name, time.monotonic() - started)
        if err is not None:
            results[name] = CallResult(error=str(err) or type(err).__name__, seconds=seconds)
        else:
            results[name] = CallResult(value=fut.result(), seconds=seconds)
    pool.shutdown(wait=False, cancel_futures=True)
    return results


def redfish_power_states(
    nodes: Sequence[NodeRef], *, timeout: float, deadline: float
) -> dict[str, CallResult]:
    """The raw power state of every Redfish node, read concurrently on one asyncio loop.

    Each node gets :meth:`RedfishHook.aget_power_state` (one GET, ``timeout`` per attempt, one retry)
    under its own ``deadline`` from the start of the poll: a BMC that hangs only fails its own node.
    Runs its own event loop, so call it from a thread without one (the monitor runs it in a worker
    of :func:`run_bounded`). Keyed by node name; ``seconds`` count from the start of the poll.
    """
    import aiohttp

    async def poll() -> list[CallResult]:
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

            async def one(node: NodeRef) -> CallResult:
                hook = RedfishHook(str(node.bmc_conn_id), timeout=timeout, retries=1, retry_delay=0.2)
                try:
                    value = await asyncio.wait_for(
                        hook.aget_power_state(node.bmc_system or node.name, session=session), deadline
                    )
                except TimeoutError:
                    return CallResult(error=f"no answer within {deadline:g}s", seconds=deadline)
                except Exception as err:  # one BMC's failure is that node's error
                    return CallResult(
                        error=str(err) or type(err).__name__, seconds=time.monotonic() - started
                    )
                return CallResult(value=value, seconds=time.monotonic() - started)

            return await asyncio.gather(*(one(n) for n in nodes))

    return {n.name: r for n, r in zip(nodes, asyncio.run(poll()), strict=True)}


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


# ---------------------------------------------------------------------------------------------------
# Recording


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite hands back naive datetimes
    return value


def record_status(
    session: Session,
    host: Host,
    status: PowerStatus,
    *,
    actor: str,
    reason: str,
    now: datetime,
    error: str | None = None,
) -> bool:
    """Set ``host.status``; a change is written to ``HostTransition``. Returns whether it changed."""
    old = host.status
    if error is not None:
        host.last_error = error
    if old == status.value:
        return False
    host.status = status.value
    host.status_since = now
    _record_transition(session, host, "status", old, status.value, actor=actor, reason=reason, now=now)
    return True


def record_mode(
    session: Session, host: Host, mode: PowerMode, *, actor: str, reason: str, now: datetime
) -> bool:
    """Set ``host.mode``; a change is written to ``HostTransition``. Returns whether it changed."""
    old = host.mode
    if old == mode.value:
        return False
    host.mode = mode.value
    _record_transition(session, host, "mode", old, mode.value, actor=actor, reason=reason, now=now)
    return True


def _record_transition(
    session: Session,
    host: Host,
    field: str,
    old: str | None,
    new: str,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """One row of a host's history: who or what changed ``field`` from ``old`` to ``new``, and why."""
    session.add(
        HostTransition(
            host=host.name, at=now, field=field, from_value=old, to_value=new, actor=actor, reason=reason
        )
    )
    log.info("%s %s %s -> %s (%s: %s)", host.name, field, old, new, actor, reason)


def _view(host: Host, vms: tuple[list[VmRequest], list[VmRequest]] | None, *, now: datetime) -> NodeView:
    running, booting = vms if vms is not None else ([], [])
    return NodeView(
        name=host.name,
        group=host.group,
        cpus=host.cpus,
        memory_mib=host.memory_mib,
        mode=PowerMode(host.mode or "on"),
        status=PowerStatus(host.status) if host.status else PowerStatus.OFF,
        status_since=_aware(host.status_since) or now,
        vms_running=tuple(running),
        vms_booting=tuple(booting),
        last_error=host.last_error,
    )


# ---------------------------------------------------------------------------------------------------
# Monitoring


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


# ---------------------------------------------------------------------------------------------------
# Manual control


@dataclass(frozen=True)
class PowerResult:
    node: str
    action: str
    reason: str
    status: str
    migrations: dict[str, str] = field(default_factory=dict)


def _fleet_views(
    session: Session, *, now: datetime, timeout: float, names: Iterable[str] | None = None
) -> tuple[dict[str, Host], dict[str, NodeView]]:
    query = select(Host).order_by(Host.name)
    if names is not None:
        query = query.where(Host.name.in_(list(names)))
    hosts = {h.name: h for h in session.scalars(query)}
    refs = {name: NodeRef.of(h) for name, h in hosts.items()}
    results = run_bounded({name: partial(_vms_of, ref) for name, ref in refs.items()}, timeout=timeout)
    views: dict[str, NodeView] = {}
    for name, host in hosts.items():
        res = results[name]
        view = _view(host, res.value if res.ok else None, now=now)
        if not res.ok:
            view = view.model_copy(
                update={"vms_booting": (VmRequest(f"(libvirt unreachable: {res.error})", 0, 0),)}
            )
        views[name] = view
    return hosts, views


def power_on(
    node: str,
    *,
    actor: str,
    reason: str = "",
    url: str | None = None,
    config: PowerConfig | None = None,
    now: datetime | None = None,
) -> PowerResult:
    """Power ``node`` on (always allowed): mode on, BMC on, status booting — all recorded."""
    config = config or load_power_config()
    now = now or datetime.now(UTC)
    with session_scope(url) as session:
        host = _host(session, node)
        ref = NodeRef.of(host)
        decision = decide_power_on(_view(host, None, now=now))
        why = reason or decision.reason
        record_mode(session, host, PowerMode.ON, actor=actor, reason=why, now=now)
    bmc_set_power(ref, "on", timeout=config.bmc_timeout)
    with session_scope(url) as session:
        host = _host(session, node)
        if host.status != PowerStatus.ON.value:
            record_status(session, host, PowerStatus.BOOTING, actor=actor, reason=why, now=now)
            host.last_error = None
        return PowerResult(node, "on", why, str(host.status))


def check_power_off(
    node: str,
    *,
    migrate: bool = False,
    url: str | None = None,
    config: PowerConfig | None = None,
    policy: PlacementPolicy | None = None,
    now: datetime | None = None,
) -> PowerDecision:
    """The decision for powering ``node`` off, from live VM lists; nothing is changed."""
    config = config or load_power_config()
    now = now or datetime.now(UTC)
    with session_scope(url) as session:
        if session.get(Host, node) is None:
            raise KeyError(f"no host named {node!r} in the inventory")
        _hosts, views = _fleet_views(session, now=now, timeout=config.bmc_timeout)
    policy = policy or load_placement_policy(config.placement_policy)
    return decide_power_off(views[node], migrate=migrate, fleet=list(views.values()), policy=policy)


def power_off(
    node: str,
    *,
    actor: str,
    migrate: bool = False,
    hard: bool = False,
    reason: str = "",
    url: str | None = None,
    config: PowerConfig | None = None,
    policy: PlacementPolicy | None = None,
    now: datetime | None = None,
) -> PowerResult:
    """Power ``node`` off if the refusal rules allow it, migrating its VMs first when ``migrate``.

    Refused (VMs running or booting, no placement for them) → :class:`PowerRefused`, nothing changed.
    Allowed → each VM is moved with libvirt (live, else cold), then mode off, BMC soft (or hard) off,
    status stopping; the monitoring cycle records ``stopped`` when the BMC reports Off.
    """
    config = config or load_power_config()
    now = now or datetime.now(UTC)
    decision = check_power_off(node, migrate=migrate, url=url, config=config, policy=policy, now=now)
    if not decision.allowed:
        raise PowerRefused(decision)
    with session_scope(url) as session:
        refs = {h.name: NodeRef.of(h) for h in session.scalars(select(Host))}
    moved: dict[str, str] = {}
    if decision.migrations:
        with LibvirtHook(refs[node].libvirt_conn_id) as source:
            for vm, target in decision.migrations.items():
                with LibvirtHook(refs[target].libvirt_conn_id) as dest:
                    how = source.migrate(vm, dest)
                moved[vm] = target
                log.info("migrated %s from %s to %s (%s)", vm, node, target, how)
    why = reason or decision.reason
    with session_scope(url) as session:
        record_mode(session, _host(session, node), PowerMode.OFF, actor=actor, reason=why, now=now)
    bmc_set_power(refs[node], "hard_off" if hard else "soft_off", timeout=config.bmc_timeout)
    with session_scope(url) as session:
        host = _host(session, node)
        record_status(session, host, PowerStatus.STOPPING, actor=actor, reason=why, now=now)
        return PowerResult(node, "off", why, str(host.status), moved)


def _host(session: Session, name: str) -> Host:
    host = session.get(Host, name)
    if host is None:
        raise KeyError(f"no host named {name!r} in the inventory")
    return host


# ---------------------------------------------------------------------------------------------------
# Reservations and the planner


def reservation_id(row: ReservationRow) -> str:
    return f"res-{row.id}"


def active_reservations(session: Session, *, now: datetime) -> list[Reservation]:
    rows = session.scalars(
        select(ReservationRow).where(ReservationRow.state == "active", ReservationRow.end > now)
    )
    return [
        Reservation(
            id=reservation_id(r),
            start=_aware(r.start),  # type: ignore[arg-type]
            end=_aware(r.end),  # type: ignore[arg-type]
            vm_count=r.vm_count,
            vcpus_per_vm=r.vcpus_per_vm,
            memory_mib_per_vm=r.memory_mib_per_vm,
            group=r.group,
        )
        for r in rows
    ]


@dataclass
class PlannerReport:
    plan: PowerPlan
    dry_run: bool
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"planner at {self.plan.now.isoformat()}{' (dry run)' if self.dry_run else ''}"]
        out += [f"  power {a.action.value} {a.node}: {a.reason}" for a in self.plan.actions]
        out += [f"  skip {s.node}: {s.reason}" for s in self.plan.skipped]
        out += [f"  note: {n}" for n in self.plan.notes]
        out += [f"  failed {n}: {e}" for n, e in self.failed.items()]
        return out


def plan_cycle(
    *,
    url: str | None = None,
    config: PowerConfig | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    policy: PlacementPolicy | None = None,
) -> PlannerReport:
    """One autonomous planner cycle: plan from the DB and live VM lists, then carry it out.

    Power on: mode on + BMC on (status booting). Power off: mode off + BMC soft off (status
    stopping). Each is recorded with the planner's reason. ``dry_run`` only returns the plan.
    """
    config = config or load_power_config()
    now = now or datetime.now(UTC)
    with session_scope(url) as session:
        _hosts, views = _fleet_views(session, now=now, timeout=config.bmc_timeout)
        reservations = active_reservations(session, now=now)
    policy = policy or load_placement_policy(config.placement_policy)
    plan = plan_power(
        list(views.values()), reservations, now=now, thresholds=config.thresholds, policy=policy
    )
    report = PlannerReport(plan, dry_run)
    for line in report.lines():
        log.info("%s", line)
    if dry_run:
        return report
    for action in plan.actions:
        try:
            if action.action is PowerAction.ON:
                power_on(
                    action.node, actor=PLANNER_ACTOR, reason=action.reason, url=url, config=config, now=now
                )
            else:
                # power_off re-checks the refusal rules against live VM lists right before acting.
                power_off(
                    action.node, actor=PLANNER_ACTOR, reason=action.reason, url=url, config=config, now=now
                )
            report.done.append(action.node)
        except Exception as err:  # one node's BMC failing must not stop the others
            report.failed[action.node] = str(err)
            log.warning("planner could not power %s %s: %s", action.action.value, action.node, err)
    return report


def thresholds_summary(config: PowerConfig) -> dict[str, float]:
    return {
        "off_threshold_s": config.thresholds.off_threshold.total_seconds(),
        "on_threshold_s": config.thresholds.on_threshold.total_seconds(),
        "guaranteed_off_s": config.thresholds.guaranteed_off.total_seconds(),
    }


__all__ = [
    "MONITOR_ACTOR",
    "PLANNER_ACTOR",
    "BmcUnavailable",
    "CallResult",
    "MonitorReport",
    "NodeRef",
    "PlannerReport",
    "PowerConfig",
    "PowerConfigError",
    "PowerRefused",
    "PowerResult",
    "active_reservations",
    "bmc_power_state",
    "bmc_set_power",
    "check_power_off",
    "load_power_config",
    "monitor_cycle",
    "plan_cycle",
    "power_off",
    "power_on",
    "record_mode",
    "record_status",
    "run_bounded",
]
