"""Start a whole loopback fleet from a fleet file's ``devfleet`` section.

``DevFleet.start()`` brings up one libvirtd per fake physical host, a "BMC plane" libvirtd whose
domains stand for the hosts' power (the Redfish emulator and virtual IPMI BMCs drive them), Slurm,
sshd and SeaweedFS, then hands back the Airflow connections that reach them as ``AIRFLOW_CONN_*``
environment variables. The demo uses the ports in the file; tests pass ``free_ports=True``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rackflow.core.fleet import Fleet
from rackflow_devfleet.servers import (
    LOOPBACK,
    Libvirtd,
    RedfishEmulator,
    SeaweedS3,
    Server,
    Slurm,
    Sshd,
)

SSH_CONN_ID = "ssh_fleet"
S3_CONN_ID = "aws_fleet_s3"
# Unix accounts batch jobs run as: one per demo/test login that may submit jobs ([rackflow]
# job_accounts), and the S3 intake's run_as. Created (idempotently) when the fleet starts.
JOB_ACCOUNTS = {"admin": "rf-admin", "operator": "rf-operator", "alice": "rf-alice", "bob": "rf-bob"}
INTAKE_ACCOUNT = "rf-intake"


def ensure_accounts(names: list[str]) -> None:
    """Create each unprivileged account that does not exist yet (``useradd``, own group, bash, home)."""
    for name in names:
        if subprocess.run(["getent", "passwd", name], capture_output=True).returncode == 0:
            continue
        done = subprocess.run(
            ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
            capture_output=True,
            text=True,
        )
        # exit 9: created meanwhile by another process
        if done.returncode not in (0, 9):
            raise RuntimeError(f"useradd {name} failed: {done.stderr.strip()}")


def job_accounts_env() -> dict[str, str]:
    """``[rackflow] job_accounts`` for the demo/test logins, as Airflow reads it from the environment."""
    return {"AIRFLOW__RACKFLOW__JOB_ACCOUNTS": json.dumps(JOB_ACCOUNTS)}


def traversable(path: Path) -> bool:
    """Whether every directory from / to ``path`` lets other users through (o+x)."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in [path, *path.parents])


# A domain XML for the libvirt test driver. Memory in KiB.
TEST_DOMAIN_XML = """<domain type='test'>
  <name>{name}</name>
  <memory unit='KiB'>{memory_kib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type>hvm</type></os>
</domain>"""


def conn_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@dataclass
class DevFleet:
    fleet: Fleet
    workdir: Path
    free_ports: bool = False
    hosts: dict[str, Libvirtd] = field(default_factory=dict)
    bmc_plane: Libvirtd | None = None
    redfish: RedfishEmulator | None = None
    slurm: Slurm | None = None
    sshd: Sshd | None = None
    s3: SeaweedS3 | None = None
    made_dirs: list[Path] = field(default_factory=list)
    """Work directories made outside ``workdir`` (removed by :meth:`stop`)."""

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        if self.fleet.devfleet is None:
            raise ValueError("the fleet file has no devfleet section: nothing to start")

    def shared_dir(self, name: str) -> Path:
        """A work directory job accounts can reach (Slurm's config and munge socket): under the fleet's
        work directory when its parents let them through, else a fresh one of its own (mode 0755)."""
        ensure_accounts([*JOB_ACCOUNTS.values(), INTAKE_ACCOUNT])
        self.workdir.mkdir(parents=True, exist_ok=True)
        if traversable(self.workdir):
            path = self.workdir / name
            path.mkdir(exist_ok=True)
        else:
            path = Path(tempfile.mkdtemp(prefix=f"rackflow-{name}-"))
            self.made_dirs.append(path)
        path.chmod(0o755)
        return path

    def _port(self, configured: int | None) -> int:
        return 0 if self.free_ports or not configured else configured

    @property
    def servers(self) -> list[Server]:
        found: list[Server | None] = [
            *self.hosts.values(),
            self.bmc_plane,
            self.redfish,
            self.slurm,
            self.sshd,
            self.s3,
        ]
        return [s for s in found if s is not None]

    def start(self) -> DevFleet:
        """Start every server of the fleet file's ``devfleet`` section.

        Slurm (MariaDB, slurmdbd, slurmctld, slurmd: the slowest, ~10 s) and SeaweedFS (~4 s) start in
        threads of their own while the libvirtds, the Redfish emulator and sshd start here: they share
        nothing but this object, and each server waits for its own readiness. A server that fails
        stops the whole fleet and its error is raised.
        """
        spec = self.fleet.devfleet
        assert spec is not None
        background: list[concurrent.futures.Future[None]] = []
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="devfleet") as pool:
                if spec.slurm_port is not None:
                    slurm = Slurm(workdir=self.shared_dir("slurm"), port=self._port(spec.slurm_port))
                    background.append(pool.submit(self._start_slurm, slurm))
                if spec.s3_port is not None:
                    s3 = SeaweedS3(
                        workdir=self.workdir / "s3", port=self._port(spec.s3_port), buckets=spec.s3_buckets
                    )
                    background.append(pool.submit(self._start_s3, s3))
                try:
                    self._start_hosts_and_bmcs()
                    if spec.ssh_port is not None:
                        self.sshd = Sshd(workdir=self.workdir / "ssh", port=self._port(spec.ssh_port)).start()
                finally:
                    for future in background:  # the first error wins; every thread has ended
                        future.result()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_slurm(self, server: Slurm) -> None:
        self.slurm = server  # before start: stop() stops what of it started, also if its start fails
        server.start()

    def _start_s3(self, server: SeaweedS3) -> None:
        self.s3 = server
        server.start()

    def _start_hosts_and_bmcs(self) -> None:
        spec = self.fleet.devfleet
        assert spec is not None
        for name, port in spec.libvirt_ports.items():
            host = Libvirtd(workdir=self.workdir / f"libvirt-{name}", port=self._port(port))
            self.hosts[name] = host.start()
            _reset_domains(host, spec.vms.get(name, []))
            _seed_images(host)
        if spec.bmc_plane_port is not None:
            self.bmc_plane = Libvirtd(
                workdir=self.workdir / "bmc-plane", port=self._port(spec.bmc_plane_port)
            ).start()
            # One domain per physical host; "running" means the host is powered on.
            _reset_domains(self.bmc_plane, [h.name for h in self.fleet.hosts], vcpus=1, memory_mib=64)
        if spec.redfish_port is not None and self.bmc_plane is not None:
            self.redfish = RedfishEmulator(
                workdir=self.workdir / "redfish",
                port=self._port(spec.redfish_port),
                libvirt_uri=self.bmc_plane.uri,
            ).start()

    def stop(self) -> None:
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.stop()
        for path in self.made_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.made_dirs.clear()

    def connections(self) -> dict[str, dict]:
        """Airflow connections (conn_id -> JSON form) that reach every started server."""
        conns: dict[str, dict] = {}
        for host in self.fleet.hosts:
            if host.name in self.hosts:
                conns[host.libvirt_conn_id] = {"conn_type": "libvirt", "host": self.hosts[host.name].uri}
        if self.redfish is not None:
            for host in self.fleet.hosts:
                if host.bmc and host.bmc.kind == "redfish":
                    conns[host.bmc.conn_id] = {
                        "conn_type": "redfish",
                        "host": LOOPBACK,
                        "port": self.redfish.port,
                        "login": self.redfish.username,
                        "password": self.redfish.password,
                        "schema": "http",
                    }
        if self.sshd is not None:
            conns[SSH_CONN_ID] = {
                "conn_type": "ssh",
                "host": LOOPBACK,
                "port": self.sshd.port,
                "login": self.sshd.user,
                "extra": {"key_file": str(self.sshd.client_key), "no_host_key_check": True},
            }
        if self.s3 is not None:
            conns[S3_CONN_ID] = {
                "conn_type": "aws",
                "login": self.s3.access_key,
                "password": self.s3.secret_key,
                "extra": {"endpoint_url": self.s3.endpoint_url, "region_name": "us-east-1"},
            }
        return conns

    def env(self) -> dict[str, str]:
        """Environment for Airflow processes (and tests) to reach the fleet."""
        env = {conn_env_name(cid): json.dumps(conn) for cid, conn in self.connections().items()}
        env.update(job_accounts_env())
        if self.sshd is not None:  # jobnet steps run over the fleet's sshd
            env["AIRFLOW__RACKFLOW__JOBNET_SSH_CONN_ID"] = SSH_CONN_ID
        if self.slurm is not None:
            env.update(self.slurm.env)
        return env

    def shell_env(self) -> dict[str, str]:
        """:meth:`env` plus what the AWS CLI needs to reach the fleet's S3 (the uploader's side of the
        S3 intake: ``aws s3 cp ... s3://rackflow-jobs/...``). Only for a shell: Airflow's processes get
        :meth:`env`, so no AWS client of theirs picks these up as default credentials."""
        env = self.env()
        if self.s3 is not None:
            env.update(
                {
                    "AWS_ENDPOINT_URL": self.s3.endpoint_url,
                    "AWS_ACCESS_KEY_ID": self.s3.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                    "AWS_DEFAULT_REGION": "us-east-1",
                }
            )
        return env

    def write_env_file(self, path: Path) -> None:
        """The fleet's connections (with their secrets) for a shell: readable by this user only."""
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text("".join(f"export {k}={_shell_quote(v)}\n" for k, v in self.shell_env().items()))

    def apply_env(self) -> None:
        os.environ.update(self.env())


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


# Base images each fake host offers in the test driver's "default-pool" (VM launches clone them).
DEMO_IMAGES = ("debian-12.qcow2", "ubuntu-24.04.qcow2")


def _seed_images(server: Libvirtd, images: tuple[str, ...] = DEMO_IMAGES, pool: str = "default-pool") -> None:
    """Create the base image volumes that launches clone (the test driver allocates nothing)."""
    storage = server.keeper.storagePoolLookupByName(pool)  # type: ignore[attr-defined]
    have = set(storage.listVolumes())
    for image in images:
        if image not in have:
            storage.createXML(
                f"<volume><name>{image}</name><capacity unit='GiB'>2</capacity>"
                "<target><format type='qcow2'/></target></volume>",
                0,
            )


def _reset_domains(server: Libvirtd, names: list[str], vcpus: int = 1, memory_mib: int = 256) -> None:
    """Leave exactly ``names`` defined and running (the test driver starts with a domain named 'test')."""
    conn = server.keeper
    assert conn is not None
    for dom in conn.listAllDomains():  # type: ignore[attr-defined]
        if dom.name() not in names:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    existing = {d.name() for d in conn.listAllDomains()}  # type: ignore[attr-defined]
    for name in names:
        if name not in existing:
            xml = TEST_DOMAIN_XML.format(name=name, memory_kib=memory_mib * 1024, vcpus=vcpus)
            conn.defineXML(xml).create()  # type: ignore[attr-defined]
