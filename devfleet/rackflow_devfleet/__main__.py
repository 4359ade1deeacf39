"""``python -m rackflow_devfleet demo`` (what ``make demo`` runs) or ``up`` (the fleet alone)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rackflow_devfleet")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the demo fleet and airflow standalone")
    demo.add_argument("--repo", type=Path, default=Path.cwd())
    demo.add_argument("--port", type=int, default=int(os.environ.get("RACKFLOW_DEMO_PORT", "8080")))
    demo.add_argument("--state-dir", type=Path, default=None, help="default: .rackflow/ in the repo")
    up = sub.add_parser("up", help="start only the loopback fleet of a fleet file; Ctrl-C stops it")
    up.add_argument("fleet_file", type=Path)
    up.add_argument("--workdir", type=Path, default=Path(".rackflow/fleet"))
    up.add_argument("--free-ports", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from rackflow_devfleet.demo import run_demo

        try:
            return run_demo(args.repo.resolve(), args.port, args.state_dir)
        except KeyboardInterrupt:  # Ctrl-C while starting: everything started is already stopped
            return 130

    from rackflow.core.fleet import Fleet
    from rackflow_devfleet.fleet import DevFleet

    fleet = DevFleet(Fleet.load(args.fleet_file), workdir=args.workdir, free_ports=args.free_ports).start()
    try:
        fleet.write_env_file(args.workdir / "fleet.env")
        print(f"fleet is up; connections: source {args.workdir / 'fleet.env'}; Ctrl-C stops it", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
