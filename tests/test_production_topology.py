"""rackflow in Airflow's production shape, without docker: Postgres for Airflow's metadata and for the
rackflow inventory, and api-server, scheduler, dag-processor and triggerer as separate processes
(LocalExecutor stands in for Celery workers: the same task code runs, in another process)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from rackflow_devfleet.fleet import JOB_ACCOUNTS
from rackflow_devfleet.postgres import Postgres
from rackflow_devfleet.servers import free_port, wait_for_port
from tests.conftest import PASSWORDS, USERS

pytestmark = pytest.mark.slow
COMPONENTS = ("scheduler", "dag-processor", "triggerer")


@dataclass
class Topology:
    url: str
    env: dict[str, str]
    logs: Path

    def session(self, user: str) -> requests.Session:
        resp = requests.post(
            f"{self.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30
        )
        assert resp.status_code == 201, resp.text
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        return session


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres(workdir=Path(tempfile.mkdtemp(prefix="rackflow-pg-"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def topology(postgres: Postgres, devfleet, tmp_path_factory) -> Iterator[Topology]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("prod-airflow-home")
    (home / "simple_auth_manager_passwords.json.generated").write_text(__import__("json").dumps(PASSWORDS))
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.create_database("airflow"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__RACKFLOW__DATABASE_URL": postgres.create_database("rackflow"),
    }
    airflow = str(bin_dir / "airflow")
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "rackflow.db.inventory"], env=env, check=True, capture_output=True)
    procs = []
    for argv in (["api-server", "--port", str(port), "--host", "127.0.0.1"], *[[c] for c in COMPONENTS]):
        log = open(home / f"{argv[0]}.log", "ab")  # noqa: SIM115 - owned by the child
        procs.append(
            subprocess.Popen(
                [airflow, *argv], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        log.close()
    try:
        assert wait_for_port(port, 120, procs[0]), (home / "api-server.log").read_text()[-3000:]
        yield Topology(url=f"http://127.0.0.1:{port}", env=env, logs=home)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_components_run_as_separate_processes_on_postgres(topology: Topology):
    deadline = time.monotonic() + 120
    health: dict = {}
    while time.monotonic() < deadline:
        health = requests.get(f"{topology.url}/api/v2/monitor/health", timeout=10).json()
        if all(
            health.get(c, {}).get("status") == "healthy"
            for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        ):
            break
        time.sleep(2)
    assert health["metadatabase"]["status"] == "healthy"
    for component in ("scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", (component, health)


def test_rackflow_inventory_lives_in_postgres(topology: Topology):
    from sqlalchemy import create_engine, text

    engine = create_engine(topology.env["AIRFLOW__RACKFLOW__DATABASE_URL"])
    with engine.connect() as conn:
        hosts = conn.execute(text("SELECT name FROM rackflow_host ORDER BY name")).scalars().all()
    engine.dispose()
    assert hosts == ["host-a", "host-b", "host-c"]


def test_batch_job_runs_through_rest_api_with_wait_in_separate_triggerer(topology: Topology, shared_tmp):
    admin = topology.session("admin")
    deadline = time.monotonic() + 120
    while admin.get(f"{topology.url}/api/v2/dags/rackflow_job", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "rackflow_job was never parsed by the dag-processor"
        time.sleep(2)
    admin.patch(f"{topology.url}/api/v2/dags/rackflow_job", json={"is_paused": False}, timeout=30)

    # The job runs as alice's Unix account: it writes where that account may (not pytest's tmp_path).
    writable = shared_tmp / "out"
    writable.mkdir()
    shutil.chown(writable, JOB_ACCOUNTS["alice"])
    out = writable / "topology.out"
    job = {"executable": "/bin/sh", "arguments": ["-c", f"sleep 3; echo topology-ok > {out}"]}
    # alice submits through the job API (rackflow's auth manager keeps rackflow_job runs in /api/v2 to
    # admins); the run it triggers is followed as the admin.
    alice = topology.session("alice")
    resp = alice.post(f"{topology.url}/rackflow/api/jobs", json=job, timeout=30)
    assert resp.status_code == 201, resp.text
    run_id = resp.json()["job_id"]

    deadline = time.monotonic() + 240
    state = ""
    while time.monotonic() < deadline:
        state = admin.get(f"{topology.url}/api/v2/dags/rackflow_job/dagRuns/{run_id}", timeout=30).json()[
            "state"
        ]
        if state in ("success", "failed"):
            break
        time.sleep(2)
    assert state == "success", (topology.logs / "scheduler.log").read_text()[-3000:]
    assert out.read_text().strip() == "topology-ok"
    # The wait was deferred: the separate triggerer process ran the trigger (and wrote its log), no
    # worker held a slot for it.
    run_logs = topology.logs / "logs" / "dag_id=rackflow_job" / f"run_id={run_id}"
    trigger_logs = list(run_logs.glob("task_id=wait/*.log.trigger.*.log"))
    assert trigger_logs, sorted(str(p) for p in run_logs.rglob("*.log"))
    assert "Trigger fired event" in trigger_logs[0].read_text()
