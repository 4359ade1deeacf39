"""rackflow in Airflow's production shape, without docker: Postgres for Airflow's metadata and for the
rackflow inventory, and api-server, scheduler, dag-processor and triggerer as separate processes
(LocalExecutor stands in for Celery workers: the same task code runs, in another process)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
import requests

from rackflow_devfleet.fleet import JOB_ACCOUNTS
from rackflow_devfleet.postgres import Postgres
from rackflow_devfleet.servers import free_port
from tests.airflow_topology import Topology, start_topology, topology_env

pytestmark = pytest.mark.slow
COMPONENTS = ("scheduler", "dag-processor", "triggerer")


@pytest.fixture(scope="module")
def topology(postgres: Postgres, devfleet, tmp_path_factory) -> Iterator[Topology]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("prod-airflow-home")
    port = free_port()
    env = topology_env(home, postgres, "local", port, {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
    topology = start_topology(home, env, port)
    try:
        for component in COMPONENTS:
            topology.start(component, [component])
        yield topology
    finally:
        topology.stop()


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
        time.sleep(0.5)
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
        time.sleep(0.5)
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
        time.sleep(0.5)
    assert state == "success", (topology.logs / "scheduler.log").read_text()[-3000:]
    assert out.read_text().strip() == "topology-ok"
    # The wait was deferred: the separate triggerer process ran the trigger (and wrote its log), no
    # worker held a slot for it. (Since rackflow_job is submit -> finish, the wait is submit's deferral,
    # ended from the trigger.)
    run_logs = topology.logs / "logs" / "dag_id=rackflow_job" / f"run_id={run_id}"
    trigger_logs = list(run_logs.glob("task_id=submit/*.log.trigger.*.log"))
    assert trigger_logs, sorted(str(p) for p in run_logs.rglob("*.log"))
    assert "Trigger fired event" in trigger_logs[0].read_text()
