"""Manual power control and the planner: decisions of ``rackflow.core.power`` carried out (BMC power
calls, libvirt migrations) against the ``Host`` rows and reservations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

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
    Reservation,
    decide_power_off,
    decide_power_on,
    plan_power,
)
from rackflow.db.models import Host
from rackflow.db.models import Reservation as ReservationRow
from rackflow.db.session import session_scope
from rackflow.hooks.libvirt import LibvirtHook
from rackflow.services.power.bmc import NodeRef, bmc_set_power, run_bounded
from rackflow.services.power.config import PowerConfig, load_power_config
from rackflow.services.power.history import record_mode, record_status
from rackflow.services.power.monitor import _view, _vms_of

log = logging.getLogger(__name__)

PLANNER_ACTOR = "rackflow_power_planner"


class PowerRefused(RuntimeError):
    """A manual power request was refused; ``decision`` carries the reason and the blocking VMs."""

    def __init__(self, decision: PowerDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


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


def reservation_id(row: ReservationRow) -> str:
    return f"res-{row.id}"


def active_reservations(session: Session, *, now: datetime) -> list[Reservation]:
    rows = session.scalars(
        select(ReservationRow).where(ReservationRow.state == "active", ReservationRow.end > now)
    )
    return [
        Reservation(
            id=reservation_id(r),
            start=r.start,  # type: ignore[arg-type]
            end=r.end,  # type: ignore[arg-type]
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
