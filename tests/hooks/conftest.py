"""Fixtures for the libvirt hook tests: private test-driver daemons and a QEMU (TCG) libvirtd."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rackflow_devfleet.fleet import _reset_domains, _seed_images
from rackflow_devfleet.servers import LOOPBACK, Libvirtd, _open_libvirt


@pytest.fixture
def libvirt_pair(tmp_path: Path) -> Iterator[tuple[Libvirtd, Libvirtd]]:
    """Two fresh test-driver libvirtds (a source and a target host) with the demo images, no VMs."""
    servers = []
    try:
        for name in ("src", "dst"):
            server = Libvirtd(workdir=tmp_path / name).start()
            servers.append(server)
            _reset_domains(server, [])
            _seed_images(server)
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@dataclass
class QemuLibvirtd(Libvirtd):
    """A libvirtd with the QEMU driver, in its own mount namespace with a private /etc/libvirt copy.

    The copy's qemu.conf runs guests as root without virtlogd, so nothing outside the work directory
    changes (persistent domains and pools go to the private copy, guest logs to ``log-libvirt/``).
    """

    name = "libvirtd-qemu"

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{LOOPBACK}:{self.port}/system"

    def start(self) -> QemuLibvirtd:
        sock_dir = self.workdir / "sock"
        sock_dir.mkdir(exist_ok=True)
        etc = self.workdir / "etc-libvirt"
        if not etc.exists():
            shutil.copytree("/etc/libvirt", etc, symlinks=True)
        (etc / "qemu.conf").write_text(
            'user = "+0"\ngroup = "+0"\ndynamic_ownership = 0\n'
            'stdio_handler = "file"\nsecurity_driver = "none"\n'
        )
        conf = self.workdir / "libvirtd.conf"
        conf.write_text(
            "listen_tls = 0\nlisten_tcp = 1\n"
            f'listen_addr = "{LOOPBACK}"\ntcp_port = "{self.port}"\nauth_tcp = "none"\n'
            f'unix_sock_dir = "{sock_dir}"\nlog_outputs = "3:stderr"\n'
        )
        logs = self.workdir / "log-libvirt"
        (logs / "qemu").mkdir(parents=True, exist_ok=True)
        script = (
            "mkdir -p /run/libvirt /var/lib/libvirt && mount -t tmpfs tmpfs /run/libvirt && "
            f"mount -t tmpfs tmpfs /var/lib/libvirt && mount --bind {etc} /etc/libvirt && "
            f"mount --bind {logs} /var/log/libvirt && "
            f"exec libvirtd -l -f {conf} -p {self.workdir / 'libvirtd.pid'}"
        )
        proc = self._spawn(["unshare", "-m", "sh", "-c", script])
        self._await_port(proc=proc)
        import libvirt

        self.keeper = _open_libvirt(libvirt, self.uri, self.start_timeout)
        return self


@pytest.fixture
def qemu_libvirtd(tmp_path: Path) -> Iterator[QemuLibvirtd]:
    tmp_path.chmod(0o755)
    server = QemuLibvirtd(workdir=tmp_path / "qemu").start()
    try:
        yield server
    finally:
        server.stop()
