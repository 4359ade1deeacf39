"""Drive a BMC's power through IPMI 2.0 over LAN (RMCP+), with ``ipmitool -I lanplus``.

One process per call: a fresh RMCP+ session each time, so a BMC that dropped an idle session
(virtualbmc after 60 s) or restarted between calls is no problem, and the process holds no session
state or I/O thread. The password goes through the environment (``-E``), never the command line.

Cipher suites (``-C``): 17 (RAKP-HMAC-SHA256) is the default; 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES)
for BMCs that speak only SHA-1 — virtualbmc among them — through the connection extra
``{"cipher_suite": 3}`` or the constructor.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from airflow.sdk import BaseHook

from rackflow.hooks.connection_forms import ui_field_behaviour
from rackflow.hooks.retrying import retry_blocking

# ipmitool's ``chassis power`` verbs per action rackflow asks for.
IPMITOOL_ACTIONS = {"on": "on", "soft_off": "soft", "hard_off": "off"}
CIPHER_SUITES = (3, 17)


class IpmiError(RuntimeError):
    """The BMC did not answer or refused; the message names the BMC and what failed."""


class IpmiHook(BaseHook):
    """
    Read and change a host's power through its IPMI BMC (IPMI 2.0 over LAN, RMCP+).

    Connection: host and port (623) of the BMC, login and password; extra ``{"cipher_suite": 3}`` for
    BMCs that only speak HMAC-SHA1 (virtualbmc, older BMCs). Every call logs in afresh, so a BMC that
    restarts between calls is no problem; failures raise :class:`IpmiError` after ``retries`` retries.

    :param ipmi_conn_id: Airflow connection of the BMC.
    :param timeout: seconds to wait for the BMC to answer one login or command.
    :param retries: extra attempts after a failed call (a wait of ``retry_delay`` between them).
    :param retry_delay: seconds between attempts.
    :param cipher_suite: 3 (SHA-1) or 17 (SHA-256 first); None reads the connection extra, default 17.
    """

    conn_name_attr = "ipmi_conn_id"
    default_conn_name = "ipmi_default"
    conn_type = "ipmi"
    hook_name = "IPMI BMC"

    def __init__(
        self,
        ipmi_conn_id: str = default_conn_name,
        *,
        timeout: float = 10,
        retries: int = 1,
        retry_delay: float = 0.5,
        cipher_suite: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ipmi_conn_id = ipmi_conn_id
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self._cipher_suite = cipher_suite

    def _settings(self) -> tuple[str, int, str, str, int]:
        conn = self.get_connection(self.ipmi_conn_id)
        if not conn.host:
            raise IpmiError(f"connection {self.ipmi_conn_id!r} has no BMC host")
        suite = self._cipher_suite
        if suite is None:
            suite = int(conn.extra_dejson.get("cipher_suite", 17))
        if suite not in CIPHER_SUITES:
            raise IpmiError(f"cipher suite {suite} is not supported; use one of {CIPHER_SUITES}")
        return conn.host, int(conn.port or 623), conn.login or "", conn.password or "", suite

    @property
    def address(self) -> str:
        host, port, *_ = self._settings()
        return f"{host}:{port}"

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return retry_blocking(
                fn,
                attempts=self.retries + 1,
                delay=self.retry_delay,
                retry_on=lambda err: not isinstance(err, IpmiError),
                log=self.log,
                what=f"IPMI {what} at {self.address}",
            )
        except IpmiError:
            raise
        except Exception as err:
            raise IpmiError(
                f"IPMI BMC {self.address}: {what} failed after {self.retries + 1} attempt(s): {err}"
            ) from err

    def _ipmitool(self, *args: str) -> str:
        """One ``ipmitool -I lanplus`` command in its own process (the password in its environment)."""
        host, port, login, password, suite = self._settings()
        argv = ["ipmitool", "-I", "lanplus", "-H", host, "-p", str(port), "-U", login, "-E"]
        argv += ["-C", str(suite), "-N", str(max(1, int(self.timeout / 3))), "-R", "3", *args]
        try:
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout + 5,
                env={**os.environ, "IPMI_PASSWORD": password},
            )
        except FileNotFoundError as err:
            raise IpmiError("ipmitool is not installed (scripts/install-apt.sh installs it)") from err
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"no answer within {self.timeout + 5:.0f}s") from err
        if out.returncode != 0:
            raise RuntimeError((out.stderr or out.stdout).strip() or f"ipmitool exited {out.returncode}")
        return out.stdout

    def get_power_state(self) -> str:
        """``on`` or ``off``, as the BMC's chassis status says."""

        def read() -> str:
            text = self._ipmitool("chassis", "power", "status").strip()
            if text.endswith(" on"):
                return "on"
            if text.endswith(" off"):
                return "off"
            raise RuntimeError(f"unexpected chassis status {text!r}")

        return str(self._call("get power", read))

    def set_power(self, action: str) -> None:
        """``on``, ``soft_off`` (ACPI shutdown) or ``hard_off``; returns once the BMC accepted it."""
        if action not in IPMITOOL_ACTIONS:
            raise ValueError(f"unknown power action {action!r}; use one of {sorted(IPMITOOL_ACTIONS)}")
        self._call(f"power {action}", lambda: self._ipmitool("chassis", "power", IPMITOOL_ACTIONS[action]))

    def test_connection(self) -> tuple[bool, str]:
        try:
            return True, f"IPMI BMC {self.address} says power is {self.get_power_state()}"
        except Exception as err:
            return False, str(err)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour(cls.conn_type)
