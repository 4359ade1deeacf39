"""Airflow in its production shape for the topology tests: each component (api-server, scheduler,
dag-processor, triggerers, Celery workers) a separate process on one Postgres metadata DB, which a test
can SIGKILL and restart by name, as a machine loss or an OOM kill would end it.

Every component runs rackflow's auth manager and the session's fleet (the environment of
tests/conftest.py); the rackflow inventory lives in a Postgres database of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from rackflow_devfleet.postgres import Postgres
from rackflow_devfleet.servers import wait_for_port
from tests.conftest import PASSWORDS, stack_environ

BIN = Path(sys.executable).parent
# The process title of a running task (Airflow's task runner sets it): "airflow worker -- <ti uuid>".
TASK_TITLE = "airflow worker -- "


@dataclass
class Topology:
    """The components of one Airflow deployment, started from ``home`` with ``env``."""

    home: Path
    env: dict[str, str]
    port: int
    argvs: dict[str, list[str]] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Airflow's job row (table ``job``) of each component started with start_job: what the triggerers'
    # claims on triggers (``trigger.triggerer_id``) point at.
    job_ids: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.home

    def start(self, name: str, argv: Sequence[str] | None = None) -> subprocess.Popen:
        """Start component ``name`` (``airflow <argv>``; the argv it had before when restarted)."""
        if argv is not None:
            self.argvs[name] = list(argv)
        with open(self.home / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [str(BIN / "airflow"), *self.argvs[name]],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a kill takes its task processes too
            )
        self.procs[name] = proc
        return proc

    def start_job(self, name: str, job_type: str, argv: Sequence[str] | None = None) -> int:
        """Start component ``name`` and wait for the running ``job_type`` row it registers (its id)."""
        known = {row[0] for row in self.sql("SELECT id FROM job WHERE job_type = :t", t=job_type)}
        proc = self.start(name, argv)

        def registered() -> int | None:
            assert proc.poll() is None, f"{name} exited: {self.log_tail(name)}"
            rows = self.sql("SELECT id FROM job WHERE job_type = :t AND state = 'running'", t=job_type)
            new = sorted({row[0] for row in rows} - known)
            return new[-1] if new else None

        self.job_ids[name] = wait_until(registered, 180, f"{name} registers as a running {job_type}")
        return self.job_ids[name]

    def kill(self, name: str) -> None:
        """SIGKILL component ``name`` and every process it started (its task processes too)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no {path})"

    def session(self, user: str) -> requests.Session:
        resp = requests.post(
            f"{self.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=60
        )
        assert resp.status_code == 201, resp.text
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        return session

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed ``dag_id``, then unpause it."""
        admin = self.session("admin")
        deadline = time.monotonic() + timeout
        while admin.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=60).status_code != 200:
            assert time.monotonic() < deadline, f"{dag_id} was never parsed: {self.log_tail('dag-processor')}"
            time.sleep(0.5)
        resp = admin.patch(f"{self.url}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=60)
        assert resp.status_code == 200, resp.text

    def task_processes(self, name: str) -> list[psutil.Process]:
        """The task processes component ``name`` runs now (a worker's, or a LocalExecutor scheduler's)."""
        proc = self.procs[name]
        if proc.poll() is not None:
            return []
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if " ".join(child.cmdline()).startswith(TASK_TITLE):
                    found.append(child)
        return found

    def sql(self, query: str, **params: Any) -> list[Any]:
        """Rows of ``query`` on the metadata DB (what the scheduler and triggerers see)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(query), params).all())
        finally:
            engine.dispose()


def write_intake_file(
    home: Path, name: str, bucket: str, *, scheduler_poll_interval: float, prefix: str
) -> tuple[Path, Path]:
    """A topology's S3 intake file (``home/s3_intake.yaml``): intake ``name`` on ``bucket`` of the
    devfleet's S3, its jobs run as the intake account in a fresh job base (``prefix``: its temp name)
    that only root writes. Returns the file and the job base (the caller removes it)."""
    import tempfile

    import yaml

    from rackflow_devfleet.fleet import INTAKE_ACCOUNT, S3_CONN_ID

    job_base = Path(tempfile.mkdtemp(prefix=prefix))
    job_base.chmod(0o711)  # only root writes it; the intake's run_as account gets through
    intake = {
        "name": name,
        "bucket": bucket,
        "aws_conn_id": S3_CONN_ID,
        "run_as": INTAKE_ACCOUNT,
        "job_base_dir": str(job_base),
        "poll_interval": 0.5,
        "scheduler_poll_interval": scheduler_poll_interval,
    }
    intake_file = home / "s3_intake.yaml"
    intake_file.write_text(yaml.safe_dump({"intakes": [intake]}))
    return intake_file, job_base


def topology_env(
    home: Path, postgres: Postgres, tag: str, port: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of every component: this process's (the session's fleet and auth settings, see
    tests.conftest.stack_environ),
    metadata DB ``airflow_<tag>`` and rackflow DB ``rackflow_<tag>`` on ``postgres``."""
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    return {
        **stack_environ(),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.create_database(f"airflow_{tag}"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__RACKFLOW__DATABASE_URL": postgres.create_database(f"rackflow_{tag}"),
        **(extra or {}),
    }


def start_topology(home: Path, env: dict[str, str], port: int) -> Topology:
    """Migrate both databases and start the api-server; the caller starts the other components."""
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]
    inventory = subprocess.run(
        [sys.executable, "-m", "rackflow.db.inventory"], env=env, capture_output=True, text=True
    )
    assert inventory.returncode == 0, inventory.stderr[-3000:]
    topology = Topology(home=home, env=env, port=port)
    api = topology.start("api-server", ["api-server", "--port", str(port), "--host", "127.0.0.1"])
    if not wait_for_port(port, 180, api):
        topology.stop()
        raise AssertionError(f"api-server did not start: {topology.log_tail('api-server')}")
    return topology


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something true (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)
