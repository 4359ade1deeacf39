"""Time one power monitoring cycle over 200 emulated BMCs: goal = bounded by the slowest BMC, not the sum.

Run it as ``python bench/bench_power_monitoring.py [--bmcs N] [--max-delay-ms D] [--seed S]``.

A tiny threaded Redfish server on loopback (real HTTP, real sushy client) serves N systems; reading a
system's PowerState is delayed by that system's own delay (uniform 5 ms .. D ms, one system at D ms).
Each node has its own Airflow connection (its own "BMC"), and ``test:///default`` as hypervisor (the
real libvirt test driver, in process). Then one real :func:`rackflow.power_service.monitor_cycle`
runs on a temporary SQLite inventory of N nodes.

Printed: the cycle's wall time, the slowest single BMC call and the sum of all BMC calls (both
measured in the same run, from the per-call timings), and the ratios cycle/slowest and cycle/sum.
A second cycle with one BMC that never answers shows the cycle bounded by the per-BMC deadline.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="rackflow-bench-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

HUNG = "hung"


def make_server(delays: dict[str, float]) -> ThreadingHTTPServer:
    """A minimal Redfish service: root, Systems collection, one ComputerSystem per name."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.rstrip("/")
            if path == "/redfish/v1":
                self._send(
                    {
                        "@odata.id": "/redfish/v1/",
                        "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
                        "Id": "RootService",
                        "Name": "bench",
                        "RedfishVersion": "1.5.0",
                        "UUID": "00000000-0000-0000-0000-000000000000",
                        "Systems": {"@odata.id": "/redfish/v1/Systems"},
                    }
                )
            elif path == "/redfish/v1/Systems":
                self._send(
                    {
                        "@odata.id": "/redfish/v1/Systems",
                        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                        "Name": "Systems",
                        "Members": [{"@odata.id": f"/redfish/v1/Systems/{n}"} for n in delays],
                        "Members@odata.count": len(delays),
                    }
                )
            elif path.startswith("/redfish/v1/Systems/"):
                name = path.rsplit("/", 1)[-1]
                if name not in delays:
                    self.send_error(404)
                    return
                time.sleep(delays[name])
                self._send(
                    {
                        "@odata.id": f"/redfish/v1/Systems/{name}",
                        "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
                        "Id": name,
                        "Name": name,
                        "UUID": f"00000000-0000-0000-0000-{abs(hash(name)) % 10**12:012d}",
                        "PowerState": "On",
                        "Actions": {
                            "#ComputerSystem.Reset": {
                                "target": f"/redfish/v1/Systems/{name}/Actions/ComputerSystem.Reset"
                            }
                        },
                    }
                )
            else:
                self.send_error(404)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # listen backlog: 200 BMC clients connect at once

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve(delays_file: str) -> None:
    """``--serve FILE``: run the emulated BMCs in this process (so they do not share the client's GIL)."""
    delays = json.loads(Path(delays_file).read_text())
    server = make_server(delays)
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin


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
    from rackflow.power_service import PowerConfig, monitor_cycle

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

    run_cycle(url, bmc_timeout=10)  # warm-up: imports, first connections
    cycle, per_call, errors = run_cycle(url, bmc_timeout=10)
    slowest, total = max(per_call), sum(per_call)
    # Baseline in the same run: one BMC read alone (the slowest one), on a quiet client.
    from rackflow.power_service import NodeRef, bmc_power_state

    ref = NodeRef(
        names[-1], "bench", 64, 262144, "bench_libvirt", "redfish", f"bench_bmc_{names[-1]}", names[-1]
    )
    t0 = time.monotonic()
    bmc_power_state(ref, timeout=10)
    alone = time.monotonic() - t0
    serial = sum(delays.values())
    print(
        f"monitoring cycle, {args.bmcs} emulated Redfish BMCs "
        f"(delays 5..{args.max_delay_ms:g} ms), libvirt per node"
    )
    print(f"  cycle wall time               {cycle:8.3f} s")
    print(f"  slowest BMC read, alone       {alone:8.3f} s   (baseline, same run)")
    print(f"  sum of BMC delays             {serial:8.3f} s   (least a one-after-another poll costs)")
    print(f"  slowest call inside the cycle {slowest:8.3f} s   (sum of in-cycle call times {total:.1f} s)")
    print(f"  cycle / slowest alone         {cycle / alone:8.2f}x  (goal: bounded by the slowest, ~1)")
    print(f"  cycle / sum of delays         {cycle / serial:8.3f}x")
    print(f"  nodes error-stopped           {errors:8d}   (expected 0)")

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
