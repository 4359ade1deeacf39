"""Talk to one physical host's hypervisor through libvirt.

One :class:`LibvirtHook` per host connection. It lists domains (state, vCPUs, memory, image, disks,
addresses), reports the host's capacity and what its defined VMs take, defines and starts a domain from
an image by cloning the image's volume (never sharing it), destroys/undefines, and migrates a domain to
another host (live where the driver can, else cold: define on the target, undefine on the source).

Connections can come from a :class:`LibvirtConnectionPool` shared by many hooks (the API server keeps
one per process); without a pool the hook owns its connection and :meth:`LibvirtHook.close` closes it.
A host that cannot be reached raises :class:`LibvirtUnreachable` carrying libvirt's error.
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

import libvirt
from airflow.sdk import BaseHook

from rackflow.hooks.connection_forms import ui_field_behaviour

# libvirt prints every error to stderr by default; rackflow reports them through exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

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
MISSING = "missing"  # the state of a name that is not defined on the host

# rackflow's domain metadata: which launch created the VM, from which image, with which volumes.
METADATA_NS = "https://rackflow.dev/xmlns/vm/1"
METADATA_PREFIX = "rackflow"
DEFAULT_POOL = "default-pool"

# Errors that mean "this driver cannot do that" (e.g. live migration on the test driver).
_UNSUPPORTED = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
}


class LibvirtUnreachable(ConnectionError):
    """The host's libvirt daemon cannot be reached; the message carries libvirt's error."""


@dataclass(frozen=True)
class DomainInfo:
    """A VM as rackflow shows it. ``launch`` is the launch tag of the run that created it, if any."""

    name: str
    uuid: str
    state: str
    vcpus: int
    memory_mib: int
    image: str | None = None
    disks: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    launch: str | None = None
    volumes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["disks"] = list(self.disks)
        data["addresses"] = list(self.addresses)
        data["volumes"] = list(self.volumes)
        return data


@dataclass(frozen=True)
class HostInfo:
    cpus: int
    memory_mib: int


@dataclass(frozen=True)
class HostCapacity:
    """Capacity of a host and what its defined VMs (running or not) take of it."""

    cpus: int
    memory_mib: int
    used_cpus: int
    used_memory_mib: int

    @property
    def free_cpus(self) -> int:
        return self.cpus - self.used_cpus

    @property
    def free_memory_mib(self) -> int:
        return self.memory_mib - self.used_memory_mib


@dataclass(frozen=True)
class DomainSpec:
    """What to define: a VM with one disk, optional network, tagged with rackflow metadata.

    ``domain_type`` None picks from the driver (``test`` for the test driver, ``kvm`` for QEMU);
    pass ``qemu`` for TCG. ``serial_log`` sends the first serial port to a file on the host.
    """

    name: str
    vcpus: int
    memory_mib: int
    disk_path: str | None = None
    disk_format: str = "qcow2"
    network: str | None = None
    domain_type: str | None = None
    serial_log: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_xml(self, domain_type: str) -> str:
        dom = ET.Element("domain", type=domain_type)
        ET.SubElement(dom, "name").text = self.name
        if self.metadata:
            meta = ET.SubElement(dom, "metadata")
            ET.SubElement(meta, f"{{{METADATA_NS}}}vm", {k: v for k, v in self.metadata.items()})
        ET.SubElement(dom, "memory", unit="MiB").text = str(self.memory_mib)
        ET.SubElement(dom, "vcpu").text = str(self.vcpus)
        os_el = ET.SubElement(dom, "os")
        ET.SubElement(os_el, "type").text = "hvm"
        ET.SubElement(os_el, "boot", dev="hd")
        devices = ET.SubElement(dom, "devices")
        if self.disk_path:
            disk = ET.SubElement(devices, "disk", type="file", device="disk")
            ET.SubElement(disk, "driver", name="qemu", type=self.disk_format)
            ET.SubElement(disk, "source", file=self.disk_path)
            ET.SubElement(disk, "target", dev="vda", bus="virtio")
        if self.network:
            iface = ET.SubElement(devices, "interface", type="network")
            ET.SubElement(iface, "source", network=self.network)
        if self.serial_log:
            serial = ET.SubElement(devices, "serial", type="file")
            ET.SubElement(serial, "source", path=self.serial_log)
            ET.SubElement(serial, "target", port="0")
        ET.register_namespace(METADATA_PREFIX, METADATA_NS)
        return ET.tostring(dom, encoding="unicode")


class LibvirtConnectionPool:
    """Open libvirt connections by URI, reused across hooks and threads, reopened when dead.

    libvirt connections are thread-safe, so one per URI serves every thread of the process.
    """

    def __init__(self) -> None:
        self._conns: dict[str, libvirt.virConnect] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, uri: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uri, threading.Lock())

    def get(self, uri: str) -> libvirt.virConnect:
        with self._lock(uri):
            conn = self._conns.get(uri)
            if conn is not None and _alive(conn):
                return conn
            if conn is not None:
                _close_quietly(conn)
            conn = _open(uri)
            self._conns[uri] = conn
            return conn

    def peek(self, uri: str) -> libvirt.virConnect | None:
        """The pooled connection to ``uri`` without opening one."""
        return self._conns.get(uri)

    def discard(self, uri: str) -> None:
        """Forget (and close) the connection to ``uri``, e.g. after an error that killed it."""
        with self._lock(uri):
            conn = self._conns.pop(uri, None)
        if conn is not None:
            _close_quietly(conn)

    def close_all(self) -> None:
        with self._guard:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            _close_quietly(conn)

    def __len__(self) -> int:
        return len(self._conns)


def _open(uri: str) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise LibvirtUnreachable(f"cannot connect to {uri}: {err.get_error_message() or err}") from err


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _meta_attrs(root: ET.Element) -> dict[str, str]:
    found = root.find(f"metadata/{{{METADATA_NS}}}vm")
    return dict(found.attrib) if found is not None else {}


def parse_domain_xml(xml: str, state: str, addresses: Iterable[str] = ()) -> DomainInfo:
    """A :class:`DomainInfo` from a domain's XML (one RPC per domain instead of several)."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    mem_kib = _kib(int(memory.text or 0), memory.get("unit", "KiB")) if memory is not None else 0
    vcpu = root.find("vcpu")
    disks = tuple(
        src.get("file") or src.get("volume") or src.get("name") or ""
        for src in root.iterfind("devices/disk[@device='disk']/source")
    )
    meta = _meta_attrs(root)
    image = meta.get("image") or (PurePosixPath(disks[0]).name if disks and disks[0] else None)
    volumes = tuple(v for v in meta.get("volumes", "").split(",") if v)
    return DomainInfo(
        name=root.findtext("name") or "",
        uuid=root.findtext("uuid") or "",
        state=state,
        vcpus=int(vcpu.text or 0) if vcpu is not None else 0,
        memory_mib=mem_kib // 1024,
        image=image,
        disks=disks,
        addresses=tuple(addresses),
        launch=meta.get("launch"),
        volumes=volumes,
    )


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024}
_UNITS |= {"mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024}


def _kib(value: int, unit: str) -> int:
    return int(value * _UNITS.get(unit.lower(), 1))


class LibvirtHook(BaseHook):
    """
    Interact with a libvirt hypervisor (one physical host).

    The connection's host field holds the libvirt URI, e.g. ``qemu+ssh://root@host-a/system``.

    :param libvirt_conn_id: Airflow connection holding the libvirt URI.
    :param uri: a libvirt URI to use instead of looking up the connection (tools, benchmarks).
    :param pool: share connections through this pool; the pool, not the hook, closes them.
    """

    conn_name_attr = "libvirt_conn_id"
    default_conn_name = "libvirt_default"
    conn_type = "libvirt"
    hook_name = "libvirt"

    def __init__(
        self,
        libvirt_conn_id: str = default_conn_name,
        *,
        uri: str | None = None,
        pool: LibvirtConnectionPool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.libvirt_conn_id = libvirt_conn_id
        self._uri = uri
        self.pool = pool
        self._conn: libvirt.virConnect | None = None

    @property
    def uri(self) -> str:
        if self._uri is None:
            uri = self.get_connection(self.libvirt_conn_id).host
            if not uri:
                raise ValueError(f"connection {self.libvirt_conn_id!r} has no libvirt URI in its host field")
            self._uri = uri
        return self._uri

    def get_conn(self) -> libvirt.virConnect:
        if self.pool is not None:
            return self.pool.get(self.uri)
        if self._conn is None or not _alive(self._conn):
            self._conn = _open(self.uri)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                _close_quietly(self._conn)
            finally:
                self._conn = None

    def __enter__(self) -> LibvirtHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """A libvirt error on a dropped connection becomes :class:`LibvirtUnreachable` (and the
        connection is forgotten, so the next call reconnects); other errors pass unchanged."""
        try:
            yield
        except libvirt.libvirtError as err:
            conn = self._conn if self.pool is None else self.pool.peek(self.uri)
            if conn is not None and not _alive(conn):
                if self.pool is not None:
                    self.pool.discard(self.uri)
                else:
                    self.close()
                raise LibvirtUnreachable(f"{self.uri}: {err.get_error_message() or err}") from err
            raise

    # --- reading ----------------------------------------------------------------------------------

    def host_info(self) -> HostInfo:
        with self._errors():
            _model, memory_mib, cpus, *_ = self.get_conn().getInfo()
        return HostInfo(cpus=cpus, memory_mib=memory_mib)

    def list_domains(self, *, addresses: bool = True) -> list[DomainInfo]:
        """Every defined domain, sorted by name; ``addresses`` asks running ones for their IPs."""
        with self._errors():
            conn = self.get_conn()
            states = _states(conn)
            domains = []
            for dom in conn.listAllDomains():
                state = states.get(dom.UUIDString()) or DOMAIN_STATES.get(dom.state()[0], "unknown")
                xml = dom.XMLDesc(0)
                addrs = _addresses(dom) if addresses and state == "running" and "<interface" in xml else ()
                domains.append(parse_domain_xml(xml, state, addrs))
        return sorted(domains, key=lambda d: d.name)

    def domain(self, name: str, *, addresses: bool = True) -> DomainInfo | None:
        with self._errors():
            dom = self._lookup(name)
            if dom is None:
                return None
            state = DOMAIN_STATES.get(dom.state()[0], "unknown")
            xml = dom.XMLDesc(0)
            addrs = _addresses(dom) if addresses and state == "running" and "<interface" in xml else ()
            return parse_domain_xml(xml, state, addrs)

    def domain_states(self, names: Iterable[str]) -> dict[str, str]:
        """State per name, ``missing`` for names not defined here."""
        wanted = list(names)
        with self._errors():
            conn = self.get_conn()
            found = {
                dom.name(): DOMAIN_STATES.get(dom.state()[0], "unknown") for dom in conn.listAllDomains()
            }
        return {name: found.get(name, MISSING) for name in wanted}

    def capacity(self, *, cpus: int | None = None, memory_mib: int | None = None) -> HostCapacity:
        """Capacity (from the inventory when given, else the hypervisor) and what defined VMs take."""
        if cpus is None or memory_mib is None:
            info = self.host_info()
            cpus = info.cpus if cpus is None else cpus
            memory_mib = info.memory_mib if memory_mib is None else memory_mib
        domains = self.list_domains(addresses=False)
        return HostCapacity(
            cpus=cpus,
            memory_mib=memory_mib,
            used_cpus=sum(d.vcpus for d in domains),
            used_memory_mib=sum(d.memory_mib for d in domains),
        )

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.get_conn().lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    # --- creating ---------------------------------------------------------------------------------

    def driver_domain_type(self) -> str:
        """The ``<domain type>`` this driver runs by default: ``test`` or ``kvm`` (QEMU)."""
        with self._errors():
            driver = self.get_conn().getType().lower()
        return "test" if driver == "test" else "kvm" if driver == "qemu" else driver

    def define_domain(self, spec: DomainSpec) -> DomainInfo:
        """Define (not start) ``spec``; fails if the name is taken."""
        domain_type = spec.domain_type or self.driver_domain_type()
        with self._errors():
            dom = self.get_conn().defineXML(spec.to_xml(domain_type))
            return parse_domain_xml(dom.XMLDesc(0), DOMAIN_STATES.get(dom.state()[0], "unknown"))

    def clone_volume(self, image: str, volume: str, *, pool: str = DEFAULT_POOL) -> tuple[str, str]:
        """Copy volume ``image`` of ``pool`` to a new volume ``volume`` (kept if it exists).

        Returns ``(path, format)`` of the clone. A clone is a full copy: VMs never share a disk.
        """
        with self._errors():
            storage = self.get_conn().storagePoolLookupByName(pool)
            try:
                base = storage.storageVolLookupByName(image)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    have = sorted(storage.listVolumes())
                    raise ValueError(
                        f"image {image!r} is not a volume of pool {pool!r} on {self.uri}; have {have}"
                    ) from err
                raise
            base_xml = ET.fromstring(base.XMLDesc(0))
            fmt_el = base_xml.find("target/format")
            fmt = fmt_el.get("type", "raw") if fmt_el is not None else "raw"
            with contextlib.suppress(libvirt.libvirtError):
                existing = storage.storageVolLookupByName(volume)
                return existing.path(), fmt
            cap_el = base_xml.find("capacity")
            capacity = cap_el.text if cap_el is not None and cap_el.text else "0"
            unit = cap_el.get("unit", "bytes") if cap_el is not None else "bytes"
            vol = ET.Element("volume")
            ET.SubElement(vol, "name").text = volume
            ET.SubElement(vol, "capacity", unit=unit).text = capacity
            ET.SubElement(ET.SubElement(vol, "target"), "format", type=fmt)
            clone = storage.createXMLFrom(ET.tostring(vol, encoding="unicode"), base, 0)
            return clone.path(), fmt

    def start_domain(self, name: str) -> None:
        """Start ``name`` unless it is already active."""
        with self._errors():
            dom = self._lookup(name)
            if dom is None:
                raise KeyError(f"no domain {name!r} on {self.uri}")
            if not dom.isActive():
                dom.create()

    def launch_from_image(
        self,
        spec: DomainSpec,
        *,
        image: str | None,
        pool: str = DEFAULT_POOL,
    ) -> DomainInfo:
        """Define ``spec`` with a fresh clone of ``image`` as its disk, then start it.

        Idempotent per name: a domain already defined with this name keeps its definition; a missing
        clone is made; a stopped domain is started. The domain is defined before its disk is cloned so
        that an interrupted launch always leaves a tagged domain the retry finds (and a rollback removes).
        """
        volume = None
        if image:
            volume = f"{spec.name}{PurePosixPath(image).suffix or '.img'}"
        with self._errors():
            dom = self._lookup(spec.name)
        if dom is None:
            meta = dict(spec.metadata)
            if image:
                meta.setdefault("image", image)
                meta["volumes"] = f"{pool}/{volume}"
            path, fmt = spec.disk_path, spec.disk_format
            if image and volume:
                with self._errors():
                    storage = self.get_conn().storagePoolLookupByName(pool)
                    target = storage.XMLDesc(0)
                root = ET.fromstring(target).findtext("target/path") or ""
                path = f"{root.rstrip('/')}/{volume}"
                fmt = _format_of(image)
            self.define_domain(
                DomainSpec(
                    name=spec.name,
                    vcpus=spec.vcpus,
                    memory_mib=spec.memory_mib,
                    disk_path=path,
                    disk_format=fmt,
                    network=spec.network,
                    domain_type=spec.domain_type,
                    serial_log=spec.serial_log,
                    metadata=meta,
                )
            )
        if image and volume:
            self.clone_volume(image, volume, pool=pool)
        self.start_domain(spec.name)
        info = self.domain(spec.name, addresses=False)
        assert info is not None
        return info

    # --- removing ---------------------------------------------------------------------------------

    def destroy_domain(self, name: str, *, delete_volumes: bool = True) -> bool:
        """Power off and undefine ``name`` and delete the volumes rackflow cloned for it.

        Returns False when there was no such domain (already gone: nothing to do).
        """
        with self._errors():
            dom = self._lookup(name)
            if dom is None:
                return False
            info = parse_domain_xml(dom.XMLDesc(0), "unknown")
            if dom.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
            flags = (
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            )
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError:
                dom.undefine()  # drivers without those flags (the test driver): plain undefine
            if delete_volumes:
                for ref in info.volumes:
                    self._delete_volume(ref)
        return True

    def _delete_volume(self, ref: str) -> None:
        pool_name, _, volume = ref.partition("/")
        try:
            self.get_conn().storagePoolLookupByName(pool_name).storageVolLookupByName(volume).delete(0)
        except libvirt.libvirtError as err:
            if err.get_error_code() not in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL):
                raise

    def domains_of_launch(self, launch: str) -> list[DomainInfo]:
        return [d for d in self.list_domains(addresses=False) if d.launch == launch]

    # --- migrating --------------------------------------------------------------------------------

    def migrate(
        self,
        name: str,
        target: LibvirtHook,
        *,
        live: bool = True,
        shutdown_timeout: float = 60,
    ) -> str:
        """Move domain ``name`` to ``target``'s host; returns ``"live"`` or ``"cold"``.

        Live migration (persistent on the target, undefined on the source) is tried first when ``live``
        and the domain runs. Where the driver cannot migrate (the test driver, different hypervisor
        versions) the domain is moved cold: its definition is defined on the target, the source is shut
        down (gracefully for up to ``shutdown_timeout`` s, then powered off) and undefined, and the target
        is started if the source was running. Disks are expected on storage both hosts reach (the same
        paths); the caller (placement) has already checked the target's capacity.
        """
        with self._errors():
            dom = self._lookup(name)
            if dom is None:
                raise KeyError(f"no domain {name!r} on {self.uri}")
            was_running = bool(dom.isActive())
            if live and was_running:
                flags = (
                    libvirt.VIR_MIGRATE_LIVE
                    | libvirt.VIR_MIGRATE_PERSIST_DEST
                    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
                )
                try:
                    dom.migrate(target.get_conn(), flags, None, None, 0)
                    return "live"
                except libvirt.libvirtError as err:
                    if err.get_error_code() not in _UNSUPPORTED:
                        raise
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        if target.domain(name, addresses=False) is not None:
            raise ValueError(f"{target.uri} already has a domain named {name!r}")
        with target._errors():
            new = target.get_conn().defineXML(xml)
        try:
            if was_running:
                self._shutdown(dom, shutdown_timeout)
            if was_running:
                with target._errors():
                    new.create()
        except BaseException:
            with contextlib.suppress(Exception):
                new.undefine()
            if was_running and not dom.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    dom.create()
            raise
        with self._errors():
            dom.undefine()
        return "cold"

    def _shutdown(self, dom: libvirt.virDomain, timeout: float) -> None:
        with self._errors():
            try:
                dom.shutdown()
            except libvirt.libvirtError as err:
                if err.get_error_code() not in _UNSUPPORTED:
                    raise
            deadline = time.monotonic() + timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if dom.isActive():
                dom.destroy()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour(cls.conn_type)


def _format_of(image: str) -> str:
    suffix = PurePosixPath(image).suffix.lower().lstrip(".")
    return suffix if suffix in {"qcow2", "raw", "vmdk", "vdi"} else "raw"


def _states(conn: libvirt.virConnect) -> dict[str, str]:
    """State of every domain in one RPC (uuid -> state); empty where the driver lacks the call."""
    try:
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() in _UNSUPPORTED:
            return {}
        raise
    return {dom.UUIDString(): DOMAIN_STATES.get(s.get("state.state", 0), "unknown") for dom, s in stats}


def _addresses(dom: libvirt.virDomain) -> tuple[str, ...]:
    """IPv4/IPv6 addresses the hypervisor knows from DHCP leases (empty where it knows none)."""
    try:
        ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    except libvirt.libvirtError:
        return ()
    return tuple(addr["addr"] for iface in (ifaces or {}).values() for addr in iface.get("addrs") or [])
