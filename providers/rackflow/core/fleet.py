"""The fleet file: which physical hosts exist, where they sit and how to reach them.

A fleet file is YAML. It names each physical host, its network group (hosts in one group are
network-near), its allocatable capacity, and the Airflow connections that reach its hypervisor
(libvirt) and its BMC (Redfish or IPMI). Connections keep the addresses and secrets out of the file,
so the same file serves a real fleet, the demo and the tests.

The optional ``devfleet`` section says which loopback servers ``make demo`` and the tests start to
stand in for real hardware; a real fleet leaves it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class FleetError(ValueError):
    """The fleet file cannot be used; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BmcSpec(_Strict):
    kind: Literal["redfish", "ipmi"]
    conn_id: str = Field(description="Airflow connection holding the BMC address and credentials.")
    system: str | None = Field(
        default=None, description="Redfish system id or name; defaults to the host name."
    )


class HostSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    group: str = Field(description="Network group (rack, switch): VMs of one cluster stay in one group.")
    rack: str | None = None
    cpus: int = Field(gt=0, description="vCPUs the host may give to VMs.")
    memory_mib: int = Field(gt=0, description="Memory the host may give to VMs, in MiB.")
    libvirt_conn_id: str
    bmc: BmcSpec | None = None


class DevFleetSpec(_Strict):
    """Loopback stand-ins for real hardware; ports are the demo's, tests pick free ones."""

    libvirt_ports: dict[str, int] = Field(
        default_factory=dict, description="Host name -> TCP port of its own libvirtd (test driver)."
    )
    bmc_plane_port: int | None = Field(
        default=None, description="libvirtd whose domains stand for the hosts' power (behind the BMCs)."
    )
    redfish_port: int | None = None
    ssh_port: int | None = None
    s3_port: int | None = None
    s3_buckets: list[str] = Field(default_factory=list)
    slurm_port: int | None = None
    vms: dict[str, list[str]] = Field(
        default_factory=dict, description="Host name -> VMs defined and running when the fleet starts."
    )


class Fleet(_Strict):
    hosts: list[HostSpec]
    devfleet: DevFleetSpec | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Fleet:
        seen: set[str] = set()
        for host in self.hosts:
            if host.name in seen:
                raise ValueError(f"host {host.name!r} is listed twice")
            seen.add(host.name)
        if self.devfleet:
            unknown = (set(self.devfleet.libvirt_ports) | set(self.devfleet.vms)) - seen
            if unknown:
                raise ValueError(f"devfleet names hosts that are not in the fleet: {sorted(unknown)}")
        return self

    def host(self, name: str) -> HostSpec:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host named {name!r} in the fleet")

    @classmethod
    def load(cls, path: str | Path) -> Fleet:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise FleetError(f"{path}: cannot read fleet file: {err}") from err
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
            )
            raise FleetError(f"{path}: invalid fleet file: {problems}") from err
