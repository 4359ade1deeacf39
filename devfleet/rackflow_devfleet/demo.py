"""``make demo``: the demo fleet on loopback plus ``airflow standalone`` wired to it.

Everything lives under ``.rackflow/`` in the repo: ``airflow/`` is AIRFLOW_HOME (SQLite metadata DB,
the rackflow inventory DB, logs), ``fleet/`` the servers' work directories (fresh at each start).
Ctrl-C stops Airflow and every server this started, by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rackflow.core.fleet import Fleet
from rackflow_devfleet.fleet import S3_CONN_ID, DevFleet, job_accounts_env
from rackflow_devfleet.servers import wait_for_port

# Demo logins of Airflow's simple auth manager: user -> (role, password). Loopback only.
DEMO_USERS = {
    "admin": ("admin", "admin"),
    "operator": ("op", "operator"),
    "alice": ("user", "alice"),
    "bob": ("user", "bob"),
    "victor": ("viewer", "victor"),
}


# The demo's S3 intake: bucket rackflow-jobs of the demo's SeaweedFS, jobs run as rf-intake on the demo's
# Slurm, and alice sees them in the job API. Its job directories (job_base_dir) are fresh at each start,
# like the bucket: a job directory left by an earlier demo would fail the README's job0001 ("the job
# directory already exists").
DEMO_INTAKE: dict[str, object] = {
    "name": "rackflow_jobs",
    "bucket": "rackflow-jobs",
    "aws_conn_id": S3_CONN_ID,
    "run_as": "rf-intake",
    "visible_to": ["alice"],
}


def write_intake_file(path: Path, job_base_dir: Path) -> None:
    """The demo's intake file (``[rackflow] s3_intake_file``) with its job directories under ``job_base_dir``
    (JSON, which YAML reads as it is)."""
    path.write_text(json.dumps({"intakes": [{**DEMO_INTAKE, "job_base_dir": str(job_base_dir)}]}, indent=2))


# The demo's metadata DB is SQLite. Airflow's scheduler, triggerer, dag-processor, API server and task
# processes all write to it; with pysqlite's default 5 s busy timeout a burst of tasks made the
# triggerer die on "database is locked". Wait longer for the lock (Airflow imports this dict by path).
SQLITE_CONNECT_ARGS: dict[str, object] = {"timeout": 60}


def airflow_env(repo: Path, home: Path, port: int) -> dict[str, str]:
    """Airflow settings for a small machine, pointing at the repo's DAGs, fleet file and jobnets."""
    return {
        # airflow standalone starts its components as `airflow ...` from PATH: put the venv first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The demo is live from the start: power monitoring, S3 intake and the other DAGs run unpaused.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS",
        # The api-server's pool of Airflow DB connections (default 5 + 10 overflow) ran dry under a
        # burst on the 2-core demo (30 CLIs polling their jobs while 100 S3 jobs ran: requests waited 30 s
        # for a connection, then HTTP 500). A SQLite connection costs a file handle; allow more of them.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "10",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "40",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "8",
        # rackflow's rules of who may do what (README "Who may do what") on the simple auth manager.
        "AIRFLOW__CORE__AUTH_MANAGER": "rackflow.auth_manager.RackflowAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, (r, _p) in DEMO_USERS.items()),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        # Task processes reach the execution API through the base URL: without it they dial :8080.
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__RACKFLOW__FLEET_FILE": str(repo / "fleet" / "demo.yaml"),
        "AIRFLOW__RACKFLOW__JOBNETS_FOLDER": str(repo / "jobnets"),
        # The S3 intake (DEMO_INTAKE), written at each start by write_intake_file.
        "AIRFLOW__RACKFLOW__S3_INTAKE_FILE": str(home / "s3_intake.yaml"),
        "AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID": S3_CONN_ID,  # batch jobs stage s3:// through the demo S3
        # What job API users may stage: results in and out of the demo's result bucket; never the S3
        # intake's bucket (other uploaders' files), no sftp:// (ssh_fleet logs in as root), no http(s).
        "AIRFLOW__RACKFLOW__STAGING_S3_SOURCES": "rackflow-results",
        "AIRFLOW__RACKFLOW__STAGING_S3_TARGETS": "rackflow-results",
        # TES executors see the paths they name (no image, no container runtime here: README "GA4GH TES").
        "AIRFLOW__RACKFLOW__TES_CONTAINER_RUNTIME": "bwrap",
        # Batch jobs run as rf-<user>, accounts the devfleet creates (job directories: the default base).
        **job_accounts_env(),
    }


def prepare_home(home: Path) -> None:
    """AIRFLOW_HOME (airflow.cfg, the password file, both DBs): this user's only (0700), so no batch
    job account can read a secret in it."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    # WAL (a property of the DB file, kept across opens): readers no longer block the writer.
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
    passwords = {user: password for user, (_role, password) in DEMO_USERS.items()}
    password_file = home / "simple_auth_manager_passwords.json.generated"
    password_file.touch(mode=0o600)
    password_file.chmod(0o600)
    password_file.write_text(json.dumps(passwords))


def wait_healthy(port: int, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def run_demo(repo: Path, port: int = 8080, state: Path | None = None) -> int:
    state = state or repo / ".rackflow"
    home = state / "airflow"
    fleet_dir = state / "fleet"
    shutil.rmtree(fleet_dir, ignore_errors=True)
    prepare_home(home)
    env = {**os.environ, **airflow_env(repo, home, port)}
    os.environ.update(env)  # the rackflow DB helpers below read AIRFLOW_HOME too

    if wait_for_port(port, 0.5):
        print(
            f"rackflow demo: port {port} is in use; stop what runs there or set RACKFLOW_DEMO_PORT",
            flush=True,
        )
        return 1

    # SIGTERM (e.g. from `timeout` or systemd) cleans up like Ctrl-C: every `finally` below runs.
    signal.signal(signal.SIGTERM, _interrupt)
    fleet = Fleet.load(repo / "fleet" / "demo.yaml")
    print("rackflow demo: starting the demo fleet on loopback…", flush=True)
    devfleet = DevFleet(fleet, workdir=fleet_dir).start()
    airflow: subprocess.Popen | None = None
    try:
        env.update(devfleet.env())
        devfleet.write_env_file(state / "fleet.env")
        # Fresh with the fleet's work directory (removed at each start), reachable by rf-intake.
        write_intake_file(home / "s3_intake.yaml", devfleet.shared_dir("s3-jobs"))
        _sync_inventory()
        print("rackflow demo: starting airflow standalone (first start migrates the DB)…", flush=True)
        airflow = start_standalone(env, state / "airflow-standalone.log")
        if not wait_healthy(port, 240, airflow):
            print(
                f"rackflow demo: Airflow did not come up; see {state / 'airflow-standalone.log'}", flush=True
            )
            return 1
        _print_banner(port, devfleet, state)
        stop = _wait_for_signal(airflow)
        return 0 if stop else 1
    finally:
        if airflow is not None:
            stop_standalone(airflow)
        devfleet.stop()
        print("rackflow demo: stopped Airflow and the demo fleet.", flush=True)


def start_standalone(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``airflow standalone`` in its own session (so it can be stopped as a group), output to ``log_path``.

    Started through :mod:`rackflow_devfleet.standalone`, which keeps rackflow's auth manager.
    """
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [sys.executable, "-m", "rackflow_devfleet.standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_standalone(airflow: subprocess.Popen) -> None:
    """SIGTERM the whole standalone group; SIGKILL what is left after 30 s."""
    if airflow.poll() is not None:
        return
    os.killpg(airflow.pid, signal.SIGTERM)
    try:
        airflow.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(airflow.pid, signal.SIGKILL)


def _sync_inventory() -> None:
    from rackflow.db.inventory import migrate_and_sync

    print(f"rackflow demo: inventory: {migrate_and_sync()}", flush=True)


def _print_banner(port: int, devfleet: DevFleet, state: Path) -> None:
    logins = "\n".join(f"    {u:<9} {p:<9} ({r})" for u, (r, p) in DEMO_USERS.items())
    print(
        f"""
rackflow demo is up.

  Airflow UI:  http://127.0.0.1:{port}/   (rackflow pages: Plugins → rackflow)
  rackflow API: http://127.0.0.1:{port}/rackflow/docs
  Logins (user, password, role):
{logins}

  Fake hosts: {", ".join(f"{name} ({server.uri})" for name, server in devfleet.hosts.items())}
  Fleet connections for a shell: source {state / "fleet.env"}

Press Ctrl-C to stop everything.
""",
        flush=True,
    )


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_signal(airflow: subprocess.Popen) -> bool:
    """Block until Ctrl-C/SIGTERM (True) or until Airflow dies on its own (False)."""
    try:
        while airflow.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return True
    print("rackflow demo: airflow standalone exited; stopping.", file=sys.stderr, flush=True)
    return False
