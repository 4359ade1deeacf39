"""Drive a BMC's power through IPMI (pyghmi)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

# pyghmi's set_power states per action rackflow asks for.
POWER_ACTIONS = {"on": "on", "soft_off": "shutdown", "hard_off": "off"}


class IpmiHook(BaseHook):
    """
    Read and change a host's power through its IPMI BMC (IPMI 2.0 over LAN, RMCP+).

    Connection: host and port (623) of the BMC, login and password.

    :param ipmi_conn_id: Airflow connection of the BMC.
    :param timeout: seconds to wait for the BMC to answer.
    """

    conn_name_attr = "ipmi_conn_id"
    default_conn_name = "ipmi_default"
    conn_type = "ipmi"
    hook_name = "IPMI BMC"

    def __init__(self, ipmi_conn_id: str = default_conn_name, *, timeout: float = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ipmi_conn_id = ipmi_conn_id
        self.timeout = timeout

    def get_conn(self) -> Any:
        from pyghmi.ipmi import command

        conn = self.get_connection(self.ipmi_conn_id)
        return command.Command(
            bmc=conn.host, userid=conn.login, password=conn.password, port=conn.port or 623, keepalive=False
        )

    def get_power_state(self) -> str:
        """``on`` or ``off``, as the BMC's chassis status says."""
        return str(self.get_conn().get_power()["powerstate"])

    def set_power(self, action: str) -> None:
        """``on``, ``soft_off`` (ACPI shutdown) or ``hard_off``."""
        if action not in POWER_ACTIONS:
            raise ValueError(f"unknown power action {action!r}; use one of {sorted(POWER_ACTIONS)}")
        self.get_conn().set_power(POWER_ACTIONS[action], wait=False)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "extra"],
            "relabeling": {},
            "placeholders": {"host": "10.0.0.21", "port": "623", "login": "admin"},
        }
