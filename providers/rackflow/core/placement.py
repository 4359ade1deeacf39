"""Where VMs go: the placement policy the power planner and the manual power-off ask.

VM placement may be left to an external application; here it is a small protocol with a default that
packs VMs onto as few powered-on hosts as possible, a loader for site policies (dotted path or the
``rackflow.placement`` entry point group) and an HTTP adapter for a placement service. The power
planner, the manual power-off (migrations) and launches over a network group all ask the same one.

Placement sees capacity only: each node's total and already used vCPUs and memory and whether it is
powered on. VMs of one cluster stay in one network group, because network groups are what keeps a
cluster's traffic near.
"""

from __future__ import annotations

import importlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

ENTRY_POINT_GROUP = "rackflow.placement"

# The largest VM rackflow launches or reserves (the launch DAG's params and reservations share them).
MAX_VCPUS_PER_VM = 256
MAX_MEMORY_MIB_PER_VM = 4_194_304
"""4 TiB."""
MAX_VMS_PER_RESERVATION = 100_000


class PlacementError(RuntimeError):
    """A placement policy could not answer (service down, bad answer, policy not loadable)."""


@dataclass(frozen=True, slots=True)
class VmRequest:
    """One VM to place, or one VM already on a node.

    ``cluster`` ties VMs that must share a network group; ``group`` pins them to one group.
    """

    name: str
    cpus: int
    memory_mib: int
    cluster: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """A node as placement sees it: capacity, what is taken, and whether it is powered on."""

    name: str
    group: str
    cpus: int
    memory_mib: int
    used_cpus: int = 0
    used_memory_mib: int = 0
    powered_on: bool = True

    @property
    def free_cpus(self) -> int:
        return self.cpus - self.used_cpus

    @property
    def free_memory_mib(self) -> int:
        return self.memory_mib - self.used_memory_mib

    @property
    def in_use(self) -> bool:
        return self.used_cpus > 0 or self.used_memory_mib > 0


@runtime_checkable
class PlacementPolicy(Protocol):
    """Decides which node each VM goes to.

    ``place`` returns ``{vm name: node name}`` covering every VM, or ``None`` when the VMs cannot all be
    placed. It must not assume anything about nodes it is not given: callers leave out nodes that must
    not receive VMs (the node being powered off, nodes in error).
    """

    def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None: ...


class ReservationLike(Protocol):
    """What :func:`nodes_needed` reads from a reservation (``rackflow.core.power.Reservation`` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def vm_count(self) -> int: ...
    @property
    def vcpus_per_vm(self) -> int: ...
    @property
    def memory_mib_per_vm(self) -> int: ...
    @property
    def group(self) -> str | None: ...


# ---------------------------------------------------------------------------------------------------
# Default policy: pack onto the fewest powered-on nodes of one group.


@dataclass(slots=True)
class _Trial:
    group: str
    assignment: dict[str, int]
    deltas: dict[int, tuple[int, int]]
    extra_on: int
    extra_used: int


class _PackState:
    """Free capacity per node plus, per group, the nodes in preference order."""

    def __init__(self, nodes: Sequence[NodeCapacity], min_cpus: int, min_mem: int) -> None:
        self.names: list[str] = []
        self.free_cpu: list[int] = []
        self.free_mem: list[int] = []
        self.powered: list[bool] = []
        self.used: list[bool] = []
        self.min_cpus = min_cpus
        self.min_mem = min_mem
        by_group: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            self.names.append(node.name)
            self.free_cpu.append(node.cpus - node.used_cpus)
            self.free_mem.append(node.memory_mib - node.used_memory_mib)
            self.powered.append(node.powered_on)
            self.used.append(node.used_cpus > 0 or node.used_memory_mib > 0)
            by_group.setdefault(node.group, []).append(i)
        # Preference: on and already hosting VMs, then on and idle, then off; name keeps it stable.
        self.order = {
            g: sorted(idx, key=lambda i: (not self.powered[i], not self.used[i], self.names[i]))
            for g, idx in by_group.items()
        }
        self.start = dict.fromkeys(self.order, 0)

    def _full(self, i: int) -> bool:
        return self.free_cpu[i] < self.min_cpus or self.free_mem[i] < self.min_mem

    def try_fit(self, group: str, vms: Sequence[VmRequest]) -> _Trial | None:
        order = self.order.get(group)
        if not order:
            return None
        deltas: dict[int, tuple[int, int]] = {}
        assignment: dict[str, int] = {}
        first = self.start[group]
        for vm in vms:
            for pos in range(first, len(order)):
                i = order[pos]
                cpu, mem = deltas.get(i, (self.free_cpu[i], self.free_mem[i]))
                if cpu >= vm.cpus and mem >= vm.memory_mib:
                    deltas[i] = (cpu - vm.cpus, mem - vm.memory_mib)
                    assignment[vm.name] = i
                    break
            else:
                return None
        extra_on = sum(1 for i in deltas if not self.powered[i])
        extra_used = sum(1 for i in deltas if not self.used[i])
        return _Trial(group, assignment, deltas, extra_on, extra_used)

    def commit(self, trial: _Trial) -> None:
        for i, (cpu, mem) in trial.deltas.items():
            self.free_cpu[i], self.free_mem[i] = cpu, mem
            self.used[i] = True
        order, pos = self.order[trial.group], self.start[trial.group]
        while pos < len(order) and self._full(order[pos]):
            pos += 1
        self.start[trial.group] = pos


def _units(vms: Sequence[VmRequest]) -> list[list[VmRequest]] | None:
    """VMs that must share a group, largest first; None when a cluster is pinned to two groups."""
    clusters: dict[str, list[VmRequest]] = {}
    units: list[list[VmRequest]] = []
    for vm in vms:
        if vm.cluster is None:
            units.append([vm])
        else:
            clusters.setdefault(vm.cluster, []).append(vm)
    for members in clusters.values():
        if len({vm.group for vm in members if vm.group is not None}) > 1:
            return None
        units.append(members)
    for unit in units:
        unit.sort(key=lambda vm: (-vm.memory_mib, -vm.cpus, vm.name))
    units.sort(key=lambda u: (-sum(v.memory_mib for v in u), -sum(v.cpus for v in u), u[0].name))
    return units


class PackingPlacement:
    """First-fit decreasing onto the fewest powered-on nodes, one network group per cluster.

    Nodes already on and hosting VMs are filled first, then idle nodes that are on, then nodes that are
    off, so the planner can power off whatever is left over. For each cluster (largest first) every
    allowed group is tried and the one needing the fewest extra nodes powered on wins, then the one
    touching the fewest idle nodes, then the group name (deterministic plans, reproducible dry runs).
    """

    name = "packing"

    def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
        if not vms:
            return {}
        units = _units(vms)
        if units is None:
            return None
        state = _PackState(nodes, min(v.cpus for v in vms), min(v.memory_mib for v in vms))
        all_groups = sorted(state.order)
        mapping: dict[str, str] = {}
        for unit in units:
            pinned = next((vm.group for vm in unit if vm.group is not None), None)
            best: _Trial | None = None
            for group in [pinned] if pinned is not None else all_groups:
                trial = state.try_fit(group, unit)
                if trial is not None and (
                    best is None or (trial.extra_on, trial.extra_used) < (best.extra_on, best.extra_used)
                ):
                    best = trial
                    if best.extra_on == 0 and best.extra_used == 0:
                        break
            if best is None:
                return None
            state.commit(best)
            mapping.update({vm: state.names[i] for vm, i in best.assignment.items()})
        return mapping


# ---------------------------------------------------------------------------------------------------
# Checking answers and asking for reservations.


def check_placement(
    vms: Sequence[VmRequest], nodes: Sequence[NodeCapacity], mapping: Mapping[str, str]
) -> list[str]:
    """Problems with a policy's answer: missing VMs, unknown nodes, over capacity, split clusters.

    External policies are not trusted: a wrong answer must become a refusal, not a bad migration.
    """
    problems: list[str] = []
    by_name = {n.name: n for n in nodes}
    missing = [vm.name for vm in vms if vm.name not in mapping]
    if missing:
        problems.append(f"no node for VMs {', '.join(missing)}")
    unknown = sorted({node for node in mapping.values() if node not in by_name})
    if unknown:
        problems.append(f"unknown or excluded nodes {', '.join(unknown)}")
    load: dict[str, list[int]] = {}
    cluster_groups: dict[str, set[str]] = {}
    for vm in vms:
        target = by_name.get(mapping.get(vm.name, ""))
        if target is None:
            continue
        if vm.group is not None and target.group != vm.group:
            problems.append(
                f"{vm.name} must stay in group {vm.group}, placed on {target.name} ({target.group})"
            )
        if vm.cluster is not None:
            cluster_groups.setdefault(vm.cluster, set()).add(target.group)
        used = load.setdefault(target.name, [0, 0])
        used[0] += vm.cpus
        used[1] += vm.memory_mib
    for name, (cpus, mem) in sorted(load.items()):
        node = by_name[name]
        if cpus > node.free_cpus or mem > node.free_memory_mib:
            problems.append(
                f"{name} over capacity: {cpus} vCPUs/{mem} MiB placed, "
                f"{node.free_cpus} vCPUs/{node.free_memory_mib} MiB free"
            )
    for cluster, groups in sorted(cluster_groups.items()):
        if len(groups) > 1:
            problems.append(f"cluster {cluster} split across groups {', '.join(sorted(groups))}")
    return problems


def vm_requests_for(
    reservation: ReservationLike, *, count: int | None = None, group: str | None = None
) -> list[VmRequest]:
    """The VMs a reservation asks for, named ``<id>#<n>``; ``count``/``group`` override its own."""
    n = reservation.vm_count if count is None else count
    pin = group if group is not None else reservation.group
    return [
        VmRequest(
            name=f"{reservation.id}#{k}",
            cpus=reservation.vcpus_per_vm,
            memory_mib=reservation.memory_mib_per_vm,
            cluster=reservation.id,
            group=pin,
        )
        for k in range(n)
    ]


@dataclass(frozen=True)
class NeededNodes:
    """Nodes a set of reservations needs, and which reservations could not be placed."""

    nodes: frozenset[str]
    assignment: dict[str, str] = field(default_factory=dict)
    placed: tuple[str, ...] = ()
    unplaced: tuple[str, ...] = ()


def _place_checked(
    policy: PlacementPolicy, vms: list[VmRequest], nodes: list[NodeCapacity]
) -> dict[str, str] | None:
    mapping = policy.place(vms, nodes)
    if mapping is None:
        return None
    problems = check_placement(vms, nodes, mapping)
    if problems:
        raise PlacementError(f"placement policy gave an invalid answer: {'; '.join(problems)}")
    return mapping


def nodes_needed(
    policy: PlacementPolicy,
    reservations: Sequence[ReservationLike],
    nodes: Sequence[NodeCapacity],
    *,
    outstanding: Mapping[str, int] | None = None,
    groups: Mapping[str, str] | None = None,
    allow_partial: bool = False,
) -> NeededNodes | None:
    """Nodes that must be on to host the reservations' VMs on top of what already runs.

    ``outstanding`` gives, per reservation id, how many of its VMs still need a place (some may already
    run); ``groups`` pins a reservation to the group its running VMs are in. All reservations are placed
    together, as if they overlapped — conservative for a look-ahead window. Returns None when they do
    not fit. With ``allow_partial`` it instead keeps the longest prefix (in the given order, so callers
    pass earliest first) that fits, found by bisection so a remote policy is asked O(log n) times.
    """
    outstanding = outstanding or {}
    groups = groups or {}
    node_list = list(nodes)
    per_res: list[tuple[str, list[VmRequest]]] = [
        (r.id, vm_requests_for(r, count=outstanding.get(r.id), group=groups.get(r.id))) for r in reservations
    ]

    def attempt(k: int) -> dict[str, str] | None:
        return _place_checked(policy, [vm for _, vms in per_res[:k] for vm in vms], node_list)

    def result(k: int, mapping: dict[str, str]) -> NeededNodes:
        return NeededNodes(
            nodes=frozenset(mapping.values()),
            assignment=mapping,
            placed=tuple(rid for rid, _ in per_res[:k]),
            unplaced=tuple(rid for rid, _ in per_res[k:]),
        )

    full = attempt(len(per_res))
    if full is not None:
        return result(len(per_res), full)
    if not allow_partial:
        return None
    best_k, best = 0, {}
    lo, hi = 1, len(per_res) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        mapping = attempt(mid)
        if mapping is None:
            hi = mid - 1
        else:
            best_k, best = mid, mapping
            lo = mid + 1
    return result(best_k, best)


# ---------------------------------------------------------------------------------------------------
# Loading a site policy.


class HttpPlacementPolicy:
    """Asks a site's own placement service over HTTP (an external application deciding placement).

    Request, ``POST <url>`` with ``Content-Type: application/json``::

        {"vms":   [{"name", "cpus", "memory_mib", "cluster", "group"}, ...],
         "nodes": [{"name", "group", "cpus", "memory_mib", "used_cpus", "used_memory_mib",
                    "powered_on"}, ...]}

    Answer, status 200::

        {"placement": {"<vm name>": "<node name>", ...}}   # every VM placed
        {"placement": null, "reason": "..."}                # no placement possible

    Transport errors, other statuses and malformed answers raise :class:`PlacementError`; callers turn
    that into a refusal or a plan note, never into action.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.last_reason: str | None = None

    def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
        body = json.dumps({"vms": [asdict(v) for v in vms], "nodes": [asdict(n) for n in nodes]}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", **self.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise PlacementError(f"placement service {self.url} answered HTTP {err.code}") from err
        except (urllib.error.URLError, OSError) as err:
            raise PlacementError(f"placement service {self.url} unreachable: {err}") from err
        try:
            answer = json.loads(raw)
            placement = answer["placement"]
        except (ValueError, KeyError, TypeError) as err:
            raise PlacementError(
                f"placement service {self.url} sent a malformed answer: {raw[:200]!r}"
            ) from err
        if placement is None:
            self.last_reason = str(answer.get("reason") or "no placement")
            return None
        if not isinstance(placement, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in placement.items()
        ):
            raise PlacementError(f"placement service {self.url}: 'placement' must map VM names to node names")
        self.last_reason = None
        return dict(placement)


def _instantiate(obj: Any, source: str) -> PlacementPolicy:
    policy = obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "place")) else obj
    if not callable(getattr(policy, "place", None)):
        raise PlacementError(f"{source} is not a placement policy (no place() method)")
    return policy  # type: ignore[no-any-return]


def _entry_point(name: str) -> Any | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def load_placement_policy(name_or_path: str | None = None) -> PlacementPolicy:
    """Resolve a configured policy.

    ``None``/``"packing"`` gives :class:`PackingPlacement`; an ``http(s)://`` URL gives
    :class:`HttpPlacementPolicy`; otherwise a name in the ``rackflow.placement`` entry point group, or a
    dotted path ``pkg.mod:Name`` / ``pkg.mod.Name``. Classes and factories are called without
    arguments; instances are used as they are.
    """
    if name_or_path is None or name_or_path == PackingPlacement.name:
        return PackingPlacement()
    if name_or_path.startswith(("http://", "https://")):
        return HttpPlacementPolicy(name_or_path)
    try:
        found = _entry_point(name_or_path)
    except Exception as err:  # an entry point that fails to import is a config error, say which
        raise PlacementError(
            f"entry point {name_or_path!r} in {ENTRY_POINT_GROUP} failed to load: {err}"
        ) from err
    if found is not None:
        return _instantiate(found, f"entry point {name_or_path!r}")
    if ":" in name_or_path:
        module_name, _, attr = name_or_path.partition(":")
    else:
        module_name, _, attr = name_or_path.rpartition(".")
    if not module_name or not attr:
        raise PlacementError(
            f"unknown placement policy {name_or_path!r}: not an entry point in {ENTRY_POINT_GROUP}, "
            "not a dotted path, not a URL"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise PlacementError(f"cannot load placement policy {name_or_path!r}: {err}") from err
    return _instantiate(obj, name_or_path)


# ---------------------------------------------------------------------------------------------------
# Capacity check for the VM launcher.


class HostLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def cpus(self) -> int: ...
    @property
    def memory_mib(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """``count`` identical VMs to start on one host."""

    count: int
    cpus: int
    memory_mib: int


class CapacityShortfall(ValueError):
    """The host cannot take the VMs; the message names host and shortfall."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(frozen=True)
class CapacityCheck:
    host: str
    free_cpus: int
    free_memory_mib: int
    need_cpus: int
    need_memory_mib: int
    problems: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        if self.fits:
            return (
                f"{self.host} fits: {self.need_cpus} of {self.free_cpus} free vCPUs, "
                f"{self.need_memory_mib} of {self.free_memory_mib} MiB free memory"
            )
        return "; ".join(self.problems)

    def require(self) -> None:
        """Raise :class:`CapacityShortfall` when the VMs do not fit."""
        if not self.fits:
            raise CapacityShortfall(self.message)


def plan_vm_placement(
    host_capacity: HostLike, existing_vms: Iterable[VmRequest], request: LaunchRequest
) -> CapacityCheck:
    """Whether ``request`` fits on the host after the VMs already defined there.

    Defined VMs count whether running or not: a stopped VM can be started again and must still fit.
    """
    existing = list(existing_vms)
    free_cpus = host_capacity.cpus - sum(vm.cpus for vm in existing)
    free_mem = host_capacity.memory_mib - sum(vm.memory_mib for vm in existing)
    need_cpus = request.count * request.cpus
    need_mem = request.count * request.memory_mib
    vms = _plural(request.count, "VM")
    problems: list[str] = []
    if need_cpus > free_cpus:
        problems.append(
            f"{host_capacity.name} has {_plural(free_cpus, 'vCPU')} free, "
            f"{vms} x {_plural(request.cpus, 'vCPU')} need {_plural(need_cpus, 'vCPU')} "
            f"(short by {_plural(need_cpus - free_cpus, 'vCPU')})"
        )
    if need_mem > free_mem:
        problems.append(
            f"{host_capacity.name} has {free_mem} MiB memory free, {vms} x {request.memory_mib} MiB "
            f"need {need_mem} MiB (short by {need_mem - free_mem} MiB)"
        )
    return CapacityCheck(host_capacity.name, free_cpus, free_mem, need_cpus, need_mem, tuple(problems))


def place_in_group(
    policy: PlacementPolicy,
    group: str,
    vms: Sequence[VmRequest],
    nodes: Sequence[NodeCapacity],
) -> dict[str, str]:
    """``{vm: node}`` for a launch of ``vms`` over the (powered-on) ``nodes`` of ``group``.

    The policy's answer is checked like any other (:func:`check_placement`: an invalid one raises
    :class:`PlacementError`). No placement raises :class:`CapacityShortfall` naming what each node
    has free, how many of the VMs it would hold, and by how many VMs the group falls short.
    """
    pinned = [replace(vm, group=group) for vm in vms]
    mapping = _place_checked(policy, pinned, list(nodes))
    if mapping is not None:
        return mapping
    cpus = max(vm.cpus for vm in vms)
    memory = max(vm.memory_mib for vm in vms)
    room = {
        n.name: max(0, min(n.free_cpus // cpus, n.free_memory_mib // memory)) if cpus and memory else 0
        for n in nodes
    }
    free = ", ".join(
        f"{n.name} {_plural(n.free_cpus, 'vCPU')}/{n.free_memory_mib} MiB free (room for {room[n.name]})"
        for n in nodes
    )
    shape = f"{_plural(len(vms), 'VM')} x {_plural(cpus, 'vCPU')}/{memory} MiB"
    total = sum(room.values())
    if total < len(vms):
        raise CapacityShortfall(
            f"group {group} cannot take {shape}: {free}; short by {_plural(len(vms) - total, 'VM')}"
        )
    reason = getattr(policy, "last_reason", None)
    raise CapacityShortfall(
        f"placement policy {getattr(policy, 'name', type(policy).__name__)} found no placement "
        f"for {shape} in group {group} ({free}){f': {reason}' if reason else ''}"
    )
