"""The server layout: every physical host of the inventory with its capacity, power and VMs.

Built from the rackflow inventory (group, capacity, power fields) plus one libvirt listing per host,
asked in parallel over pooled connections. A host whose libvirt cannot be reached (or does not answer
within ``host_timeout``) is reported ``unreachable`` with the error; the other hosts are unaffected.
Used by the ``/rackflow/api/hosts`` routes and by ``bench/bench_layout.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rackflow.hooks.libvirt import DomainInfo, LibvirtConnectionPool, LibvirtHook

REACHABLE = "ok"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HostRecord:
    """What the layout needs from an inventory row (``rackflow.db.models.Host``)."""

    name: str
    group: str
    rack: str | None
    cpus: int
    memory_mib: int
    libvirt_conn_id: str
    mode: str | None = None
    status: str | None = None
    status_since: datetime | None = None
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> HostRecord:
        return cls(
            name=row.name,
            group=row.group,
            rack=row.rack,
            cpus=row.cpus,
            memory_mib=row.memory_mib,
            libvirt_conn_id=row.libvirt_conn_id,
            mode=row.mode,
            status=row.status,
            status_since=row.status_since,
            last_error=row.last_error,
        )


def inventory_hosts(group: str | None = None, database_url: str | None = None) -> list[HostRecord]:
    """Hosts of the inventory (optionally one group), by group then name."""
    from sqlalchemy import select

    from rackflow.db.models import Host
    from rackflow.db.session import session_scope

    query = select(Host).order_by(Host.group, Host.name)
    if group:
        query = query.where(Host.group == group)
    with session_scope(database_url) as session:
        return [HostRecord.from_row(row) for row in session.scalars(query)]


def _vm_json(vm: DomainInfo, detail: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": vm.name,
        "state": vm.state,
        "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib,
        "image": vm.image,
        "addresses": list(vm.addresses),
        "launch": vm.launch,
    }
    if detail:
        data |= {"uuid": vm.uuid, "disks": list(vm.disks), "volumes": list(vm.volumes)}
    return data


def host_json(
    host: HostRecord, vms: Sequence[DomainInfo] | None, error: str | None, *, detail: bool = False
) -> dict[str, Any]:
    """One host of the layout. ``vms`` None means the hypervisor could not be asked (``error`` says why)."""
    used_cpus = sum(vm.vcpus for vm in vms or ())
    used_mem = sum(vm.memory_mib for vm in vms or ())
    return {
        "name": host.name,
        "group": host.group,
        "rack": host.rack,
        "cpus": host.cpus,
        "memory_mib": host.memory_mib,
        # Power, as the power engine keeps it in the inventory (None until first polled).
        "mode": host.mode,
        "status": host.status,
        "status_since": host.status_since.isoformat() if host.status_since else None,
        "last_error": host.last_error,
        # The hypervisor, as asked just now.
        "hypervisor": REACHABLE if vms is not None else UNREACHABLE,
        "hypervisor_error": error,
        "used_cpus": used_cpus if vms is not None else None,
        "used_memory_mib": used_mem if vms is not None else None,
        "free_cpus": host.cpus - used_cpus if vms is not None else None,
        "free_memory_mib": host.memory_mib - used_mem if vms is not None else None,
        "vm_count": len(vms) if vms is not None else None,
        "running_vms": sum(vm.state == "running" for vm in vms) if vms is not None else None,
        "vms": [_vm_json(vm, detail) for vm in vms] if vms is not None else [],
    }


class LayoutService:
    """Builds layouts; keeps libvirt connections and resolved URIs between calls.

    :param pool: connections shared across calls (one per host URI).
    :param resolve_uri: conn_id -> libvirt URI (default: the Airflow connection's host field).
    :param max_workers: hosts asked at once.
    :param host_timeout: seconds a host may take before it is reported unreachable.
    :param uri_ttl: seconds a resolved URI is reused before the connection is looked up again.
    """

    def __init__(
        self,
        *,
        pool: LibvirtConnectionPool | None = None,
        resolve_uri: Callable[[str], str] | None = None,
        max_workers: int = 16,
        host_timeout: float = 5.0,
        uri_ttl: float = 60.0,
    ) -> None:
        self.pool = pool or LibvirtConnectionPool()
        self._resolve = resolve_uri or (lambda conn_id: LibvirtHook(conn_id).uri)
        self.host_timeout = host_timeout
        self.uri_ttl = uri_ttl
        self._uris: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rackflow-layout")

    def uri(self, conn_id: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._uris.get(conn_id)
        if cached and now - cached[1] < self.uri_ttl:
            return cached[0]
        uri = self._resolve(conn_id)
        with self._lock:
            self._uris[conn_id] = (uri, now)
        return uri

    def forget_uris(self) -> None:
        with self._lock:
            self._uris.clear()

    def _ask(self, host: HostRecord, addresses: bool) -> list[DomainInfo]:
        hook = LibvirtHook(host.libvirt_conn_id, uri=self.uri(host.libvirt_conn_id), pool=self.pool)
        return hook.list_domains(addresses=addresses)

    def build(
        self, hosts: Iterable[HostRecord], *, addresses: bool = True, detail: bool = False
    ) -> list[dict[str, Any]]:
        """Layout JSON of ``hosts`` in their order; unreachable hosts say why."""
        hosts = list(hosts)
        futures = [self._executor.submit(self._ask, h, addresses) for h in hosts]
        deadline = time.monotonic() + self.host_timeout
        result = []
        for host, future in zip(hosts, futures, strict=True):
            try:
                vms = future.result(timeout=max(0.0, deadline - time.monotonic()))
                result.append(host_json(host, vms, None, detail=detail))
            except FutureTimeout:
                error = f"no answer from libvirt within {self.host_timeout:g} s"
                result.append(host_json(host, None, error, detail=detail))
            except Exception as err:
                result.append(host_json(host, None, str(err) or type(err).__name__, detail=detail))
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close_all()


def layout_summary(hosts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals over a layout (for the page header)."""
    reachable = [h for h in hosts if h["hypervisor"] == REACHABLE]
    return {
        "hosts": len(hosts),
        "unreachable": len(hosts) - len(reachable),
        "vms": sum(h["vm_count"] for h in reachable),
        "running_vms": sum(h["running_vms"] for h in reachable),
        "groups": sorted({h["group"] for h in hosts}),
    }
