"""A small fleet of its own for the power tests, so powering nodes off never disturbs other tests.

Three nodes, each with a real libvirtd for its VMs and a real BMC over one "BMC plane" libvirtd whose
domains ``pw-a``/``pw-b``/``pw-c`` are the nodes' power:

- ``pw-a`` (group ``pw-g1``): Redfish, its own sushy-emulator (conn ``pw_redfish_a``)
- ``pw-b`` (group ``pw-g1``): Redfish, another sushy-emulator (conn ``pw_redfish_b``) — tests stop it
- ``pw-c`` (group ``pw-g2``): IPMI, virtualbmc (conn ``pw_ipmi_c``)

The inventory is a SQLite DB of its own (``url``), migrated and synced from the fleet below.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rackflow.core.fleet import BmcSpec, Fleet, HostSpec
from rackflow_devfleet.fleet import TEST_DOMAIN_XML, _reset_domains, conn_env_name
from rackflow_devfleet.servers import LOOPBACK, Libvirtd, RedfishEmulator, VirtualBmc

NODES = ("pw-a", "pw-b", "pw-c")
GROUPS = {"pw-a": "pw-g1", "pw-b": "pw-g1", "pw-c": "pw-g2"}
REDFISH_CONN = {"pw-a": "pw_redfish_a", "pw-b": "pw_redfish_b"}
IPMI_CONN = "pw_ipmi_c"


def power_fleet_spec() -> Fleet:
    hosts = []
    for name in NODES:
        bmc = (
            BmcSpec(kind="redfish", conn_id=REDFISH_CONN[name])
            if name in REDFISH_CONN
            else BmcSpec(kind="ipmi", conn_id=IPMI_CONN)
        )
        hosts.append(
            HostSpec(
                name=name,
                group=GROUPS[name],
                cpus=8,
                memory_mib=4096,
                libvirt_conn_id=f"pw_libvirt_{name[-1]}",
                bmc=bmc,
            )
        )
    return Fleet(hosts=hosts)


@dataclass
class PowerFleet:
    workdir: Path
    fleet: Fleet = field(default_factory=power_fleet_spec)
    hosts: dict[str, Libvirtd] = field(default_factory=dict)
    plane: Libvirtd | None = None
    redfish: dict[str, RedfishEmulator] = field(default_factory=dict)
    vbmc: VirtualBmc | None = None
    url: str = ""

    def start(self) -> PowerFleet:
        try:
            for name in NODES:
                self.hosts[name] = Libvirtd(workdir=self.workdir / f"libvirt-{name}").start()
                _reset_domains(self.hosts[name], [])
            self.plane = Libvirtd(workdir=self.workdir / "plane").start()
            _reset_domains(self.plane, list(NODES), vcpus=1, memory_mib=64)
            for name in REDFISH_CONN:
                self.redfish[name] = RedfishEmulator(
                    workdir=self.workdir / f"redfish-{name}", libvirt_uri=self.plane.uri
                ).start()
            self.vbmc = VirtualBmc(workdir=self.workdir / "vbmc", libvirt_uri=self.plane.uri).start()
            self.vbmc.add("pw-c")
        except BaseException:
            self.stop()
            raise
        os.environ.update(self.env())
        self.url = f"sqlite:///{self.workdir / 'power.db'}"
        from rackflow.db.inventory import sync_fleet
        from rackflow.db.session import session_scope, upgrade

        upgrade(self.url)
        with session_scope(self.url) as session:
            sync_fleet(session, self.fleet)
        return self

    def env(self) -> dict[str, str]:
        conns: dict[str, dict[str, object]] = {}
        for name, server in self.hosts.items():
            conns[f"pw_libvirt_{name[-1]}"] = {"conn_type": "libvirt", "host": server.uri}
        for name, emulator in self.redfish.items():
            conns[REDFISH_CONN[name]] = {
                "conn_type": "redfish",
                "host": LOOPBACK,
                "port": emulator.port,
                "login": emulator.username,
                "password": emulator.password,
                "schema": "http",
            }
        if self.vbmc is not None:
            conns[IPMI_CONN] = self.vbmc.connection("pw-c")
        return {conn_env_name(cid): json.dumps(c) for cid, c in conns.items()}

    def stop(self) -> None:
        servers = [*self.hosts.values(), self.plane, *self.redfish.values(), self.vbmc]
        for server in reversed([s for s in servers if s is not None]):
            with contextlib.suppress(Exception):
                server.stop()

    # --- helpers for tests -----------------------------------------------------------------------

    def powered(self, node: str) -> bool:
        """Whether the node's power domain on the BMC plane runs (the ground truth behind the BMCs)."""
        assert self.plane is not None
        return bool(self.plane.keeper.lookupByName(node).isActive())  # type: ignore[attr-defined]

    def set_powered(self, node: str, on: bool) -> None:
        assert self.plane is not None
        dom = self.plane.keeper.lookupByName(node)  # type: ignore[attr-defined]
        if on and not dom.isActive():
            dom.create()
        if not on and dom.isActive():
            dom.destroy()

    def vms(self, node: str) -> list[str]:
        conn = self.hosts[node].keeper
        return sorted(d.name() for d in conn.listAllDomains())  # type: ignore[attr-defined]

    def add_vm(self, node: str, name: str, *, vcpus: int = 2, memory_mib: int = 512) -> None:
        conn = self.hosts[node].keeper
        xml = TEST_DOMAIN_XML.format(name=name, memory_kib=memory_mib * 1024, vcpus=vcpus)
        conn.defineXML(xml).create()  # type: ignore[attr-defined]

    def reset(self) -> None:
        """Every node powered on with no VMs, inventory mode on / status unknown, no history."""
        from sqlalchemy import delete, update

        from rackflow.db.models import Host, HostTransition, Reservation
        from rackflow.db.session import session_scope

        for name in NODES:
            _reset_domains(self.hosts[name], [])
            self.set_powered(name, True)
        with session_scope(self.url) as session:
            session.execute(delete(HostTransition))
            session.execute(delete(Reservation))
            blank = {"status": None, "status_since": None, "last_seen": None, "last_error": None}
            session.execute(update(Host).values(mode="on", **blank))
