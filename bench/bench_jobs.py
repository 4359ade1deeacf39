"""Batch jobs: submit throughput through the job API against raw ``dagRuns`` POSTs, and 200 waiting jobs.

1. Submit throughput (goal: job API >= 0.8x the raw POST). Airflow's real API app (in process, with
   the rackflow plugin) on a throwaway AIRFLOW_HOME and SQLite; N submissions of the same job
   description through ``POST /rackflow/api/jobs`` and through ``POST /api/v2/dags/rackflow_job/dagRuns``,
   interleaved in rounds so both see the same DB growth.
2. 200 jobs waiting at once on a real single-node Slurm (2 CPUs, so most stay PENDING): 200
   ``BatchSchedulerJobTrigger`` instances in one event loop, as in the triggerer. Goals: scheduler
   status calls per poll interval = 1 per cluster (baseline: one call per job, what N independent
   pollers would cost), and worker slots held while waiting = 0 (the operators defer; the count below
   is the threads busy in the process while the triggers wait).

3. A burst of job-API jobs through a real ``airflow standalone`` on the demo's settings (4 worker
   slots, LocalExecutor, SQLite) and its own Slurm (``--slurm-cpus``, so the cluster is not the
   bottleneck): ``--api-jobs`` jobs (``sleep 3``, nothing staged) posted at once; time until all are
   final (goal <= 90 s for 100), worker task starts per job (goal <= 2; counted from the task
   processes' start lines in the standalone log, and task tries from ``/api/v2``), and lost or
   doubled jobs (Slurm jobs per job name against the jobs posted; goal 0). Baseline, measured in the
   same run on the same Slurm: the same jobs submitted straight to Slurm from one process and polled
   until all ended (the floor without Airflow).

Run ``python bench/bench_jobs.py [--jobs 200] [--submits 40] [--api-jobs 100]``.
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
    from airflow.api_fastapi.app import create_app
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    from rackflow.db.session import upgrade

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
    per = n // rounds * rounds
    return per / spent["api"], per / spent["raw"]


def bench_waiting(jobs: int, interval: float) -> None:
    from rackflow.core.jobspec import parse_job_description
    from rackflow.hooks.scheduler import BatchSchedulerHook
    from rackflow.triggers.scheduler import BatchSchedulerJobTrigger, ClusterPoller
    from rackflow_devfleet.fleet import JOB_ACCOUNTS, ensure_accounts
    from rackflow_devfleet.instrument import count_scheduler_commands
    from rackflow_devfleet.servers import Slurm, free_port

    workdir = Path(tempfile.mkdtemp(prefix="rackflow-bench-slurm-"))
    workdir.chmod(0o711)  # the job account gets through to its directory and Slurm's config
    ensure_accounts([JOB_ACCOUNTS["alice"]])
    slurm = Slurm(workdir=workdir / "slurm", port=free_port()).start()
    try:
        hook = BatchSchedulerHook(scheduler_env=slurm.env)
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
            BatchSchedulerJobTrigger(scheduler_job_id=i, scheduler_env=slurm.env, poll_interval=interval)
            for i in ids
        ]
        key = hook.cluster_key

        async def wait_some() -> tuple[int, float, int]:
            async def first_event(t: BatchSchedulerJobTrigger) -> object:
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


API_JOB = {"executable": "/bin/sleep", "arguments": ["3"]}
FINAL = ("COMPLETED", "FAILED", "CANCELED")


def _squeue_names(env: dict[str, str]) -> list[str]:
    """Names of every job the (bench's own) Slurm still knows, finished ones included."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%j"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def bench_floor(hook: object, workdir: Path, jobs: int, account: str) -> float:
    """The same jobs straight to Slurm from one process, polled every second until all ended."""
    from rackflow.core.jobspec import parse_job_description

    job = parse_job_description(API_JOB)
    start = time.monotonic()
    ids = [
        hook.submit(  # type: ignore[attr-defined]
            job,
            job_name=f"bench.floor.{i}",
            comment="bench floor",
            workdir=str(workdir / f"floor-{i}"),
            account=account,
            find_existing=False,
        ).scheduler_job_id
        for i in range(jobs)
    ]
    while not all(s.state.is_final for s in hook.statuses(ids).values()):  # type: ignore[attr-defined]
        time.sleep(1)
    return time.monotonic() - start


def bench_api_jobs(jobs: int, slurm_cpus: int) -> dict[str, float]:
    """The job-API burst through ``airflow standalone`` (see the module docstring, item 3)."""
    import logging
    import shutil

    import requests

    from rackflow.hooks.scheduler import BatchSchedulerHook
    from rackflow_devfleet.demo import (
        DEMO_USERS,
        airflow_env,
        prepare_home,
        start_standalone,
        stop_standalone,
        wait_healthy,
    )
    from rackflow_devfleet.fleet import JOB_ACCOUNTS, ensure_accounts
    from rackflow_devfleet.servers import Slurm, free_port, venv_bin

    workdir = Path(tempfile.mkdtemp(prefix="rackflow-bench-api-jobs-"))
    workdir.chmod(0o711)
    ensure_accounts([JOB_ACCOUNTS["alice"]])
    slurm = Slurm(workdir=workdir / "slurm", port=free_port(), cpus=slurm_cpus).start()
    home, dags, jobs_dir = workdir / "airflow", workdir / "dags", workdir / "jobs"
    dags.mkdir()
    jobs_dir.mkdir(mode=0o711)
    jobs_dir.chmod(0o711)
    shutil.copy(REPO / "dags" / "rackflow_job.py", dags)
    prepare_home(home)
    port = free_port()
    rackflow_db = f"sqlite:///{home / 'rackflow.db'}"
    env = {
        **os.environ,
        **airflow_env(REPO, home, port),  # the demo's settings: 4 worker slots, LocalExecutor, SQLite
        **slurm.env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__RACKFLOW__DATABASE_URL": rackflow_db,
        "AIRFLOW__RACKFLOW__JOBS_DIRECTORY": str(jobs_dir),
    }
    log_path = workdir / "airflow-standalone.log"
    airflow = None
    try:
        subprocess.run([venv_bin("airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run(
            [sys.executable, "-c", f"from rackflow.db.session import upgrade; upgrade({rackflow_db!r})"],
            env=env,
            check=True,
            capture_output=True,
        )
        airflow = start_standalone(env, log_path)
        if not wait_healthy(port, 300, airflow):
            raise RuntimeError(f"airflow standalone did not come up; see {log_path}")
        url = f"http://127.0.0.1:{port}"

        def session(user: str) -> requests.Session:
            s = requests.Session()
            resp = requests.post(
                f"{url}/auth/token", json={"username": user, "password": DEMO_USERS[user][1]}, timeout=60
            )
            s.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
            return s

        alice, admin = session("alice"), session("admin")
        deadline = time.monotonic() + 300
        while admin.get(f"{url}/api/v2/dags/rackflow_job", timeout=60).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"rackflow_job was not parsed in 300 s; see {log_path}")
            time.sleep(2)
        admin.patch(f"{url}/api/v2/dags/rackflow_job", json={"is_paused": False}, timeout=60)

        def post() -> str:
            resp = alice.post(f"{url}/rackflow/api/jobs", json=API_JOB, timeout=300)
            resp.raise_for_status()
            return str(resp.json()["job_id"])

        def finals(ids: set[str]) -> dict[str, str]:
            listed = alice.get(f"{url}/rackflow/api/jobs", params={"limit": 1000}, timeout=300).json()
            return {
                j["job_id"]: j["state"]
                for j in listed["jobs"]
                if j["job_id"] in ids and j["run_state"] in ("success", "failed")
            }

        # Warm-up (not timed): the first task start makes the API server build its execution API.
        warm = {post()}
        deadline = time.monotonic() + 600
        while not finals(warm):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm-up job did not finish in 600 s; see {log_path}")
            time.sleep(2)

        hook = BatchSchedulerHook(scheduler_env=slurm.env)
        logging.getLogger("airflow.task.hooks.rackflow.hooks.scheduler.BatchSchedulerHook").setLevel(
            logging.WARNING
        )
        floor = bench_floor(hook, workdir / "floor", jobs, JOB_ACCOUNTS["alice"])

        # Posted one after the other, as fast as the API answers (concurrent posts on this SQLite
        # stack: see the README's benchmark notes).
        start = time.monotonic()
        ids = {post() for _ in range(jobs)}
        posted = time.monotonic() - start
        done: dict[str, str] = {}
        deadline = start + max(900.0, jobs * 20.0)
        while len(done) < jobs and time.monotonic() < deadline:
            time.sleep(2)
            done = finals(ids)
        took = time.monotonic() - start

        tries = 0
        for job_id in ids:
            tis = admin.get(
                f"{url}/api/v2/dags/rackflow_job/dagRuns/{job_id}/taskInstances", timeout=300
            ).json()["task_instances"]
            tries += sum(int(ti["try_number"]) for ti in tis)
        log_text = log_path.read_text(errors="replace")
        starts = sum(
            1
            for line in log_text.splitlines()
            if "Worker startup parse complete" in line and any(f"run_id={i} " in line for i in ids)
        )
        names = [n for n in _squeue_names(slurm.env) if n.startswith("rf-")]
        per_name = {n: names.count(n) for n in set(names)}
        slurm_jobs = len(per_name)
        doubled = sum(c - 1 for c in per_name.values() if c > 1)
        lost = jobs + len(warm) - slurm_jobs
        states = {s: list(done.values()).count(s) for s in sorted(set(done.values()))}
        command = " ".join([str(API_JOB["executable"]), *API_JOB["arguments"]])
        print(f"job API burst: {jobs} jobs ({command}, nothing staged)")
        print("  through airflow standalone, 4 worker slots, LocalExecutor, SQLite;")
        print(f"  Slurm node with {slurm_cpus} CPUs; machine load at the end: {os.getloadavg()[0]:.1f}")
        print(f"  posted in {posted:.1f} s; all final after {took:.1f} s (goal <= 90 s for 100 jobs)")
        print(f"  final: {len(done)}/{jobs} {states}")
        print(f"  worker task starts per job: {starts / jobs:.2f} (goal <= 2; the five-task DAG before: 5+)")
        print(f"  task tries per job (/api/v2): {tries / jobs:.2f}")
        print(
            f"  Slurm jobs for {jobs + len(warm)} jobs: {slurm_jobs}; lost {max(lost, 0)}, doubled {doubled}"
        )
        print(f"  baseline (same jobs straight to Slurm, one process): {floor:.1f} s")
        print(f"  ratio all-final / baseline: {took / floor:.2f}x")
        return {"took": took, "floor": floor, "starts": starts / jobs, "lost": lost, "doubled": doubled}
    finally:
        if airflow is not None:
            stop_standalone(airflow)
        slurm.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--submits", type=int, default=40)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--api-jobs", type=int, default=100, help="job-API burst size (0: skip)")
    parser.add_argument("--slurm-cpus", type=int, default=32, help="CPUs of the burst's Slurm node")
    args = parser.parse_args()
    # Airflow reads its configuration when first imported: point it at a throwaway home first.
    _airflow_env(Path(tempfile.mkdtemp(prefix="rackflow-bench-jobs-")))
    bench_waiting(args.jobs, args.interval)
    api_rate, raw_rate = bench_submit(args.submits)
    print(f"submit throughput: job API {api_rate:.1f}/s, raw dagRuns POST {raw_rate:.1f}/s")
    print(f"  ratio: {api_rate / raw_rate:.2f}x (goal >= 0.8x)")
    if args.api_jobs:
        bench_api_jobs(args.api_jobs, args.slurm_cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
