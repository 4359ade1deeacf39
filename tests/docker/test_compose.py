"""Static checks of docker/: images cannot be pulled here, so the compose file is checked against the
installed Airflow 3.3 itself (its CLI commands and config options) and against the repo layout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
# Options of the Celery provider, which the image installs but the test venv does not.
CELERY_OPTIONS = {("celery", "broker_url"), ("celery", "result_backend")}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


def test_compose_has_the_official_airflow3_services(compose):
    services = compose["services"]
    assert {"postgres", "redis", "airflow-init", *AIRFLOW_SERVICES} <= set(services)
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert services["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"


def test_airflow_commands_exist_in_installed_airflow(compose):
    airflow = str(Path(sys.executable).parent / "airflow")
    for name, command in AIRFLOW_SERVICES.items():
        if command.startswith("celery"):
            continue  # provided by apache-airflow-providers-celery inside the image
        result = subprocess.run([airflow, *command.split(), "--help"], capture_output=True, text=True)
        assert result.returncode == 0, (
            f"{name}: `airflow {command}` is not an Airflow 3.3 command: {result.stderr}"
        )


def test_every_airflow_setting_is_a_known_option(compose):
    from airflow.configuration import conf

    # Every option Airflow 3.3 (and the installed providers, rackflow included) documents.
    known = {
        (section, option)
        for section, spec in conf.configuration_description.items()
        for option in spec.get("options", {})
    }
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    unknown = []
    for key in env:
        match = re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", key)
        if not match:
            continue
        section, option = match.group(1).lower(), match.group(2).lower()
        if (section, option) not in CELERY_OPTIONS | known:
            unknown.append(key)
    assert unknown == []


def test_airflow_services_share_one_environment_and_the_rackflow_db(compose):
    envs = [compose["services"][name]["environment"] for name in AIRFLOW_SERVICES]
    conns = {e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] for e in envs}
    assert len(conns) == 1 and next(iter(conns)).startswith("postgresql+psycopg2://")
    rackflow_dbs = {e["AIRFLOW__RACKFLOW__DATABASE_URL"] for e in envs}
    assert len(rackflow_dbs) == 1 and next(iter(rackflow_dbs)).endswith("@postgres/rackflow")
    assert "CREATE DATABASE rackflow" in (DOCKER / "postgres-init" / "10-rackflow.sql").read_text()


def test_volumes_and_build_context_point_into_the_repo(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", source)
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: volume source {source} is not in the repo"
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    volumes = compose["services"]["airflow-scheduler"]["volumes"]
    assert "../dags:/opt/airflow/dags" in volumes
    assert "../jobnets:/opt/airflow/jobnets" in volumes


def test_depends_on_names_existing_services(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_dockerfile_builds_on_the_pinned_airflow_and_copies_existing_paths():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert pinned
    assert f"ARG AIRFLOW_VERSION={pinned.group(1)}" in dockerfile
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            sources = [p for p in line.split()[1:-1] if not p.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"


def test_env_example_sets_every_required_variable(compose):
    text = (DOCKER / "docker-compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    example = dict(
        line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines() if "=" in line
    )
    assert required and required <= set(example)


def test_the_auth_manager_is_rackflows_by_default_and_importable(compose):
    from importlib import import_module

    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    from rackflow.auth_manager import RackflowAuthManager

    value = compose["services"]["airflow-apiserver"]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"]
    match = re.fullmatch(r"\$\{RACKFLOW_AUTH_MANAGER:-([\w.]+)\}", value)
    assert match, value
    module, _, name = match.group(1).rpartition(".")
    manager = getattr(import_module(module), name)
    assert manager is RackflowAuthManager and issubclass(manager, BaseAuthManager)
