"""How long the layout of 100 hosts x 2,000 VMs takes to build, against the page's 1 s goal.

Each host is a libvirt test-driver XML file (``test:///.../host-NNN.xml``) holding its share of the
VMs, all running with one interface (so addresses are asked too). Run
``python bench/bench_layout.py [--hosts 100] [--vms 2000]``. It prints, best of a few runs:

* ``layout``: ``LayoutService.build`` as the ``/rackflow/api/hosts`` route calls it (pooled
  connections, hosts asked in parallel, one XML read per VM, states in one call per host);
* ``cold``: the first build, opening every connection;
* ``baseline``: the obvious code measured in the same run on the same files: hosts one after the other,
  a new connection each time, ``info()`` + ``XMLDesc()`` + ``interfaceAddresses()`` per VM.

The test driver answers in-process, so this measures rackflow's own cost; on real hosts add one round
trip per VM per host, spread over the worker threads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from rackflow.services.fleet_layout import HostRecord, LayoutService, layout_summary

GOAL_SECONDS = 1.0

HOST_XML = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>64</cores><threads>1</threads>
    <active>64</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>{memory_kib}</memory>
  <network><name>default</name><bridge name='virbr0'/><forward/>
    <ip address='192.168.122.1' netmask='255.255.255.0'>
      <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>
{domains}
</node>
"""
DOMAIN_XML = """  <domain type='test'>
    <name>{name}</name>
    <memory unit='MiB'>512</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <metadata><rackflow:vm xmlns:rackflow="https://rackflow.dev/xmlns/vm/1" launch="bench/run/launch"
      image="debian-12.qcow2" volumes="default-pool/{name}.qcow2"/></metadata>
    <devices>
      <disk type='file' device='disk'><source file='/default-pool/{name}.qcow2'/>
        <target dev='vda' bus='virtio'/></disk>
      <interface type='network'><source network='default'/></interface>
    </devices>
  </domain>"""


def write_fleet(folder: Path, hosts: int, vms: int) -> list[str]:
    """One test-driver file per host, ``vms`` spread evenly; returns their URIs."""
    uris = []
    per_host, extra = divmod(vms, hosts)
    seq = 0
    for h in range(hosts):
        count = per_host + (1 if h < extra else 0)
        domains = []
        for _ in range(count):
            seq += 1
            domains.append(DOMAIN_XML.format(name=f"vm-{seq:05d}"))
        path = folder / f"host-{h:03d}.xml"
        path.write_text(HOST_XML.format(memory_kib=512 * 1024 * 1024, domains="\n".join(domains)))
        uris.append(f"test://{path}")
    return uris


def baseline(uris: list[str]) -> int:
    """The obvious way: serial, a connection per host per request, three calls per VM."""
    total = 0
    for uri in uris:
        conn = libvirt.open(uri)
        try:
            for dom in conn.listAllDomains():
                dom.info()
                dom.XMLDesc(0)
                dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
                total += 1
        finally:
            conn.close()
    return total


def best_of(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms", type=int, default=2000, help="VMs in the whole fleet")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rackflow-bench-layout-") as tmp:
        uris = write_fleet(Path(tmp), args.hosts, args.vms)
        by_conn = {f"h{i}": uri for i, uri in enumerate(uris)}
        records = [
            HostRecord(
                name=f"host-{i:03d}",
                group=f"rack-{i // 10}",
                rack=None,
                cpus=64,
                memory_mib=512 * 1024,
                libvirt_conn_id=conn_id,
            )
            for i, conn_id in enumerate(by_conn)
        ]
        service = LayoutService(resolve_uri=by_conn.__getitem__, host_timeout=60)
        try:
            started = time.perf_counter()
            hosts = service.build(records)
            cold = time.perf_counter() - started
            summary = layout_summary(hosts)
            assert summary["vms"] == args.vms and summary["unreachable"] == 0, summary
            assert all(vm["addresses"] for h in hosts for vm in h["vms"]), "addresses were not asked"
            warm = best_of(args.runs, lambda: service.build(records))
        finally:
            service.close()
        base = best_of(max(1, args.runs // 2), lambda: baseline(uris))

    print(f"fleet: {args.hosts} hosts, {args.vms} VMs (test driver, in-process)")
    print(f"layout   {warm * 1000:8.1f} ms   {warm / GOAL_SECONDS:5.2f} x goal ({GOAL_SECONDS:g} s)")
    print(f"cold     {cold * 1000:8.1f} ms   {cold / GOAL_SECONDS:5.2f} x goal")
    print(f"baseline {base * 1000:8.1f} ms   layout is {base / warm:5.2f} x faster than the baseline")
    print("PASS" if warm <= GOAL_SECONDS else "FAIL: slower than the goal")


if __name__ == "__main__":
    main()
