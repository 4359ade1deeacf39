"""Power reasoning for physical nodes: one state vocabulary, manual control, reconcile and the planner.

How rackflow powers physical nodes on and off: every node has a *mode* (what was requested: on or
off) and a *status*
(what the node really is: off, booting, on, suspending, suspended, stopping, stopped, error-stopped).
Raw BMC answers (Redfish ``PowerState``, IPMI chassis power) are mapped to the status here, at the edge,
so nothing else ever sees a backend's strings.

Everything in this module decides and explains; nothing acts. Hooks, the monitoring DAG and the power
operator carry out what these functions return, which keeps dry runs and tests honest.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import accumulate
from operator import attrgetter
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from rackflow.core.placement import (
    MAX_MEMORY_MIB_PER_VM,
    MAX_VCPUS_PER_VM,
    MAX_VMS_PER_RESERVATION,
    NeededNodes,
    NodeCapacity,
    PackingPlacement,
    PlacementError,
    PlacementPolicy,
    VmRequest,
    check_placement,
    nodes_needed,
)
from rackflow.core.values import parse_duration

# ---------------------------------------------------------------------------------------------------
# Vocabulary


class PowerMode(StrEnum):
    """What was requested for the node (its *mode*)."""

    ON = "on"
    OFF = "off"


class PowerStatus(StrEnum):
    """What the node really is (its *status*)."""

    OFF = "off"
    BOOTING = "booting"
    ON = "on"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR_STOPPED = "error-stopped"


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"


#: Powered, or coming up: placement counts these as on.
UP = frozenset({PowerStatus.ON, PowerStatus.BOOTING})
#: Cleanly off: the planner and reconcile may power these on. Error-stopped needs an operator.
DOWN = frozenset({PowerStatus.OFF, PowerStatus.STOPPED})


class UnknownPowerState(ValueError):
    """A BMC reported a power state this module does not know; treat the node like an unreachable BMC."""


def status_from_bmc(
    power_on: bool | None,
    *,
    previous: PowerStatus,
    action_in_flight: PowerAction | None = None,
) -> PowerStatus:
    """Status from a settled on/off reading (IPMI, or Redfish ``On``/``Off``).

    ``action_in_flight`` is the power action rackflow sent and has not yet seen take effect; the caller
    clears it when the status reaches the target or the reconcile timeout fires. Decisions:

    - On while power off is in flight: ``stopping`` (the OS is still shutting down).
    - On otherwise: ``on`` — also from ``error-stopped``, since a node that answers On is up.
    - Off while power on is in flight: still ``booting``. BMCs report Off for a moment after accepting
      a power-on; a node that never comes up is caught by the boot timeout (reconcile), as with Slurm's
      ResumeTimeout, rather than flapping between off and booting here.
    - Off after ``booting`` with nothing in flight: ``error-stopped`` — the node fell over while booting.
    - Off after ``stopping``/``stopped``: ``stopped`` (rackflow stopped it).
    - Off after ``suspending``/``suspended``: ``suspended`` (many BMCs cannot tell S3 from S5).
    - Off after ``error-stopped``: stays ``error-stopped`` so an abnormal stop is not silently turned
      into an ordinary ``off`` that reconcile would power on again; a manual power on clears it.
    - Off otherwise: ``off``.
    """
    if power_on is None:
        raise UnknownPowerState("no power state reported")
    if power_on:
        return PowerStatus.STOPPING if action_in_flight is PowerAction.OFF else PowerStatus.ON
    if action_in_flight is PowerAction.ON:
        return PowerStatus.BOOTING
    if previous is PowerStatus.BOOTING:
        return PowerStatus.ERROR_STOPPED
    if previous in (PowerStatus.STOPPING, PowerStatus.STOPPED):
        return PowerStatus.STOPPED
    if previous in (PowerStatus.SUSPENDING, PowerStatus.SUSPENDED):
        return PowerStatus.SUSPENDED
    if previous is PowerStatus.ERROR_STOPPED:
        return PowerStatus.ERROR_STOPPED
    return PowerStatus.OFF


def status_from_redfish(
    power_state: str | None,
    *,
    previous: PowerStatus,
    action_in_flight: PowerAction | None = None,
) -> PowerStatus:
    """Map a Redfish ``ComputerSystem.PowerState`` (On, Off, PoweringOn, PoweringOff, Paused).

    Transitional states are taken as the BMC says them (``booting``, ``stopping``); ``Paused`` is
    ``suspended``. On/Off follow :func:`status_from_bmc`. Anything else raises :class:`UnknownPowerState`.
    """
    state = (power_state or "").strip().lower()
    if state == "poweringon":
        return PowerStatus.BOOTING
    if state == "poweringoff":
        return PowerStatus.STOPPING
    if state == "paused":
        return PowerStatus.SUSPENDED
    if state in ("on", "off"):
        return status_from_bmc(state == "on", previous=previous, action_in_flight=action_in_flight)
    raise UnknownPowerState(f"unknown Redfish PowerState {power_state!r}")


def status_from_ipmi(
    chassis_power: str | bool | None,
    *,
    previous: PowerStatus,
    action_in_flight: PowerAction | None = None,
) -> PowerStatus:
    """Map IPMI ``chassis power status`` (``on``/``off``, as ipmitool prints it)."""
    if isinstance(chassis_power, bool):
        reading: bool | None = chassis_power
    else:
        text = (chassis_power or "").strip().lower().removeprefix("chassis power is ").strip()
        if text not in ("on", "off"):
            raise UnknownPowerState(f"unknown IPMI chassis power {chassis_power!r}")
        reading = text == "on"
    return status_from_bmc(reading, previous=previous, action_in_flight=action_in_flight)


# ---------------------------------------------------------------------------------------------------
# Models


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeView(_Frozen):
    """One physical node as the power logic sees it: fleet capacity plus the DB's mode/status flags."""

    name: str
    group: str
    cpus: int = Field(gt=0)
    memory_mib: int = Field(gt=0)
    mode: PowerMode
    status: PowerStatus
    status_since: AwareDatetime
    vms_running: tuple[VmRequest, ...] = ()
    vms_booting: tuple[VmRequest, ...] = ()
    last_error: str | None = None

    @property
    def vm_names(self) -> list[str]:
        return [vm.name for vm in (*self.vms_running, *self.vms_booting)]

    @property
    def has_vms(self) -> bool:
        return bool(self.vms_running or self.vms_booting)

    def capacity(self) -> NodeCapacity:
        """Capacity for placement: VMs running or booting take their share."""
        used_cpus = used_mem = 0
        for vm in (*self.vms_running, *self.vms_booting):
            used_cpus += vm.cpus
            used_mem += vm.memory_mib
        return NodeCapacity(
            self.name, self.group, self.cpus, self.memory_mib, used_cpus, used_mem, self.status in UP
        )


class Reservation(_Frozen):
    """A reserved virtual cluster: ``vm_count`` VMs of one size from ``start`` to ``end``.

    ``group`` pins the cluster to one network group; without it placement picks the group.
    """

    id: str
    start: AwareDatetime
    end: AwareDatetime
    vm_count: int = Field(gt=0, le=MAX_VMS_PER_RESERVATION)
    vcpus_per_vm: int = Field(gt=0, le=MAX_VCPUS_PER_VM)
    memory_mib_per_vm: int = Field(gt=0, le=MAX_MEMORY_MIB_PER_VM)
    group: str | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> Reservation:
        if self.end <= self.start:
            raise ValueError(f"reservation {self.id}: end {self.end} is not after start {self.start}")
        return self


MAX_THRESHOLD = timedelta(days=365)
"""The longest look-ahead a power threshold may have (the planner adds it to now)."""


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:g} min"


def _utc(at: datetime) -> str:
    """A window's end as the pages show times: ``2026-12-01 20:15 UTC`` (never raw ISO 8601)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class PowerThresholds(_Frozen):
    """The look-ahead windows of power control: a node is kept on when a reservation needs it within
    ``on_threshold``, and may be powered off only when nothing needs it within ``off_threshold``.

    Durations in rackflow's one grammar (:func:`rackflow.core.values.parse_duration`). Off must exceed
    On, checked at load (otherwise a node flaps off and on, see the messages below).
    """

    off_threshold: timedelta
    on_threshold: timedelta

    @field_validator("off_threshold", "on_threshold", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> timedelta:
        return parse_duration(value, maximum=MAX_THRESHOLD, what="power threshold")

    @model_validator(mode="after")
    def _off_exceeds_on(self) -> PowerThresholds:
        off, on = self.off_threshold, self.on_threshold
        if off < on:
            raise ValueError(
                f"OffThreshold ({_minutes(off)}) must exceed OnThreshold ({_minutes(on)}): with Off < On, "
                "power-off control looks less far ahead than power-on control, so a node that power-on "
                "control wants on for a reservation is powered off and on again cycle after cycle (flapping)"
            )
        if off == on:
            raise ValueError(
                f"OffThreshold ({_minutes(off)}) must exceed OnThreshold ({_minutes(on)}): with Off = On a "
                "node may be powered on right after it was powered off; Off > On guarantees it stays off "
                "for at least Off - On"
            )
        return self

    @property
    def guaranteed_off(self) -> timedelta:
        """How long a node the planner powered off stays off at least (Off - On)."""
        return self.off_threshold - self.on_threshold


@dataclass(frozen=True)
class ReconcileTimeouts:
    """How long booting/stopping may last before the node is error-stopped (Slurm's ResumeTimeout)."""

    boot_timeout: timedelta = timedelta(minutes=10)
    stop_timeout: timedelta = timedelta(minutes=10)


# ---------------------------------------------------------------------------------------------------
# Manual control


@dataclass(frozen=True)
class PowerDecision:
    """Answer to a manual power request; ``migrations`` (vm -> target node) run before the power off."""

    node: str
    action: PowerAction
    allowed: bool
    reason: str
    blocking_vms: tuple[str, ...] = ()
    migrations: dict[str, str] = field(default_factory=dict)


def decide_power_on(node: NodeView) -> PowerDecision:
    """Power on is always allowed, at any time."""
    already = " (already on)" if node.status is PowerStatus.ON else ""
    return PowerDecision(node.name, PowerAction.ON, True, f"power on is always allowed{already}")


def decide_power_off(
    node: NodeView,
    *,
    migrate: bool = False,
    fleet: Sequence[NodeView] = (),
    policy: PlacementPolicy | None = None,
) -> PowerDecision:
    """Power off, refused while the node boots or runs VMs unless they can be migrated.

    Booting VMs always refuse (they cannot be migrated mid-boot). With ``migrate`` the running VMs are
    placed by ``policy`` on the other nodes of ``fleet`` that are on, within the node's own group
    (its VMs' clusters must stay in one group). No placement, a failing policy or an invalid answer
    refuses and changes nothing.
    """
    off = PowerAction.OFF
    if node.vms_booting:
        names = tuple(vm.name for vm in node.vms_booting)
        return PowerDecision(
            node.name, off, False, f"{node.name} is booting VMs {', '.join(names)}; refusing power off", names
        )
    if not node.vms_running:
        return PowerDecision(node.name, off, True, f"{node.name} runs no VMs; power off allowed")
    names = tuple(vm.name for vm in node.vms_running)
    if not migrate:
        return PowerDecision(
            node.name,
            off,
            False,
            f"{node.name} runs VMs {', '.join(names)}; refusing power off (migrate them or stop them first)",
            names,
        )
    policy = policy or PackingPlacement()
    vms = [
        VmRequest(vm.name, vm.cpus, vm.memory_mib, cluster=vm.cluster, group=node.group)
        for vm in node.vms_running
    ]
    targets = [n.capacity() for n in fleet if n.name != node.name and n.status is PowerStatus.ON]
    refused = f"refusing power off of {node.name}, nothing changed"
    try:
        mapping = policy.place(vms, targets)
    except PlacementError as err:
        return PowerDecision(node.name, off, False, f"placement failed: {err}; {refused}", names)
    if mapping is None:
        return PowerDecision(
            node.name,
            off,
            False,
            f"no placement for VMs {', '.join(names)} on the other powered-on nodes of group {node.group}; "
            f"{refused}",
            names,
        )
    problems = check_placement(vms, targets, mapping)
    if problems:
        return PowerDecision(
            node.name, off, False, f"placement answer invalid: {'; '.join(problems)}; {refused}", names
        )
    moves = {vm.name: mapping[vm.name] for vm in vms}
    return PowerDecision(
        node.name,
        off,
        True,
        f"migrate {', '.join(f'{vm} -> {dst}' for vm, dst in moves.items())}, then power off {node.name}",
        names,
        moves,
    )


# ---------------------------------------------------------------------------------------------------
# Reconcile (the per-node monitoring loop)


class ReconcileAction(StrEnum):
    POWER_ON = "power-on"
    POWER_OFF = "power-off"
    MARK_ERROR = "mark-error-stopped"
    NONE = "none"


@dataclass(frozen=True)
class ReconcileStep:
    """What the monitoring loop does for one node; ``new_status`` is what to record when it does it."""

    node: str
    action: ReconcileAction
    reason: str
    new_status: PowerStatus | None = None
    error: str | None = None


def reconcile_node(
    node: NodeView,
    *,
    now: datetime,
    timeouts: ReconcileTimeouts = ReconcileTimeouts(),
    bmc_error: str | None = None,
) -> ReconcileStep:
    """Bring status towards mode: start or stop the node as its mode and status say.

    Order: an unreachable BMC error-stops the node with the error; booting/stopping past its timeout
    error-stops it; mode on + off/stopped powers on; mode off + on powers off only when no VM runs or
    boots there. Error-stopped nodes wait for an operator (a manual power on clears them).
    """
    name = node.name
    if bmc_error is not None:
        return ReconcileStep(
            name,
            ReconcileAction.MARK_ERROR,
            f"BMC unreachable: {bmc_error}",
            PowerStatus.ERROR_STOPPED,
            bmc_error,
        )
    age = now - node.status_since
    for status, limit in (
        (PowerStatus.BOOTING, timeouts.boot_timeout),
        (PowerStatus.STOPPING, timeouts.stop_timeout),
    ):
        if node.status is status and age > limit:
            error = f"{status.value} for {_minutes(age)}, longer than the {_minutes(limit)} timeout"
            return ReconcileStep(name, ReconcileAction.MARK_ERROR, error, PowerStatus.ERROR_STOPPED, error)
    if node.status is PowerStatus.ERROR_STOPPED:
        return ReconcileStep(
            name,
            ReconcileAction.NONE,
            f"error-stopped ({node.last_error or 'no error recorded'}); needs an operator",
        )
    if node.mode is PowerMode.ON and node.status in DOWN:
        return ReconcileStep(
            name, ReconcileAction.POWER_ON, f"mode on, status {node.status.value}", PowerStatus.BOOTING
        )
    if node.mode is PowerMode.OFF and node.status is PowerStatus.ON:
        if node.has_vms:
            return ReconcileStep(
                name, ReconcileAction.NONE, f"mode off but VMs {', '.join(node.vm_names)} are there; waiting"
            )
        return ReconcileStep(
            name, ReconcileAction.POWER_OFF, "mode off, status on, no VMs", PowerStatus.STOPPING
        )
    return ReconcileStep(name, ReconcileAction.NONE, f"mode {node.mode.value}, status {node.status.value}")


def reconcile(
    nodes: Iterable[NodeView],
    *,
    now: datetime,
    timeouts: ReconcileTimeouts = ReconcileTimeouts(),
    bmc_errors: Mapping[str, str] | None = None,
) -> list[ReconcileStep]:
    """:func:`reconcile_node` for every node; ``bmc_errors`` maps node name -> why its BMC failed."""
    errors = bmc_errors or {}
    return [reconcile_node(n, now=now, timeouts=timeouts, bmc_error=errors.get(n.name)) for n in nodes]


# ---------------------------------------------------------------------------------------------------
# Autonomous planner


class ReservationBook:
    """Reservations sorted by start, so a look-ahead window is two bisections, not a scan.

    Build once per cycle (or keep it between cycles): sorting is the only O(M log M) step. Reservations
    that started earlier but still run are found through the running maximum of end times in start
    order, which never decreases and so can be bisected too.
    """

    def __init__(self, reservations: Iterable[Reservation]) -> None:
        self._items = sorted(reservations, key=attrgetter("start"))
        self._starts = list(map(attrgetter("start"), self._items))
        self._max_end = list(accumulate(map(attrgetter("end"), self._items), max))

    def __len__(self) -> int:
        return len(self._items)

    def in_window(self, start: datetime, end: datetime) -> list[Reservation]:
        """Reservations running at some point in ``[start, end]``, earliest start first."""
        lo = bisect_right(self._max_end, start)
        hi = bisect_right(self._starts, end)
        return [r for r in self._items[lo:hi] if r.end > start]


@dataclass(frozen=True)
class PlanAction:
    node: str
    action: PowerAction
    reason: str


@dataclass(frozen=True)
class SkippedNode:
    node: str
    reason: str


@dataclass(frozen=True)
class PowerPlan:
    """One planner cycle's decisions; carrying them out is the caller's job (dry-run friendly)."""

    now: datetime
    actions: tuple[PlanAction, ...] = ()
    skipped: tuple[SkippedNode, ...] = ()
    notes: tuple[str, ...] = ()
    unplaced_reservations: tuple[str, ...] = ()

    def nodes(self, action: PowerAction) -> list[str]:
        return [a.node for a in self.actions if a.action is action]


def _ids(reservations: Sequence[Reservation], limit: int = 5) -> str:
    shown = ", ".join(r.id for r in reservations[:limit])
    more = len(reservations) - limit
    return f"{shown} (+{more} more)" if more > 0 else shown


def _vm_list(node: NodeView, limit: int = 5) -> str:
    names = node.vm_names
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" (+{more} more)" if more > 0 else "")


class _Fleet:
    """Per-cycle facts about the nodes the two controls share."""

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self.nodes = list(nodes)
        self.capacities = [n.capacity() for n in self.nodes if n.status in UP or n.status in DOWN]
        self.running_per_cluster: dict[str, int] = {}
        self.cluster_group: dict[str, str] = {}
        for node in self.nodes:
            for vm in (*node.vms_running, *node.vms_booting):
                if vm.cluster is not None:
                    self.running_per_cluster[vm.cluster] = self.running_per_cluster.get(vm.cluster, 0) + 1
                    self.cluster_group.setdefault(vm.cluster, node.group)

    def outstanding(self, reservations: Sequence[Reservation]) -> tuple[list[Reservation], dict[str, int]]:
        """Reservations that still need VMs placed, and how many, after the VMs already there."""
        todo: list[Reservation] = []
        counts: dict[str, int] = {}
        for r in reservations:
            left = r.vm_count - self.running_per_cluster.get(r.id, 0)
            if left > 0:
                todo.append(r)
                counts[r.id] = left
        return todo, counts

    def needed(
        self, policy: PlacementPolicy, reservations: Sequence[Reservation], *, allow_partial: bool
    ) -> NeededNodes | None:
        todo, counts = self.outstanding(reservations)
        if not todo:
            return NeededNodes(frozenset())
        groups = {r.id: self.cluster_group[r.id] for r in todo if r.id in self.cluster_group}
        return nodes_needed(
            policy, todo, self.capacities, outstanding=counts, groups=groups, allow_partial=allow_partial
        )


def plan_power(
    nodes: Sequence[NodeView],
    reservations: Sequence[Reservation] | ReservationBook,
    *,
    now: datetime,
    thresholds: PowerThresholds,
    policy: PlacementPolicy | None = None,
) -> PowerPlan:
    """One cycle of autonomous power control (rackflow powering nodes on and off by itself).

    Power-off control:

    1. No node is on: nothing to do.
    2. Reservations running at some point in ``[now, now + OffThreshold]``; **if there are none,
       power-off control does nothing**, so idle nodes stay on while nothing is reserved (power them
       off by hand, or let a reservation appear); powering everything off instead would leave no node
       for the next reservation until power-on control catches up.
    3. Nodes needed by those reservations, from the placement policy (their VMs packed onto the nodes
       that are on first). If they cannot all be placed, the fleet is short already: nothing is powered
       off.
    4. Nodes that are on and not needed are powered off — except nodes running or booting VMs (never
       powered off by the planner) and nodes power-on control needs this cycle (a node that is
       about to be powered on is never powered off), which are listed in ``skipped``.

    Power-on control:

    1. No node is off/stopped: nothing to do.
    2. Reservations running at some point in ``[now, now + OnThreshold]``; none: nothing.
    3. Nodes needed by them; if they do not all fit, the earliest that fit are served and the rest are
       reported in ``unplaced_reservations``.
    4. Needed nodes that are off/stopped are powered on.

    Reservations whose VMs already run (VM ``cluster`` = reservation id) only count their missing VMs,
    pinned to the group the running ones are in. All reservations of a window are placed as if they
    overlapped, which errs on the side of keeping nodes on. Error-stopped and transitional nodes
    (stopping, suspending, suspended) are left out of placement and never acted on.
    """
    policy = policy or PackingPlacement()
    book = reservations if isinstance(reservations, ReservationBook) else ReservationBook(reservations)
    fleet = _Fleet(nodes)
    notes: list[str] = []
    actions: list[PlanAction] = []
    skipped: list[SkippedNode] = []
    unplaced: tuple[str, ...] = ()

    # Power-on control first: its needed nodes are protected from power-off control.
    on_needed: frozenset[str] = frozenset()
    on_end = now + thresholds.on_threshold
    if not any(n.status in DOWN for n in fleet.nodes):
        notes.append("power-on control: no node is off; nothing to do")
    else:
        window = book.in_window(now, on_end)
        if not window:
            notes.append(f"power-on control: no reservation before {_utc(on_end)}; nothing to do")
        else:
            try:
                need = fleet.needed(policy, window, allow_partial=True)
            except PlacementError as err:
                need = None
                notes.append(f"power-on control: placement failed ({err}); nothing powered on")
            if need is not None:
                on_needed = need.nodes
                unplaced = need.unplaced
                if unplaced:
                    notes.append(
                        f"power-on control: {len(unplaced)} reservation(s) do not fit the fleet: "
                        f"{', '.join(unplaced[:10])}"
                    )
                reason = (
                    f"needed by {len(need.placed)} reservation(s) starting by {_utc(on_end)} "
                    f"(OnThreshold {_minutes(thresholds.on_threshold)}): {_ids(window)}"
                )
                by_name = {n.name: n for n in fleet.nodes}
                for name in sorted(on_needed):
                    if by_name[name].status in DOWN:
                        actions.append(PlanAction(name, PowerAction.ON, reason))

    # Power-off control.
    off_end = now + thresholds.off_threshold
    if not any(n.status is PowerStatus.ON for n in fleet.nodes):
        notes.append("power-off control: no node is on; nothing to do")
    else:
        window = book.in_window(now, off_end)
        if not window:
            notes.append(
                f"power-off control: no reservation before {_utc(off_end)}; nothing to do "
                "(power-off control acts only when reservations exist in its window)"
            )
        else:
            try:
                off_need = fleet.needed(policy, window, allow_partial=False)
            except PlacementError as err:
                off_need = None
                notes.append(f"power-off control: placement failed ({err}); nothing powered off")
            else:
                if off_need is None:
                    notes.append(
                        f"power-off control: the {len(window)} reservation(s) before {_utc(off_end)} "
                        "do not fit the fleet; nothing powered off"
                    )
            if off_need is not None:
                reason = (
                    f"not needed by the {len(window)} reservation(s) before {_utc(off_end)} "
                    f"(OffThreshold {_minutes(thresholds.off_threshold)}) and idle"
                )
                for node in fleet.nodes:
                    if node.status is not PowerStatus.ON or node.name in off_need.nodes:
                        continue
                    if node.has_vms:
                        skipped.append(
                            SkippedNode(
                                node.name, f"not needed but hosts VMs {_vm_list(node)} (running or booting)"
                            )
                        )
                    elif node.name in on_needed:
                        skipped.append(
                            SkippedNode(
                                node.name, "not needed by power-off control but power-on control needs it"
                            )
                        )
                    else:
                        actions.append(PlanAction(node.name, PowerAction.OFF, reason))

    return PowerPlan(now, tuple(actions), tuple(skipped), tuple(notes), unplaced)
