"""BMC I/O: one power reading or action per node, each bounded by a per-BMC deadline.

Redfish BMCs are read on one event loop (one plain GET each, see :func:`redfish_power_states`), so a
cycle over hundreds of them costs about the slowest BMC; IPMI BMCs (one ipmitool process per call) and
libvirtds get a thread per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from rackflow.core.power import (
    PowerAction,
    PowerStatus,
    status_from_ipmi,
    status_from_redfish,
)
from rackflow.db.models import Host
from rackflow.hooks.ipmi import IpmiHook
from rackflow.hooks.redfish import RedfishHook, new_session

log = logging.getLogger(__name__)
T = TypeVar("T")


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

    async def poll() -> list[CallResult]:
        started = time.monotonic()
        async with new_session() as session:

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
