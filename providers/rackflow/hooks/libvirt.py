"""Talk to one physical host's hypervisor through libvirt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libvirt
from airflow.sdk import BaseHook

# virDomainState -> rackflow's word for it.
DOMAIN_STATES: dict[int, str] = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: str
    vcpus: int
    memory_mib: int


@dataclass(frozen=True)
class HostInfo:
    cpus: int
    memory_mib: int


class LibvirtHook(BaseHook):
    """
    Interact with a libvirt hypervisor (one physical host).

    The connection's host field holds the libvirt URI, e.g. ``qemu+ssh://root@host-a/system``.

    :param libvirt_conn_id: Airflow connection holding the libvirt URI.
    """

    conn_name_attr = "libvirt_conn_id"
    default_conn_name = "libvirt_default"
    conn_type = "libvirt"
    hook_name = "libvirt"

    def __init__(self, libvirt_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.libvirt_conn_id = libvirt_conn_id
        self._conn: libvirt.virConnect | None = None

    @property
    def uri(self) -> str:
        uri = self.get_connection(self.libvirt_conn_id).host
        if not uri:
            raise ValueError(f"connection {self.libvirt_conn_id!r} has no libvirt URI in its host field")
        return uri

    def get_conn(self) -> libvirt.virConnect:
        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> LibvirtHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host_info(self) -> HostInfo:
        _model, memory_mib, cpus, *_ = self.get_conn().getInfo()
        return HostInfo(cpus=cpus, memory_mib=memory_mib)

    def list_domains(self) -> list[DomainInfo]:
        domains = []
        for dom in self.get_conn().listAllDomains():
            state, _max_mem, mem_kib, vcpus, _cpu_time = dom.info()
            domains.append(
                DomainInfo(
                    name=dom.name(),
                    uuid=dom.UUIDString(),
                    state=DOMAIN_STATES.get(state, "unknown"),
                    vcpus=vcpus,
                    memory_mib=mem_kib // 1024,
                )
            )
        return sorted(domains, key=lambda d: d.name)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "login", "password", "extra"],
            "relabeling": {"host": "libvirt URI"},
            "placeholders": {"host": "qemu+ssh://root@host-a/system"},
        }
