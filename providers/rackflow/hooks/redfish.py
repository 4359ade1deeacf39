"""Drive a BMC's power through Redfish (sushy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

import sushy
from airflow.sdk import BaseHook

# Redfish ResetType per action rackflow asks for.
RESET_TYPES = {
    "on": sushy.RESET_ON,
    "soft_off": sushy.RESET_GRACEFUL_SHUTDOWN,
    "hard_off": sushy.RESET_FORCE_OFF,
}

T = TypeVar("T")


class RedfishError(RuntimeError):
    """The BMC did not answer, refused, or has no such system; the message names BMC and call."""


class RedfishHook(BaseHook):
    """
    Read and change the power of systems behind a Redfish BMC.

    Connection: host/port of the BMC, scheme (``http``/``https``) in the schema field, login and password.
    Each call gets ``timeout`` seconds per HTTP request and ``retries`` extra attempts on transport
    errors or 5xx answers; then it raises :class:`RedfishError`. A missing system is not retried.

    :param redfish_conn_id: Airflow connection of the BMC.
    :param timeout: seconds for each HTTP request to the BMC (connect and read).
    :param retries: extra attempts after a failed call.
    :param retry_delay: seconds between attempts.
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
        retries: int = 1,
        retry_delay: float = 0.5,
        verify: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.redfish_conn_id = redfish_conn_id
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.verify = verify
        self._root: sushy.Sushy | None = None

    @cached_property
    def base_url(self) -> str:
        conn = self.get_connection(self.redfish_conn_id)
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{conn.host}{port}"

    def get_conn(self) -> sushy.Sushy:
        """The service root (one login per hook; dropped and rebuilt after a failed call)."""
        if self._root is None:
            conn = self.get_connection(self.redfish_conn_id)
            self._root = sushy.Sushy(
                self.base_url,
                verify=self.verify,
                auth=sushy.auth.BasicAuth(username=conn.login, password=conn.password),
                read_timeout=self.timeout,
                connect_timeout=self.timeout,
                # One attempt per request: retries are ours, bounded by `retries`. (sushy reads 0 as
                # "use the default of 3 with 2 s sleeps", hence 1 and a tiny delay.)
                server_side_retries=1,
                server_side_retries_delay=0.01,
            )
            # BMCs sit on the management network, never behind the HTTP proxy of the environment;
            # skipping requests' per-call scan of os.environ for proxy settings also saves CPU when
            # hundreds of BMCs are polled at once.
            self._root._conn._session.trust_env = False
        return self._root

    def _call(self, what: str, fn: Callable[[sushy.Sushy], T]) -> T:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_delay)
            try:
                return fn(self.get_conn())
            except (KeyError, ValueError):
                raise
            except sushy.exceptions.HTTPError as err:
                last = err
                self._root = None
                if err.status_code is not None and err.status_code < 500:
                    break  # 4xx will not change on retry (bad credentials, bad request)
            except Exception as err:  # connection refused, timeouts, malformed answers
                last = err
                self._root = None
            self.log.warning(
                "Redfish %s at %s failed (attempt %d): %s", what, self.base_url, attempt + 1, last
            )
        raise RedfishError(f"Redfish BMC {self.base_url}: {what} failed: {last}")

    @staticmethod
    def _find(root: sushy.Sushy, system: str) -> Any:
        """The system whose id is ``system`` (one GET), else the member whose name or UUID matches."""
        systems_path = getattr(root, "_systems_path", None)
        if systems_path:
            try:
                return root.get_system(f"{str(systems_path).rstrip('/')}/{system}")
            except sushy.exceptions.ResourceNotFoundError:
                pass
        for member in root.get_system_collection().get_members():
            if system in (member.identity, member.name, member.uuid):
                return member
        raise KeyError(f"Redfish BMC has no system {system!r}")

    def list_systems(self) -> list[str]:
        return self._call(
            "list systems", lambda root: sorted(m.name for m in root.get_system_collection().get_members())
        )

    def get_power_state(self, system: str) -> str:
        """The Redfish PowerState as the BMC says it: ``On``, ``Off``, ``PoweringOn``, ``PoweringOff``..."""

        def read(root: sushy.Sushy) -> str:
            state = self._find(root, system).power_state
            return str(getattr(state, "value", state))

        return self._call(f"power state of {system}", read)

    def set_power(self, system: str, action: str) -> None:
        """``on``, ``soft_off`` (graceful shutdown) or ``hard_off`` (force off)."""
        if action not in RESET_TYPES:
            raise ValueError(f"unknown power action {action!r}; use one of {sorted(RESET_TYPES)}")
        self._call(
            f"power {action} of {system}",
            lambda root: self._find(root, system).reset_system(RESET_TYPES[action]),
        )

    def test_connection(self) -> tuple[bool, str]:
        try:
            return True, f"Redfish BMC {self.base_url} has systems {', '.join(self.list_systems())}"
        except Exception as err:
            return False, str(err)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["extra"],
            "relabeling": {"schema": "Scheme (http/https)"},
            "placeholders": {"host": "10.0.0.21", "schema": "https", "login": "admin"},
        }
