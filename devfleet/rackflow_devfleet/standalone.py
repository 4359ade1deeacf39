"""``airflow standalone`` that keeps the configured auth manager (``python -m rackflow_devfleet.standalone``).

Airflow's standalone command forces ``SimpleAuthManager`` into the environment of every component it
starts. The demo and the test stack run :class:`rackflow.auth_manager.RackflowAuthManager` (the simple
auth manager's users and passwords with rackflow's rules on top), so this command puts the configured
``[core] auth_manager`` back before the components start; everything else is Airflow's standalone.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.cli.commands.standalone_command import StandaloneCommand
from airflow.configuration import conf


class KeepAuthManagerStandalone(StandaloneCommand):
    """Airflow's standalone command, minus its switch to the plain simple auth manager."""

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
