"""LibvirtHook against real libvirtd daemons (test driver over TCP; QEMU/TCG for the boot proof)."""

from __future__ import annotations

import time
from pathlib import Path

import libvirt
import pytest

from rackflow.hooks.libvirt import (
    DomainSpec,
    LibvirtConnectionPool,
    LibvirtHook,
    LibvirtUnreachable,
)


def _spec(name: str, **kw: object) -> DomainSpec:
    return DomainSpec(name=name, vcpus=2, memory_mib=512, network="default", **kw)  # type: ignore[arg-type]


def test_launch_from_image_clones_the_base_volume_and_lists_image_disk_and_address(libvirt_pair):
    src, _ = libvirt_pair
    with LibvirtHook(uri=src.uri) as hook:
        info = hook.launch_from_image(_spec("web-01", metadata={"launch": "run-1"}), image="debian-12.qcow2")
        hook.launch_from_image(_spec("web-02", metadata={"launch": "run-1"}), image="debian-12.qcow2")
        assert info.state == "running"
        vms = {d.name: d for d in hook.list_domains()}
    assert set(vms) == {"web-01", "web-02"}
    web1 = vms["web-01"]
    assert (web1.vcpus, web1.memory_mib, web1.image, web1.launch) == (2, 512, "debian-12.qcow2", "run-1")
    # Each VM has its own clone; the base image stays a separate volume.
    assert web1.disks == ("/default-pool/web-01.qcow2",)
    assert vms["web-02"].disks == ("/default-pool/web-02.qcow2",)
    volumes = set(src.keeper.storagePoolLookupByName("default-pool").listVolumes())
    assert {"debian-12.qcow2", "web-01.qcow2", "web-02.qcow2"} <= volumes
    assert web1.addresses and web1.addresses[0].startswith("192.168.122.")


def test_launch_of_an_unknown_image_names_the_pool_and_the_images_it_has(libvirt_pair):
    src, _ = libvirt_pair
    with (
        LibvirtHook(uri=src.uri) as hook,
        pytest.raises(ValueError, match=r"centos\.qcow2.*debian-12\.qcow2"),
    ):
        hook.launch_from_image(_spec("x-01"), image="centos.qcow2")


def test_launch_again_after_an_interrupted_launch_completes_the_same_domain(libvirt_pair):
    src, _ = libvirt_pair
    with LibvirtHook(uri=src.uri) as hook:
        # An interrupted launch: defined (tagged) but its disk never cloned and never started.
        hook.define_domain(_spec("db-07", metadata={"launch": "r", "volumes": "default-pool/db-07.qcow2"}))
        hook.launch_from_image(_spec("db-07", metadata={"launch": "r"}), image="debian-12.qcow2")
        assert [(d.name, d.state) for d in hook.list_domains()] == [("db-07", "running")]
        assert "db-07.qcow2" in src.keeper.storagePoolLookupByName("default-pool").listVolumes()


def test_capacity_counts_every_defined_vm_running_or_not(libvirt_pair):
    src, _ = libvirt_pair
    with LibvirtHook(uri=src.uri) as hook:
        hook.launch_from_image(_spec("a-01"), image="debian-12.qcow2")
        hook.define_domain(_spec("a-02"))  # defined, shut off: it may start again, so it counts
        cap = hook.capacity()
        inventory = hook.capacity(cpus=8, memory_mib=2048)
    assert (cap.cpus, cap.memory_mib) == (16, 3072)  # what the test driver reports
    assert (cap.used_cpus, cap.used_memory_mib, cap.free_cpus, cap.free_memory_mib) == (4, 1024, 12, 2048)
    assert (inventory.free_cpus, inventory.free_memory_mib) == (4, 1024)


def test_destroy_undefines_and_deletes_only_the_cloned_volume(libvirt_pair):
    src, _ = libvirt_pair
    with LibvirtHook(uri=src.uri) as hook:
        hook.launch_from_image(_spec("tmp-01"), image="debian-12.qcow2")
        assert hook.destroy_domain("tmp-01") is True
        assert hook.destroy_domain("tmp-01") is False  # already gone: nothing to do
        assert hook.domain_states(["tmp-01"]) == {"tmp-01": "missing"}
    volumes = src.keeper.storagePoolLookupByName("default-pool").listVolumes()
    assert "tmp-01.qcow2" not in volumes and "debian-12.qcow2" in volumes


def test_migrate_falls_back_to_cold_when_the_driver_cannot_live_migrate(libvirt_pair):
    src, dst = libvirt_pair
    with LibvirtHook(uri=src.uri) as a, LibvirtHook(uri=dst.uri) as b:
        a.launch_from_image(_spec("mv-01", metadata={"launch": "r9"}), image="debian-12.qcow2")
        assert a.migrate("mv-01", b) == "cold"
        assert a.domain_states(["mv-01"]) == {"mv-01": "missing"}
        moved = b.domain("mv-01")
        assert moved is not None
        assert (moved.state, moved.vcpus, moved.memory_mib, moved.launch) == ("running", 2, 512, "r9")
        # A stopped VM moves and stays stopped.
        b.define_domain(_spec("mv-02"))
        assert b.migrate("mv-02", a) == "cold"
        assert a.domain_states(["mv-02"]) == {"mv-02": "shutoff"}


def test_migrate_refuses_a_name_the_target_already_has(libvirt_pair):
    src, dst = libvirt_pair
    with LibvirtHook(uri=src.uri) as a, LibvirtHook(uri=dst.uri) as b:
        a.define_domain(_spec("dup-01"))
        b.define_domain(_spec("dup-01"))
        with pytest.raises(ValueError, match="already has a domain named 'dup-01'"):
            a.migrate("dup-01", b)
        assert a.domain_states(["dup-01"]) == {"dup-01": "shutoff"}


def test_pool_shares_one_connection_per_uri_and_a_stopped_host_is_unreachable(libvirt_pair):
    src, dst = libvirt_pair
    pool = LibvirtConnectionPool()
    try:
        one, two = LibvirtHook(uri=src.uri, pool=pool), LibvirtHook(uri=src.uri, pool=pool)
        assert one.get_conn() is two.get_conn()
        LibvirtHook(uri=dst.uri, pool=pool).list_domains()
        assert len(pool) == 2
        dst.stop()
        with pytest.raises(LibvirtUnreachable, match=f"127.0.0.1:{dst.port}"):
            LibvirtHook(uri=dst.uri, pool=pool).list_domains()
        assert pool.peek(dst.uri) is None  # the dead connection is dropped, not reused
        with pytest.raises(LibvirtUnreachable, match="cannot connect"):
            LibvirtHook(uri=dst.uri, pool=pool).list_domains()
        assert one.list_domains() == []  # the other host is unaffected
    finally:
        pool.close_all()
    assert len(pool) == 0


# A 512-byte boot sector: SeaBIOS loads it at 0x7c00; it writes RACKFLOW-BOOT-OK to COM1 and halts.
#   cli; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
#   l: lodsb; test al,al; jz d; out dx,al; jmp l
#   d: hlt; jmp d
#   msg: db "RACKFLOW-BOOT-OK",13,10,0
_BOOT_CODE = bytes.fromhex("FA31C08ED8BE167CBAF803AC84C07403EEEBF8F4EBFD") + b"RACKFLOW-BOOT-OK\r\n\x00"
BOOT_SECTOR = _BOOT_CODE.ljust(510, b"\x00") + b"\x55\xaa"


@pytest.mark.slow
def test_a_real_vm_boots_under_qemu_tcg_from_a_cloned_image(qemu_libvirtd, tmp_path: Path):
    conn = qemu_libvirtd.keeper
    images = tmp_path / "images"
    images.mkdir()
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>images</name><target><path>{images}</path></target></pool>", 0
    )
    base = pool.createXML(
        "<volume><name>bootcheck.img</name><capacity unit='MiB'>1</capacity>"
        "<target><format type='raw'/></target></volume>",
        0,
    )
    stream = conn.newStream(0)
    base.upload(stream, 0, len(BOOT_SECTOR), 0)
    stream.send(BOOT_SECTOR)
    stream.finish()
    serial = tmp_path / "serial.log"
    with LibvirtHook(uri=qemu_libvirtd.uri) as hook:
        assert hook.driver_domain_type() == "kvm"
        spec = DomainSpec(name="boot-01", vcpus=1, memory_mib=32, domain_type="qemu", serial_log=str(serial))
        info = hook.launch_from_image(spec, image="bootcheck.img", pool="images")
        try:
            assert info.state == "running"
            assert info.disks == (str(images / "boot-01.img"),)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and b"RACKFLOW-BOOT-OK" not in _read(serial):
                time.sleep(0.2)
            assert b"RACKFLOW-BOOT-OK" in _read(serial), f"serial console said {_read(serial)!r}"
            # The guest ran from its own clone: the base image is untouched and still a separate file.
            assert (images / "bootcheck.img").read_bytes()[:512] == BOOT_SECTOR
        finally:
            assert hook.destroy_domain("boot-01") is True
    assert not (images / "boot-01.img").exists()
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("boot-01")


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""
