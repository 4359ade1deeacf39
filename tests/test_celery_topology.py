"""rackflow on more than one machine, and through crashes: CeleryExecutor with a real Redis broker, a
Postgres metadata DB, two Celery workers and two triggerers, each a separate process (as each would be
on its own machine), running jobs on the session's real Slurm and S3 intake bucket (SeaweedFS).

Two front doors feed every burst: the job API (``POST /rackflow/api/jobs``) and the S3 intake (a job
folder dropped into the bucket). Whatever is killed, every job must end exactly once: one Slurm job per
job (counted in Slurm's accounting by the job's scheduler name), its work done once, and the right final
status in the job API and in the bucket.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from rackflow_devfleet.fleet import JOB_ACCOUNTS
from rackflow_devfleet.postgres import Postgres
from rackflow_devfleet.servers import Redis, free_port
from tests.airflow_topology import (
    TASK_TITLE,
    Topology,
    start_topology,
    topology_env,
    wait_until,
    write_intake_file,
)

pytestmark = pytest.mark.slow

INTAKE = "topo_celery"
INTAKE_DAG = f"s3_intake_{INTAKE}"
JOB_DAG = "rackflow_job"
WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
FINAL_S3 = ("COMPLETED", "FAILED", "CANCELED")
FINAL_API = ("COMPLETED", "FAILED", "CANCELED")
JOB_SECONDS = 3  # each job's Slurm run: long enough to be killed around, short for two Slurm CPUs
BURST_TIMEOUT = 360  # each test's own timeout (pytest-timeout) is longer: the diagnosis is printed


@dataclass
class Celery:
    topology: Topology
    bucket: str
    s3: Any  # boto3 client of the devfleet's SeaweedFS
    slurm_env: dict[str, str]
    out_dir: Path  # where job API jobs (alice's account) write what they did

    def restart_missing(self) -> None:
        """Start again every component that is not running (a test before killed it)."""
        for name, proc in list(self.topology.procs.items()):
            if proc.poll() is not None:
                self.topology.start(name)


@pytest.fixture(scope="module")
def redis_broker() -> Iterator[Redis]:
    workdir = Path(tempfile.mkdtemp(prefix="rackflow-redis-"))
    server = Redis(workdir=workdir).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def celery(postgres: Postgres, redis_broker: Redis, devfleet, request) -> Iterator[Celery]:  # type: ignore[no-untyped-def]
    # Not under pytest's basetemp: the components' logs must outlive the session when a test fails
    # (pytest keeps only the last few basetemps); removed when every test of the module passed.
    home = Path(tempfile.mkdtemp(prefix="rackflow-celery-home-"))
    failed_before = request.session.testsfailed
    port = free_port()
    s3 = devfleet.s3.client()
    bucket = f"rf-topo-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    intake_file, job_base = write_intake_file(
        home, INTAKE, bucket, scheduler_poll_interval=1, prefix="rackflow-topo-s3-"
    )
    metadata = postgres.url("airflow_celery")
    env = topology_env(
        home,
        postgres,
        "celery",
        port,
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CELERY__BROKER_URL": redis_broker.url(0),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            # A task a killed worker had taken but not acknowledged goes back to the queue after this.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "60",
            # A task whose process is gone (its worker was killed) is failed (and retried) after this...
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            # ... and one queued to a worker that never ran it is queued again.
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
            # A killed scheduler's or triggerer's work is adopted by the others within seconds.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__RACKFLOW__S3_INTAKE_FILE": str(intake_file),
        },
    )
    out_dir = Path(tempfile.mkdtemp(prefix="rackflow-topo-out-"))
    out_dir.chmod(0o755)
    shutil.chown(out_dir, JOB_ACCOUNTS["alice"])
    topology = start_topology(home, env, port)
    try:
        topology.start("scheduler", ["scheduler"])
        topology.start("dag-processor", ["dag-processor"])
        for name in WORKERS:
            topology.start(
                name,
                [
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{name}@%h",
                    "--concurrency",
                    "2",
                    "--skip-serve-logs",
                    "--without-mingle",
                    "--without-gossip",
                ],
            )
        for name in WORKERS:
            wait_until(lambda n=name: _worker_ready(topology, n), 180, f"{name} ready")
        for name in TRIGGERERS:  # one after the other: each one's job row tells which it is
            topology.start_job(name, "TriggererJob", ["triggerer", "--skip-serve-logs"])
        topology.wait_for_dag(JOB_DAG)
        topology.wait_for_dag(INTAKE_DAG)
        yield Celery(topology, bucket, s3, dict(devfleet.slurm.env), out_dir)
    finally:
        topology.stop()
        subprocess.run(["rm", "-rf", "--", str(job_base), str(out_dir)], check=False)
        if request.session.testsfailed == failed_before:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"the Celery topology's logs: {home}")


def _worker_ready(topology: Topology, name: str) -> bool:
    assert topology.procs[name].poll() is None, f"{name} exited: {topology.log_tail(name)}"
    return f"{name}@" in (log := topology.log_tail(name, 10**6)) and " ready." in log


# --- a burst through both front doors -------------------------------------------------------------


@dataclass
class Burst:
    """Jobs sent at once through the job API and the S3 intake, and how each ended."""

    celery: Celery
    tag: str
    api_jobs: dict[str, Path] = field(default_factory=dict)  # job id -> the file its one run appends to
    s3_prefixes: list[str] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now() - timedelta(seconds=5))

    def send(self, n_api: int, n_s3: int) -> None:
        topo, alice = self.celery.topology, self.celery.topology.session("alice")
        for i in range(n_s3):
            prefix = f"{self.tag}{i:02d}{uuid.uuid4().hex[:4]}"
            script = f"#!/bin/bash\n#SBATCH --ntasks=1\nsleep {JOB_SECONDS}\ncat input.dat > out.txt\n"
            self.celery.s3.put_object(Bucket=self.celery.bucket, Key=f"{prefix}/aws-job-run.sh", Body=script)
            self.celery.s3.put_object(
                Bucket=self.celery.bucket, Key=f"{prefix}/input.dat", Body=f"hello {prefix}\n".encode()
            )
            self.celery.s3.put_object(
                Bucket=self.celery.bucket, Key=f"{prefix}/aws-job-stat.txt", Body=b"FILE_UPLOAD\n"
            )
            self.s3_prefixes.append(prefix)
        for i in range(n_api):
            ran = self.celery.out_dir / f"{self.tag}-{i}"
            job = {"executable": "/bin/sh", "arguments": ["-c", f"sleep {JOB_SECONDS}; echo ran >> {ran}"]}
            resp = alice.post(f"{topo.url}/rackflow/api/jobs", json=job, timeout=60)
            assert resp.status_code == 201, resp.text
            self.api_jobs[resp.json()["job_id"]] = ran

    @property
    def since(self) -> str:
        return self.started.strftime("%Y-%m-%dT%H:%M:%S")

    def s3_status(self, prefix: str) -> str:
        body = self.celery.s3.get_object(Bucket=self.celery.bucket, Key=f"{prefix}/aws-job-stat.txt")["Body"]
        return str(body.read().decode())

    def api_job(self, job_id: str) -> dict[str, Any]:
        resp = self.celery.topology.session("admin").get(
            f"{self.celery.topology.url}/rackflow/api/jobs/{job_id}", timeout=60
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def pending(self) -> list[str]:
        waiting = [
            p for p in self.s3_prefixes if self.s3_status(p).split("\n")[0].split(" ")[0] not in FINAL_S3
        ]
        admin = self.celery.topology.session("admin")
        for job_id in self.api_jobs:
            job = admin.get(f"{self.celery.topology.url}/rackflow/api/jobs/{job_id}", timeout=60).json()
            if job.get("state") not in FINAL_API or job.get("run_state") not in ("success", "failed"):
                waiting.append(job_id)
        return waiting

    def wait_final(self, timeout: float = BURST_TIMEOUT) -> None:
        try:
            wait_until(lambda: not self.pending(), timeout, f"every job of burst {self.tag} final", every=3)
        except AssertionError as exc:
            states = {p: self.s3_status(p).strip() for p in self.s3_prefixes}
            states.update({j: self.api_job(j)["state"] for j in self.api_jobs})
            raise AssertionError(f"{exc}; states: {states}; {self.diagnosis()}") from exc

    def slurm_jobs(self) -> list[tuple[str, str, str]]:
        """(id, name, state) of every Slurm job accounted since the burst started."""
        out = subprocess.run(
            [
                "sacct",
                "-X",
                "-n",
                "-P",
                "-a",
                "-o",
                "JobID,JobName,State",
                "-S",
                self.started.strftime("%Y-%m-%dT%H:%M:%S"),
            ],
            env={**os.environ, **self.celery.slurm_env},
            capture_output=True,
            text=True,
            check=True,
        )
        return [tuple(line.split("|")[:3]) for line in out.stdout.splitlines() if line]  # type: ignore[misc]

    def check_exactly_once(self, killed: list[RunningTask]) -> None:
        """Every job of either front door: final and right, one Slurm job, its work done once.

        Strict: a job lost or doubled fails the test, whatever was killed (the job DAG's ``submit``
        and ``finish`` and the intake's ``accept`` and ``wait`` retry a try lost to a killed process
        and go on from the job record). The failure names the task processes the test killed.
        """
        problems: dict[str, list[str]] = {}
        slurm = self.slurm_jobs()
        for prefix in self.s3_prefixes:
            found = problems.setdefault(prefix, [])
            status = self.s3_status(prefix)
            ours = [j for j in slurm if j[1].startswith(f"rf_s3_{prefix}_")]
            if not status.startswith("COMPLETED"):
                found.append(f"S3 job {prefix}: status {status.strip()!r}")
            if len(ours) != 1:
                found.append(f"S3 job {prefix}: {len(ours)} Slurm jobs {ours}")
            else:
                got = self.celery.s3.get_object(Bucket=self.celery.bucket, Key=f"{prefix}/out.txt")
                if (body := got["Body"].read()) != f"hello {prefix}\n".encode():
                    found.append(f"S3 job {prefix}: out.txt {body!r}")
        for job_id, ran in self.api_jobs.items():
            found = problems.setdefault(job_id, [])
            job = self.api_job(job_id)
            name = Path(job["properties"].get("workdir") or "?").name
            ours = [j for j in slurm if j[1] == name]
            if job["state"] != "COMPLETED" or job["run_state"] != "success":
                found.append(f"API job {job_id}: {job['state']}/{job['run_state']}: {job.get('message')}")
            if len(ours) != 1:
                found.append(f"API job {job_id} ({name}): {len(ours)} Slurm jobs {ours}")
            runs = ran.read_text().count("ran") if ran.exists() else 0
            if runs != 1:
                found.append(f"API job {job_id}: its command ran {runs} times")
        lines = [line for found in problems.values() for line in found]
        kills = "; ".join(map(str, killed)) or "none"
        assert not lines, "\n".join(lines) + f"\nkilled task processes: {kills}\n" + self.diagnosis()

    def diagnosis(self) -> str:
        topo = self.celery.topology
        failed = topo.sql(
            "SELECT dag_id, run_id, task_id, state, try_number FROM task_instance "
            "WHERE state NOT IN ('success', 'skipped') AND start_date >= :since "
            "ORDER BY dag_id, run_id, task_id",
            since=self.started.astimezone(UTC),
        )
        return f"task instances not done: {failed}; logs in {topo.home}"


@dataclass
class RunningTask:
    worker: str
    process: Any  # psutil.Process of the task runner
    key: tuple[str, str, str, int]  # dag_id, task_id, run_id, try_number

    def __str__(self) -> str:
        return f"pid {self.process.pid} {self.key} on {self.worker}"


def running_tasks(celery: Celery, workers: tuple[str, ...] = WORKERS) -> list[RunningTask]:
    """The task processes that run now on ``workers``."""
    found = []
    for worker in workers:
        for process in celery.topology.task_processes(worker):
            try:
                ti_id = " ".join(process.cmdline()).removeprefix(TASK_TITLE).strip()
            except psutil.Error:
                continue
            rows = celery.topology.sql(
                "SELECT dag_id, task_id, run_id, try_number FROM task_instance WHERE CAST(id AS TEXT) = :id",
                id=ti_id,
            )
            if rows:
                found.append(RunningTask(worker, process, tuple(rows[0])))  # type: ignore[arg-type]
    return found


def running_task(celery: Celery, dag_id: str) -> RunningTask | None:
    """A task of ``dag_id`` whose process runs now on one of the workers (None if there is none)."""
    return next((t for t in running_tasks(celery) if t.key[0] == dag_id), None)


@pytest.mark.timeout(600)
def test_celery_workers_and_triggerers_lose_and_double_nothing_when_one_of_each_is_killed(celery: Celery):
    topo = celery.topology
    burst = Burst(celery, tag="c")
    t0 = time.monotonic()
    burst.send(n_api=3, n_s3=3)

    # A worker while it runs a task (its task processes die with it, as with a lost machine).
    # A worker while it runs a task of a job-API job (its task processes die with it, as with a lost
    # machine): a job the task was starting or finishing must still end once and right.
    task = wait_until(lambda: running_task(celery, JOB_DAG), 180, "a worker runs a job's task", every=0.2)
    worker = task.worker
    killed = running_tasks(celery, (worker,))
    topo.kill(worker)
    print(f"t+{time.monotonic() - t0:.1f}s SIGKILL {worker} running {', '.join(map(str, killed))}")

    # A triggerer while it holds triggers (the jobs' waits, the intake's watcher).
    def loaded_triggerer() -> str | None:
        for name in TRIGGERERS:
            held = topo.sql("SELECT count(*) FROM trigger WHERE triggerer_id = :j", j=topo.job_ids[name])
            if held[0][0]:
                return name
        return None

    triggerer = wait_until(loaded_triggerer, 180, "a triggerer holds triggers", every=0.2)
    topo.kill(triggerer)
    print(f"t+{time.monotonic() - t0:.1f}s SIGKILL {triggerer}")

    burst.wait_final()
    print(f"t+{time.monotonic() - t0:.1f}s all {len(burst.api_jobs) + len(burst.s3_prefixes)} jobs final")
    survivor = next(w for w in WORKERS if w != worker)
    assert "Executing workload in Celery" in topo.log_tail(survivor, 10**7), f"{survivor} ran no task"
    burst.check_exactly_once(killed)


# --- chaos ----------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_chaos_kills_of_scheduler_triggerer_and_a_task_end_every_job_exactly_once(celery: Celery):
    """SIGKILL at seeded random moments of a burst the scheduler, a triggerer and a running task
    process of each front door (restarting the scheduler and the triggerer); set
    RACKFLOW_CHAOS_SEED to replay a run's plan."""
    topo = celery.topology
    celery.restart_missing()
    seed = int(os.environ.get("RACKFLOW_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    plan = sorted(
        (round(rng.uniform(2, 25), 1), victim, round(rng.uniform(1, 6), 1))
        for victim in ("scheduler", rng.choice(TRIGGERERS), JOB_DAG, INTAKE_DAG)
    )
    print(f"chaos seed {seed}; plan (t, victim, restart after): {plan}")
    log: list[str] = []
    killed: list[RunningTask] = []
    errors: list[BaseException] = []
    burst = Burst(celery, tag="x")
    t0 = time.monotonic()

    def strike(at: float, victim: str, restart_after: float) -> None:
        """One kill of the plan at its moment (each on its own thread: a kill that waits for a task
        to run never holds back the others)."""
        try:
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            if victim in (JOB_DAG, INTAKE_DAG):  # a task process of one front door's jobs
                # A job's tasks are short (submit defers within seconds, finish takes seconds): when
                # none of this front door runs any more, there is no task to kill, and the plan says so.
                try:
                    task = wait_until(
                        lambda: running_task(celery, victim), 90, f"a task of {victim} runs", every=0.2
                    )
                except AssertionError:
                    log.append(f"t+{time.monotonic() - t0:.1f}s no task of {victim} ran to kill")
                    return
                task.process.kill()
                killed.append(task)
                log.append(f"t+{time.monotonic() - t0:.1f}s SIGKILL task process {task}")
                return
            topo.kill(victim)
            log.append(f"t+{time.monotonic() - t0:.1f}s SIGKILL {victim}")
            time.sleep(restart_after)
            topo.start(victim)
            log.append(f"t+{time.monotonic() - t0:.1f}s restarted {victim}")
        except BaseException as exc:
            errors.append(exc)

    killers = [threading.Thread(target=strike, args=kill, name=f"chaos-{kill[1]}") for kill in plan]
    for killer in killers:
        killer.start()
    burst.send(n_api=3, n_s3=3)
    for killer in killers:
        killer.join(180)
    log.sort(key=lambda line: float(line.split("s ", 1)[0].removeprefix("t+")))
    print("\n".join(log))
    assert not errors, f"seed {seed}: the chaos plan could not run: {errors[0]!r}; {log}"
    assert not any(k.is_alive() for k in killers), f"seed {seed}: the chaos plan did not finish: {log}"
    try:
        burst.wait_final()
        burst.check_exactly_once(killed)
    except AssertionError as exc:
        raise AssertionError(f"chaos seed {seed}, kills {log}:\n{exc}") from exc
    print(f"t+{time.monotonic() - t0:.1f}s seed {seed}: every job ended exactly once")
