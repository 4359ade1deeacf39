"""``airflow standalone`` that keeps the configured auth manager (``python -m rackflow_devfleet.standalone``).

Airflow's standalone command forces ``SimpleAuthManager`` into the environment of every component it
starts. The demo and the test stack run :class:`rackflow.auth_manager.RackflowAuthManager` (the simple
auth manager's users and passwords with rackflow's rules on top), so this command puts the configured
``[core] auth_manager`` back before the components start. It also starts the scheduler only once the
API server listens: standalone starts every component at once, and a task the scheduler queues before
then (the power monitor's first run, due at once) fails on the task SDK's "Connection refused" to the
execution API. Everything else is Airflow's standalone.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from airflow.cli.commands.standalone_command import StandaloneCommand, SubCommand
from airflow.configuration import conf

API_SERVER_WAIT_S = 600.0
"""Longest the scheduler waits for the API server; then it starts anyway (and its tasks may fail)."""


class SchedulerAfterApiServer(SubCommand):
    """Standalone's scheduler component, started once the API server's port accepts connections."""

    def __init__(self, parent: StandaloneCommand, name: str, command: list[str], env: dict[str, str]):
        super().__init__(parent, name, command, env)
        self.stopping = threading.Event()

    def run(self) -> None:
        port = conf.getint("api", "port")
        deadline = time.monotonic() + API_SERVER_WAIT_S
        while not self.parent.port_open(port) and time.monotonic() < deadline:
            if self.stopping.wait(0.5):
                return
        if not self.stopping.is_set():
            super().run()

    def stop(self) -> None:
        self.stopping.set()
        super().stop()


class _Components(dict[str, SubCommand]):
    """Standalone's table of components, with the scheduler swapped for :class:`SchedulerAfterApiServer`."""

    def __setitem__(self, name: str, command: SubCommand) -> None:
        if name == "scheduler" and not isinstance(command, SchedulerAfterApiServer):
            command = SchedulerAfterApiServer(command.parent, command.name, command.command, command.env)
        super().__setitem__(name, command)


class KeepAuthManagerStandalone(StandaloneCommand):
    """Airflow's standalone command, minus its switch to the plain simple auth manager, with the
    scheduler started after the API server."""

    def __init__(self) -> None:
        super().__init__()
        self.subcommands = _Components()

    def calculate_env(self) -> dict[str, Any]:
        configured = conf.get("core", "auth_manager")
        env: dict[str, Any] = super().calculate_env()
        env["AIRFLOW__CORE__AUTH_MANAGER"] = os.environ["AIRFLOW__CORE__AUTH_MANAGER"] = configured
        return env


def main() -> None:
    # As the ``airflow`` command does before any subcommand: write airflow.cfg (with its generated
    # fernet key and JWT secret) once, here. Without it every component standalone starts generates
    # its own secrets in memory on a first start, and tasks and triggers fail on each other's tokens
    # ("Invalid auth token", undecryptable trigger kwargs).
    from airflow.configuration import write_default_airflow_configuration_if_needed

    write_default_airflow_configuration_if_needed()
    KeepAuthManagerStandalone().run()


if __name__ == "__main__":
    main()
