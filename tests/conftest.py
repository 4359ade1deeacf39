"""Shared fixtures: an isolated AIRFLOW_HOME, the real loopback fleet, and Airflow's API as a client.

The environment is set before anything imports Airflow (its config is read at import time). Servers
are real processes started once per session; a server that cannot start fails the tests that need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rackflow_devfleet.fleet import job_accounts_env  # imports nothing of Airflow

REPO = Path(__file__).resolve().parent.parent
FLEET_FILE = REPO / "fleet" / "demo.yaml"
# Users of Airflow's simple auth manager, one per role, with fixed passwords.
USERS = {"admin": "admin", "operator": "op", "alice": "user", "bob": "user", "victor": "viewer"}
PASSWORDS = {name: f"{name}-pass" for name in USERS}

_HOME = Path(tempfile.mkdtemp(prefix="rackflow-airflow-home-"))  # 0700: no job account reads a secret
# The one directory sftp:// staging may use through ssh_fleet (the devfleet's sshd logs in on this host).
SFTP_EXCHANGE = Path(tempfile.mkdtemp(prefix="rackflow-sftp-exchange-"))
# Base of the batch jobs' directories: not world-writable, but job accounts get through (0711).
JOBS_BASE = Path(tempfile.mkdtemp(prefix="rackflow-jobs-"))
JOBS_BASE.chmod(0o711)
# Snakemake's virtualenv for the TES tests (tests/plugins/test_tes_snakemake_e2e.py builds it): on the
# PATH of TES tasks' jobs, as a site installs the tools its TES tasks call. Not under /tmp: Snakemake's
# tasks name /tmp, which bubblewrap then mounts from the job directory. Kept between sessions, named by
# the hash of its exact pins and of the interpreter it is built with: a changed pin gets a new one, a
# clean machine builds it once (in a minute or more), later sessions only check it.
SNAKEMAKE_REQUIREMENTS = REPO / "tests" / "plugins" / "snakemake-tes-requirements.txt"
SNAKEMAKE_PYTHON = "/usr/bin/python3"
SNAKEMAKE_VENV = Path("/var/tmp") / (
    "rackflow-snakemake-"
    + hashlib.sha256(
        SNAKEMAKE_REQUIREMENTS.read_bytes() + os.path.realpath(SNAKEMAKE_PYTHON).encode()
    ).hexdigest()[:16]
)
# Short status polls for the runs in this process (dag.test(): deferred tasks' triggers run inline, one
# after the other, so nothing races them); defaults: scheduler and SSH steps 5 s, VMs 2 s. The tests'
# jobs, steps and VMs end within a second or two on loopback and each wait (a trigger's first poll
# waits one interval) would idle out the rest of the default. The Airflow stacks (stack_environ())
# keep the defaults: there a trigger that fires before its deferring task process has exited meets
# Airflow's defer-exit race (issue 14), which a 1 s SSH step poll made the jobnet e2e test hit on a
# loaded machine.
IN_PROCESS_SETTINGS = {
    "AIRFLOW__RACKFLOW__SCHEDULER_POLL_INTERVAL": "0.5",
    "AIRFLOW__RACKFLOW__SSH_STEP_POLL_INTERVAL": "0.2",
    "AIRFLOW__RACKFLOW__VM_POLL_INTERVAL": "0.5",
    # dag.test() runs triggers inline and drops the XComs of a task its trigger ended: in-process
    # jobnet runs resume their SSH steps instead (the stacks keep the default, ended by the trigger).
    "AIRFLOW__RACKFLOW__SSH_STEP_END_FROM_TRIGGER": "False",
}
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # Re-parsing the dags folder writes a changed DAG at once (default: not within 30 s of the last
        # write), so a test that parses with another inventory gets its own params (power node enum).
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
        # rackflow's rules on top of the simple auth manager (see rackflow.auth_manager), as on a site.
        "AIRFLOW__CORE__AUTH_MANAGER": "rackflow.auth_manager.RackflowAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        # bob (a user) may act on the power planner; a grant on rackflow_job is ignored by design.
        "AIRFLOW__RACKFLOW__DAG_GRANTS": "bob:rackflow_power_planner,bob:rackflow_job",
        "AIRFLOW__API_AUTH__JWT_SECRET": "rackflow-tests-jwt-secret-" + "x" * 64,
        "AIRFLOW__API__SECRET_KEY": "rackflow-tests-secret-key-" + "x" * 64,
        "AIRFLOW__RACKFLOW__FLEET_FILE": str(FLEET_FILE),
        "AIRFLOW__RACKFLOW__JOBNETS_FOLDER": str(REPO / "jobnets"),
        # Staging allow-lists of the tests' site (tests/services/test_staging.py narrow them further).
        "AIRFLOW__RACKFLOW__STAGING_S3_SOURCES": "rackflow-jobs rackflow-results",
        "AIRFLOW__RACKFLOW__STAGING_S3_TARGETS": "rackflow-results",
        "AIRFLOW__RACKFLOW__STAGING_SFTP_SOURCES": f"ssh_fleet{SFTP_EXCHANGE}/",
        "AIRFLOW__RACKFLOW__STAGING_SFTP_TARGETS": f"ssh_fleet{SFTP_EXCHANGE}/",
        "AIRFLOW__RACKFLOW__JOBS_DIRECTORY": str(JOBS_BASE),
        # TES executors see their container paths (no image: bubblewrap on the node; see README).
        "AIRFLOW__RACKFLOW__TES_CONTAINER_RUNTIME": "bwrap",
        "AIRFLOW__RACKFLOW__TES_EXECUTOR_PATH": f"{SNAKEMAKE_VENV}/bin:/usr/local/bin:/usr/bin:/bin",
        # The Unix accounts the test logins' jobs run as (rf-<user>; the devfleet creates them).
        **job_accounts_env(),
        **IN_PROCESS_SETTINGS,
    }
)
(_HOME / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))


def stack_environ() -> dict[str, str]:
    """This process's environment for a separate Airflow deployment (the stacks): without the short
    in-process settings (see IN_PROCESS_SETTINGS), unless a test set one of them to something else."""
    return {k: v for k, v in os.environ.items() if IN_PROCESS_SETTINGS.get(k) != v}


def pytest_configure(config: pytest.Config) -> None:
    config.rackflow_airflow_home = _HOME  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A fresh directory job accounts can get through (0711, apart from pytest's private tmp_path):
    a base for job directories of a test."""
    path = Path(tempfile.mkdtemp(prefix="t-", dir=JOBS_BASE))
    path.chmod(0o711)
    yield path
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated Airflow metadata DB (SQLite) in the session's AIRFLOW_HOME."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return airflow_home / "airflow.db"


@pytest.fixture(scope="session")
def devfleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The whole demo fleet on free loopback ports; Airflow connections to it are in the environment."""
    from rackflow.core.fleet import Fleet
    from rackflow_devfleet.fleet import DevFleet

    fleet = DevFleet(
        Fleet.load(FLEET_FILE), workdir=tmp_path_factory.mktemp("devfleet"), free_ports=True
    ).start()
    fleet.apply_env()
    yield fleet
    fleet.stop()


@pytest.fixture(scope="session")
def rackflow_db(airflow_home: Path, devfleet: object) -> str:
    """The rackflow inventory DB, migrated and synced from the fleet file."""
    from rackflow import settings
    from rackflow.core.fleet import Fleet
    from rackflow.db.inventory import sync_fleet
    from rackflow.db.session import session_scope, upgrade

    url = settings.database_url()
    upgrade(url)
    with session_scope(url) as session:
        sync_fleet(session, Fleet.load(FLEET_FILE))
    return url


def sync_dags_folder() -> set[str]:
    """Parse the dags folder into the metadata DB as the dag-processor would; the DAG ids found.

    DAGs whose params come from the inventory (power, VMs) take the rackflow DB configured now.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    found: set[str] = set()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert bag.dags, bag.import_errors
        sync_bag_to_db(bag, bundle.name, bundle.version)
        found.update(bag.dag_ids)
    return found


@pytest.fixture(scope="session")
def api(airflow_db: Path) -> Iterator[object]:
    """Airflow's own API app (with the rackflow plugin mounted) as an in-process HTTP client."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as client:
        yield client


@pytest.fixture(scope="session")
def token(api) -> object:  # type: ignore[no-untyped-def]
    """token(user) -> a JWT from Airflow's POST /auth/token for one of USERS."""
    cache: dict[str, str] = {}

    def get(user: str) -> str:
        if user not in cache:
            resp = api.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
            assert resp.status_code == 201, resp.text
            cache[user] = resp.json()["access_token"]
        return cache[user]

    return get


@pytest.fixture(scope="session")
def auth(token) -> object:  # type: ignore[no-untyped-def]
    """auth(user) -> headers for an authenticated request."""
    return lambda user: {"Authorization": f"Bearer {token(user)}"}


class AirflowStack:
    """A running ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer) for e2e tests."""

    def __init__(self, proc: object, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def token(self, user: str) -> str:
        import requests

        resp = requests.post(
            f"{self.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["access_token"])

    def session(self, user: str) -> object:
        """A requests session authenticated as ``user`` against this stack."""
        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token(user)}"
        return session

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` and unpause it."""
        import time

        admin = self.session("admin")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = admin.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=30)  # type: ignore[attr-defined]
            if resp.status_code == 200:
                admin.patch(f"{self.url}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30)  # type: ignore[attr-defined]
                return
            time.sleep(0.5)
        raise AssertionError(f"DAG {dag_id} was not parsed within {timeout}s; see {self.log}")


@pytest.fixture(scope="session")
def airflow_stack(
    rackflow_db: str, devfleet: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowStack]:
    """Airflow standalone on a free loopback port, wired to the devfleet and the session's rackflow DB.

    It has its own AIRFLOW_HOME and metadata DB: a live scheduler sharing the DB that ``dag.test()``
    runs use would pick up and kill those runs' task instances.
    """
    import signal
    import urllib.request

    from rackflow_devfleet.servers import free_port

    port = free_port()
    home = tmp_path_factory.mktemp("stack-airflow-home")
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    env = {
        **stack_environ(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__RACKFLOW__DATABASE_URL": rackflow_db,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    }
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    log = home / f"standalone-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            # airflow standalone, keeping rackflow's auth manager (plain `airflow standalone` drops it)
            [sys.executable, "-m", "rackflow_devfleet.standalone"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    import time

    deadline = time.monotonic() + 180
    healthy = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as r:
                healthy = r.status == 200
        except OSError:
            pass
        if healthy:
            break
        time.sleep(0.25)
    if not healthy:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"airflow standalone did not become healthy; log:\n{log.read_text()[-4000:]}")
    yield AirflowStack(proc, port, log)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One throwaway PostgreSQL for the production-topology tests (each makes its own databases)."""
    from rackflow_devfleet.postgres import Postgres

    server = Postgres(workdir=Path(tempfile.mkdtemp(prefix="rackflow-pg-"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (no browser download).

    Module scope: Playwright's sync API keeps an asyncio loop running in the main thread while it is
    open, which would make every later ``asyncio.run()`` (trigger tests) fail.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


SCREENSHOTS = REPO / "test-output" / "screenshots"


def login_page(browser, stack: AirflowStack, user: str, color_scheme: str = "light"):  # type: ignore[no-untyped-def]
    """A new browser page logged in to ``stack`` as ``user`` through Airflow's login form.

    ``color_scheme`` ("light" or "dark") is what the browser prefers: Airflow's UI follows it.
    """
    page = browser.new_page(viewport={"width": 1400, "height": 900}, color_scheme=color_scheme)
    page.goto(f"{stack.url}/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{stack.url}/", timeout=30_000)
    return page


@pytest.fixture(scope="session")
def power_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The power tests' own 3-node fleet (Redfish x2, IPMI) and inventory DB: see tests/power_fleet.py."""
    from tests.power_fleet import PowerFleet

    fleet = PowerFleet(workdir=tmp_path_factory.mktemp("power-fleet")).start()
    yield fleet
    fleet.stop()


@pytest.fixture
def own_slurm() -> Iterator[object]:
    """A Slurm (with accounting) of this test's own, whose controller can lose its job records; in a
    directory other Unix users can reach (its config and munge socket), unlike pytest's tmp_path."""
    from rackflow_devfleet.fleet import JOB_ACCOUNTS, ensure_accounts
    from rackflow_devfleet.servers import Slurm

    ensure_accounts(list(JOB_ACCOUNTS.values()))  # the Unix accounts jobs run as
    workdir = Path(tempfile.mkdtemp(prefix="rf-slurm-"))
    workdir.chmod(0o755)
    server = Slurm(workdir=workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
