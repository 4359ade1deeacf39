"""Time one power planner cycle on a large synthetic fleet: 10,000 nodes, 100,000 reservations.

Run it as ``python bench/bench_power_planner.py [--nodes N] [--reservations M] [--cycles K] [--seed S]``.
It prints the planner's time per cycle, its ratio to the 1 s goal, and its ratio to a baseline measured
in the same run (one sort of the reservations by start, the least any cycle that is handed an unsorted
list must do), so numbers from different machines can be compared. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import TypeVar

from rackflow.core.placement import VmRequest
from rackflow.core.power import (
    NodeView,
    PowerAction,
    PowerMode,
    PowerStatus,
    PowerThresholds,
    Reservation,
    ReservationBook,
    plan_power,
)

GOAL_SECONDS = 1.0
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def make_reservations(count: int, groups: int, rng: random.Random) -> list[Reservation]:
    """Reservations over the 30 days before and 60 after now, 1-8 h long, 1-16 VMs each."""
    out = []
    span = 90 * 24 * 60
    for i in range(count):
        start = NOW + timedelta(minutes=rng.randrange(span) - 30 * 24 * 60)
        out.append(
            Reservation(
                id=f"r{i:06d}",
                start=start,
                end=start + timedelta(hours=rng.randint(1, 8)),
                vm_count=rng.randint(1, 16),
                vcpus_per_vm=rng.choice((1, 2, 4, 8)),
                memory_mib_per_vm=rng.choice((1024, 2048, 4096, 8192)),
                group=f"g{rng.randrange(groups):02d}" if rng.random() < 0.3 else None,
            )
        )
    return out


@dataclass
class _Draft:
    name: str
    group: str
    status: PowerStatus
    vms: list[VmRequest] = field(default_factory=list)
    cpu: int = 0
    mem: int = 0


def make_nodes(
    count: int, groups: int, reservations: list[Reservation], rng: random.Random
) -> list[NodeView]:
    """Nodes in ``groups`` groups; reservations running now have their VMs on nodes that are on."""
    cpus, mem = 32, 131072
    per_group: dict[str, list[_Draft]] = {}
    drafts = []
    for i in range(count):
        roll = rng.random()
        status = PowerStatus.ON if roll < 0.5 else PowerStatus.OFF if roll < 0.95 else PowerStatus.STOPPED
        draft = _Draft(f"node{i:05d}", f"g{i % groups:02d}", status)
        drafts.append(draft)
        per_group.setdefault(draft.group, []).append(draft)
    for r in reservations:
        if not r.start <= NOW < r.end:
            continue
        members = per_group[r.group or f"g{int(r.id[1:]) % groups:02d}"]
        for k in range(r.vm_count):
            for d in members:
                if d.cpu + r.vcpus_per_vm <= cpus and d.mem + r.memory_mib_per_vm <= mem:
                    d.cpu += r.vcpus_per_vm
                    d.mem += r.memory_mib_per_vm
                    d.status = PowerStatus.ON
                    d.vms.append(VmRequest(f"{r.id}#{k}", r.vcpus_per_vm, r.memory_mib_per_vm, r.id))
                    break
    return [
        NodeView(
            name=d.name,
            group=d.group,
            cpus=cpus,
            memory_mib=mem,
            mode=PowerMode.ON if d.status is PowerStatus.ON else PowerMode.OFF,
            status=d.status,
            status_since=NOW - timedelta(hours=1),
            vms_running=tuple(d.vms),
        )
        for d in drafts
    ]


T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int) -> tuple[list[float], T]:
    """Run ``fn`` ``repeat`` times; every duration and the last result."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--reservations", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    reservations = make_reservations(args.reservations, args.groups, rng)
    rng.shuffle(reservations)
    nodes = make_nodes(args.nodes, args.groups, reservations, rng)
    setup = time.perf_counter() - t0
    thresholds = PowerThresholds(off_threshold=timedelta(minutes=60), on_threshold=timedelta(minutes=30))

    base_times, _ = timed(lambda: sorted(reservations, key=attrgetter("start")), args.cycles)
    cycle_times, plan = timed(
        lambda: plan_power(nodes, reservations, now=NOW, thresholds=thresholds), args.cycles
    )
    book = ReservationBook(reservations)
    warm_times, _ = timed(lambda: plan_power(nodes, book, now=NOW, thresholds=thresholds), args.cycles)

    base, cycle, warm = (statistics.median(t) for t in (base_times, cycle_times, warm_times))
    on_count = sum(n.status is PowerStatus.ON for n in nodes)
    vm_count = sum(len(n.vms_running) for n in nodes)
    print(
        f"fleet: {len(nodes)} nodes ({on_count} on, {vm_count} VMs running), "
        f"{len(reservations)} reservations, {args.groups} groups; setup {setup:.2f} s"
    )
    print(
        f"plan: {len(plan.nodes(PowerAction.ON))} power on, {len(plan.nodes(PowerAction.OFF))} power off, "
        f"{len(plan.skipped)} skipped, {len(plan.unplaced_reservations)} unplaced"
    )
    print(f"baseline (one sort of the reservations): {base * 1000:8.1f} ms (median of {args.cycles})")
    for label, median, worst in (
        ("unsorted list", cycle, max(cycle_times)),
        ("prebuilt book", warm, max(warm_times)),
    ):
        print(
            f"planner cycle, {label}: {median * 1000:8.1f} ms = {median / GOAL_SECONDS:.3f} x the 1 s goal, "
            f"{median / base:.1f} x baseline (worst {worst * 1000:.1f} ms)"
        )
    verdict = "met" if cycle <= GOAL_SECONDS else "MISSED"
    slow = sum(t > GOAL_SECONDS for t in cycle_times)
    print(f"goal {verdict} (median, unsorted list); {slow} of {len(cycle_times)} cycles over 1 s")


if __name__ == "__main__":
    main()
