"""Shared fixtures: an isolated AIRFLOW_HOME, the real loopback fleet, and Airflow's API as a client.

The environment is set before anything imports Airflow (its config is read at import time). Servers
are real processes started once per session; a server that cannot start fails the tests that need it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLEET_FILE = REPO / "fleet" / "demo.yaml"
# Users of Airflow's simple auth manager, one per role, with fixed passwords.
USERS = {"admin": "admin", "operator": "op", "alice": "user", "bob": "user", "victor": "viewer"}
PASSWORDS = {name: f"{name}-pass" for name in USERS}

_HOME = Path(tempfile.mkdtemp(prefix="rackflow-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__API_AUTH__JWT_SECRET": "rackflow-tests-jwt-secret-" + "x" * 64,
        "AIRFLOW__API__SECRET_KEY": "rackflow-tests-secret-key-" + "x" * 64,
        "AIRFLOW__RACKFLOW__FLEET_FILE": str(FLEET_FILE),
        "AIRFLOW__RACKFLOW__JOBNETS_FOLDER": str(REPO / "jobnets"),
    }
)
(_HOME / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))


def pytest_configure(config: pytest.Config) -> None:
    config.rackflow_airflow_home = _HOME  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


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
    from rackflow.devfleet.fleet import DevFleet

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
