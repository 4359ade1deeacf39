"""Time one power monitoring cycle over 200 emulated BMCs: goal = bounded by the slowest BMC, not the sum.

Run it as ``python bench/bench_power_monitoring.py [--bmcs N] [--max-delay-ms D] [--seed S]``.

A tiny asyncio Redfish server in a separate process on loopback (real HTTP) serves N systems;
reading a system's PowerState is delayed by that system's own delay (uniform 5 ms .. D ms, one system
at D ms). Each node has its own Airflow connection (its own "BMC"), and ``test:///default`` as
hypervisor (the real libvirt test driver, in process). Then real
:func:`rackflow.services.power.monitor.monitor_cycle` runs on a temporary SQLite inventory of N nodes.

Printed (medians of 3): the cycle's wall time against one BMC read alone, the Redfish poll and the
libvirt listings each alone, and the same cycle with a blocking read per BMC (a thread each) as the
baseline measured in the same run. A last cycle with one BMC that never answers
shows the cycle bounded by the per-BMC deadline.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="rackflow-bench-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

HUNG = "hung"


def _system(name: str) -> dict[str, object]:
    return {
        "@odata.id": f"/redfish/v1/Systems/{name}",
        "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
        "Id": name,
        "Name": name,
        "UUID": f"00000000-0000-0000-0000-{zlib.crc32(name.encode()):012d}",
        "PowerState": "On",
        "Actions": {
            "#ComputerSystem.Reset": {"target": f"/redfish/v1/Systems/{name}/Actions/ComputerSystem.Reset"}
        },
    }


def _answer(path: str, delays: dict[str, float]) -> tuple[int, dict[str, object] | None, float]:
    """(HTTP status, JSON body, delay) for a GET of ``path``: a minimal Redfish service."""
    path = path.split("?", 1)[0].rstrip("/")
    if path == "/redfish/v1":
        return (
            200,
            {
                "@odata.id": "/redfish/v1/",
                "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
                "Id": "RootService",
                "Name": "bench",
                "RedfishVersion": "1.5.0",
                "UUID": "00000000-0000-0000-0000-000000000000",
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
            },
            0.0,
        )
    if path == "/redfish/v1/Systems":
        return (
            200,
            {
                "@odata.id": "/redfish/v1/Systems",
                "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                "Name": "Systems",
                "Members": [{"@odata.id": f"/redfish/v1/Systems/{n}"} for n in delays],
                "Members@odata.count": len(delays),
            },
            0.0,
        )
    name = path.rsplit("/", 1)[-1]
    if path.startswith("/redfish/v1/Systems/") and name in delays:
        return 200, _system(name), delays[name]
    return 404, None, 0.0


async def _serve_async(delays: dict[str, float], ready: Callable[[int], None]) -> None:
    """The emulated BMCs as one asyncio HTTP/1.1 server: each system answers after its own delay.

    Real BMCs are separate machines that accept and answer in parallel. A thread per connection in
    one Python process would serialize 200 accepts and thread starts (the last connection accepted
    ~0.2 s late on this machine), which is the emulator's cost, not the BMCs'; an event loop answers
    all of them at once. Each response goes out in one write (headers and body together).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
                }
                status, body, delay = _answer(path, delays)
                if delay:
                    await asyncio.sleep(delay)
                data = json.dumps(body).encode() if body is not None else b""
                close = headers.get("connection", "").lower() == "close"
                reason = "OK" if status == 200 else "Not Found"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: {'close' if close else 'keep-alive'}"
                    "\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def serve(delays_file: str) -> None:
    """``--serve FILE``: run the emulated BMCs in this process (so they do not share the client's GIL)."""
    delays = json.loads(Path(delays_file).read_text())
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    asyncio.run(_serve_async(delays, lambda port: print(port, flush=True)))


def start_bmcs(delays: dict[str, float], workdir: Path) -> tuple[subprocess.Popen[str], int]:
    path = workdir / "delays.json"
    path.write_text(json.dumps(delays))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def setup_inventory(url: str, names: list[str], port: int) -> None:
    from rackflow.core.fleet import BmcSpec, Fleet, HostSpec
    from rackflow.db.inventory import sync_fleet
    from rackflow.db.session import session_scope, upgrade

    hosts = []
    for name in names:
        conn_id = f"bench_bmc_{name}"
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {"conn_type": "redfish", "host": "127.0.0.1", "port": port, "schema": "http", "login": "x"}
        )
        hosts.append(
            HostSpec(
                name=name,
                group="bench",
                cpus=64,
                memory_mib=262144,
                libvirt_conn_id="bench_libvirt",
                bmc=BmcSpec(kind="redfish", conn_id=conn_id),
            )
        )
    os.environ["AIRFLOW_CONN_BENCH_LIBVIRT"] = json.dumps({"conn_type": "libvirt", "host": "test:///default"})
    upgrade(url)
    with session_scope(url) as session:
        sync_fleet(session, Fleet(hosts=hosts))


def run_cycle(url: str, bmc_timeout: float) -> tuple[float, list[float], int]:
    from datetime import timedelta

    from rackflow.core.power import PowerThresholds, ReconcileTimeouts
    from rackflow.services.power.config import PowerConfig
    from rackflow.services.power.monitor import monitor_cycle

    config = PowerConfig(
        PowerThresholds(off_threshold=timedelta(hours=1), on_threshold=timedelta(minutes=30)),
        ReconcileTimeouts(),
        bmc_timeout,
        "packing",
    )
    report = monitor_cycle(url=url, config=config)
    errors = sum(1 for n in report.nodes if n.status == "error-stopped")
    return report.seconds, [n.bmc_seconds for n in report.nodes], errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bmcs", type=int, default=200)
    parser.add_argument("--max-delay-ms", type=float, default=400)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    rng = random.Random(args.seed)
    names = [f"n{i:04d}" for i in range(args.bmcs)]
    delays = {n: rng.uniform(0.005, args.max_delay_ms / 1000) for n in names}
    delays[names[-1]] = args.max_delay_ms / 1000
    workdir = Path(tempfile.mkdtemp(prefix="rackflow-bench-power-"))
    bmcs, port = start_bmcs(delays, workdir)
    url = f"sqlite:///{workdir / 'inventory.db'}"
    setup_inventory(url, names, port)

    import statistics
    from functools import partial

    from rackflow.hooks.redfish import RedfishHook
    from rackflow.services.power import monitor as power_monitor
    from rackflow.services.power.bmc import NodeRef, bmc_power_state, redfish_power_states, run_bounded

    refs = [NodeRef(n, "bench", 64, 262144, "bench_libvirt", "redfish", f"bench_bmc_{n}", n) for n in names]

    def blocking_threads(nodes: list[NodeRef], *, timeout: float, deadline: float) -> dict[str, object]:
        """The baseline: the blocking read per BMC, each in a thread of its own (and its own loop)."""
        calls = {
            n.name: partial(
                RedfishHook(str(n.bmc_conn_id), timeout=timeout, retries=1).get_power_state, n.name
            )
            for n in nodes
        }
        return run_bounded(calls, timeout=deadline)  # type: ignore[return-value]

    def median_cycle(repeat: int = 3) -> tuple[float, list[float], int]:
        runs = [run_cycle(url, bmc_timeout=10) for _ in range(repeat)]
        runs.sort(key=lambda r: r[0])
        return runs[len(runs) // 2]

    run_cycle(url, bmc_timeout=10)  # warm-up: imports, first connections
    cycle, per_call, errors = median_cycle()
    slowest, total = max(per_call), sum(per_call)
    polls = []
    for _ in range(3):
        t0 = time.monotonic()
        redfish_power_states(refs, timeout=10, deadline=21)
        polls.append(time.monotonic() - t0)
    poll = statistics.median(polls)
    lists = []
    for _ in range(3):
        t0 = time.monotonic()
        run_bounded({n.name: partial(power_monitor._vms_of, n) for n in refs}, timeout=21)
        lists.append(time.monotonic() - t0)
    listing = statistics.median(lists)
    power_monitor.redfish_power_states = blocking_threads  # type: ignore[assignment]
    try:
        old_cycle, _old_calls, _old_errors = median_cycle()
    finally:
        power_monitor.redfish_power_states = redfish_power_states
    # Baseline in the same run: one BMC read alone (the slowest one), on a quiet client.
    alone_runs = []
    for _ in range(3):
        t0 = time.monotonic()
        bmc_power_state(refs[-1], timeout=10)
        alone_runs.append(time.monotonic() - t0)
    alone = statistics.median(alone_runs)
    serial = sum(delays.values())
    print(
        f"monitoring cycle, {args.bmcs} emulated Redfish BMCs "
        f"(delays 5..{args.max_delay_ms:g} ms), libvirt per node; medians of 3"
    )
    print(f"  cycle wall time               {cycle:8.3f} s")
    print(f"  slowest BMC read, alone       {alone:8.3f} s   (baseline, same run)")
    print(f"  sum of BMC delays             {serial:8.3f} s   (least a one-after-another poll costs)")
    print(f"  slowest call inside the cycle {slowest:8.3f} s   (sum of in-cycle call times {total:.1f} s)")
    print(f"  cycle / slowest alone         {cycle / alone:8.2f}x  (goal: bounded by the slowest, ~1)")
    print(f"  cycle / sum of delays         {cycle / serial:8.3f}x")
    print(f"  nodes error-stopped           {errors:8d}   (expected 0)")
    print("  parts, each alone:")
    print(f"    Redfish poll (event loop)   {poll:8.3f} s   {poll / alone:6.2f}x the slowest BMC alone")
    print(f"    libvirt listings (threads)  {listing:8.3f} s   (in-process test driver: CPU on this machine)")
    print("  baseline, same run: a blocking read per BMC, a thread each")
    print(f"    cycle wall time             {old_cycle:8.3f} s   {old_cycle / alone:6.2f}x the slowest alone")
    print(f"    new cycle / previous cycle  {cycle / old_cycle:8.2f}x")

    bmcs.stdin.close()  # type: ignore[union-attr]
    bmcs.wait(10)
    delays[names[0]] = 3600.0  # one BMC that never answers
    bmcs, port = start_bmcs(delays, workdir)
    for name in names:
        os.environ[f"AIRFLOW_CONN_BENCH_BMC_{name.upper()}"] = json.dumps(
            {"conn_type": "redfish", "host": "127.0.0.1", "port": port, "schema": "http", "login": "x"}
        )
    hung_timeout = 1.0
    cycle2, _per_call2, errors2 = run_cycle(url, bmc_timeout=hung_timeout)
    deadline = hung_timeout * 2 + 1  # the cycle's per-BMC deadline: two attempts + margin
    print(
        f"with one BMC that never answers (bmc_timeout {hung_timeout:g} s, per-BMC deadline {deadline:g} s)"
    )
    print(f"  cycle wall time               {cycle2:8.3f} s")
    print(f"  cycle / deadline              {cycle2 / deadline:8.2f}x  (goal: close to 1)")
    print(f"  nodes error-stopped           {errors2:8d}   (expected 1)")
    bmcs.kill()
    os._exit(0)  # abandoned BMC threads are still sleeping on the hung request
    return 0


if __name__ == "__main__":
    sys.exit(main())
