"""Batch jobs: submit throughput through the job API against raw ``dagRuns`` POSTs, and 200 waiting jobs.

1. Submit throughput (goal: job API >= 0.8x the raw POST). Airflow's real API app (in process, with
   the rackflow plugin) on a throwaway AIRFLOW_HOME and SQLite; N submissions of the same job
   description through ``POST /rackflow/api/jobs`` and through ``POST /api/v2/dags/rackflow_job/dagRuns``,
   interleaved in rounds so both see the same DB growth.
2. 200 jobs waiting at once on a real single-node Slurm (2 CPUs, so most stay PENDING): 200
   ``LocalSchedulerJobTrigger`` instances in one event loop, as in the triggerer. Goals: scheduler
   status calls per poll interval = 1 per cluster (baseline: one call per job, what N independent
   pollers would cost), and worker slots held while waiting = 0 (the operators defer; the count below
   is the threads busy in the process while the triggers wait).

Run ``python bench/bench_jobs.py [--jobs 200] [--submits 40]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _airflow_env(home: Path) -> None:
    from rackflow_devfleet.fleet import job_accounts_env  # imports nothing of Airflow

    users = {"admin": "admin", "alice": "user"}
    os.environ.update(
        {
            # the Unix account each login's jobs run as: the job API refuses a login without one
            **job_accounts_env(),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in users.items()),
            "AIRFLOW__API_AUTH__JWT_SECRET": "bench-" + "x" * 64,
            "AIRFLOW__API__SECRET_KEY": "bench-" + "x" * 64,
        }
    )
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({u: u for u in users}))


def bench_submit(n: int) -> tuple[float, float]:
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True
    )
    import uvicorn
    from airflow.api_fastapi.app import create_app
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    from rackflow.db.session import upgrade
    from rackflow_devfleet.servers import free_port, wait_for_port

    upgrade()
    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        sync_bag_to_db(
            BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name),
            bundle.name,
            bundle.version,
        )
    spec = {"executable": "/bin/sh", "arguments": ["-c", "echo hi"], "attributes": {"duration": 60}}
    app = create_app()
    # The job API starts each run through Airflow's REST API at [api] base_url (rackflow_plugin.runs),
    # as on a real API server: the same app listens on a loopback port for it.
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=server.run, name="airflow-api", daemon=True)
    serving.start()
    if not wait_for_port(port, 60):
        raise RuntimeError("the in-process API server did not listen")
    os.environ["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{port}"
    with TestClient(app) as client:
        token = client.post("/auth/token", json={"username": "alice", "password": "alice"}).json()[
            "access_token"
        ]
        headers = {"Authorization": f"Bearer {token}"}

        def api() -> None:
            assert client.post("/rackflow/api/jobs", json=spec, headers=headers).status_code == 201

        def raw() -> None:
            body = {"logical_date": None, "conf": {"job": spec}}
            assert (
                client.post("/api/v2/dags/rackflow_job/dagRuns", json=body, headers=headers).status_code
                == 200
            )

        api(), raw()  # warm up both paths
        spent = {"api": 0.0, "raw": 0.0}
        rounds = 4
        for _ in range(rounds):
            for name, fn in (("raw", raw), ("api", api)):
                start = time.perf_counter()
                for _ in range(n // rounds):
                    fn()
                spent[name] += time.perf_counter() - start
    server.should_exit = True
    serving.join(timeout=30)
    per = n // rounds * rounds
    return per / spent["api"], per / spent["raw"]


def bench_waiting(jobs: int, interval: float) -> None:
    from rackflow.core.jobspec import parse_job_description
    from rackflow.hooks.scheduler import LocalSchedulerHook
    from rackflow.triggers.scheduler import ClusterPoller, LocalSchedulerJobTrigger
    from rackflow_devfleet.fleet import JOB_ACCOUNTS, ensure_accounts
    from rackflow_devfleet.instrument import count_scheduler_commands
    from rackflow_devfleet.servers import Slurm, free_port

    workdir = Path(tempfile.mkdtemp(prefix="rackflow-bench-slurm-"))
    workdir.chmod(0o711)  # the job account gets through to its directory and Slurm's config
    ensure_accounts([JOB_ACCOUNTS["alice"]])
    slurm = Slurm(workdir=workdir / "slurm", port=free_port()).start()
    try:
        hook = LocalSchedulerHook(env=slurm.env)
        job = parse_job_description({"executable": "/bin/sleep", "arguments": ["300"]})
        ids = [
            hook.submit(
                job,
                job_name=f"bench.{i}",
                comment="bench",
                workdir=str(workdir / "jobs" / str(i)),
                account=JOB_ACCOUNTS["alice"],
                find_existing=False,
            ).scheduler_job_id
            for i in range(jobs)
        ]
        triggers = [
            LocalSchedulerJobTrigger(scheduler_job_id=i, env=slurm.env, poll_interval=interval) for i in ids
        ]
        key = hook.cluster_key

        async def wait_some() -> tuple[int, float, int]:
            async def first_event(t: LocalSchedulerJobTrigger) -> object:
                return await anext(t.run())

            tasks = [asyncio.create_task(first_event(t)) for t in triggers]
            await asyncio.sleep(interval * 0.5)
            start = time.monotonic()
            busy = []
            with count_scheduler_commands() as commands:
                for _ in range(5):
                    await asyncio.sleep(interval)
                    busy.append(threading.active_count() - 1)
            calls = commands[(key, "squeue")]
            elapsed = time.monotonic() - start
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return calls, elapsed, max(busy)

        calls, elapsed, threads = asyncio.run(wait_some())
        per_interval = calls / (elapsed / interval)
        print(f"waiting jobs: {jobs} on 1 cluster, poll interval {interval}s")
        print(f"  squeue calls per interval: {per_interval:.2f} (goal 1; per-job polling baseline {jobs})")
        print(f"  ratio to baseline: {per_interval / jobs:.4f}")
        print(f"  worker slots held while waiting: 0 (deferred); extra threads busy in the loop: {threads}")
        assert not ClusterPoller._pollers
        for i in ids:
            hook.cancel(i)
    finally:
        slurm.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--submits", type=int, default=40)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    # Airflow reads its configuration when first imported: point it at a throwaway home first.
    _airflow_env(Path(tempfile.mkdtemp(prefix="rackflow-bench-jobs-")))
    bench_waiting(args.jobs, args.interval)
    api_rate, raw_rate = bench_submit(args.submits)
    print(f"submit throughput: job API {api_rate:.1f}/s, raw dagRuns POST {raw_rate:.1f}/s")
    print(f"  ratio: {api_rate / raw_rate:.2f}x (goal >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
