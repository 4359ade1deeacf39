"""Drive a BMC's power through Redfish (sushy)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import sushy
from airflow.sdk import BaseHook

# Redfish ResetType per action rackflow asks for.
RESET_TYPES = {
    "on": sushy.RESET_ON,
    "soft_off": sushy.RESET_GRACEFUL_SHUTDOWN,
    "hard_off": sushy.RESET_FORCE_OFF,
}


class RedfishHook(BaseHook):
    """
    Read and change the power of systems behind a Redfish BMC.

    Connection: host/port of the BMC, scheme (``http``/``https``) in the schema field, login and password.

    :param redfish_conn_id: Airflow connection of the BMC.
    :param timeout: seconds for each HTTP request to the BMC.
    :param verify: verify the BMC's TLS certificate.
    """

    conn_name_attr = "redfish_conn_id"
    default_conn_name = "redfish_default"
    conn_type = "redfish"
    hook_name = "Redfish BMC"

    def __init__(
        self,
        redfish_conn_id: str = default_conn_name,
        *,
        timeout: float = 10,
        verify: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.redfish_conn_id = redfish_conn_id
        self.timeout = timeout
        self.verify = verify

    @cached_property
    def base_url(self) -> str:
        conn = self.get_connection(self.redfish_conn_id)
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{conn.host}{port}"

    def get_conn(self) -> sushy.Sushy:
        conn = self.get_connection(self.redfish_conn_id)
        return sushy.Sushy(
            self.base_url,
            verify=self.verify,
            auth=sushy.auth.BasicAuth(username=conn.login, password=conn.password),
            read_timeout=self.timeout,
            connect_timeout=self.timeout,
            server_side_retries=1,
        )

    def _system(self, system: str) -> Any:
        root = self.get_conn()
        for member in root.get_system_collection().get_members():
            if system in (member.identity, member.name, member.uuid):
                return member
        raise KeyError(f"Redfish BMC {self.base_url} has no system {system!r}")

    def list_systems(self) -> list[str]:
        return sorted(m.name for m in self.get_conn().get_system_collection().get_members())

    def get_power_state(self, system: str) -> str:
        """The Redfish PowerState as the BMC says it: ``On``, ``Off``, ``PoweringOn``, ``PoweringOff``..."""
        state = self._system(system).power_state
        return str(getattr(state, "value", state))

    def set_power(self, system: str, action: str) -> None:
        """``on``, ``soft_off`` (graceful shutdown) or ``hard_off`` (force off)."""
        if action not in RESET_TYPES:
            raise ValueError(f"unknown power action {action!r}; use one of {sorted(RESET_TYPES)}")
        self._system(system).reset_system(RESET_TYPES[action])

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["extra"],
            "relabeling": {"schema": "Scheme (http/https)"},
            "placeholders": {"host": "10.0.0.21", "schema": "https", "login": "admin"},
        }
