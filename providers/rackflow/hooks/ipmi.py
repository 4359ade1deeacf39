"""Drive a BMC's power through IPMI 2.0 over LAN (RMCP+).

Power reads and actions run ``ipmitool -I lanplus`` (one process per call, see ``IpmiHook._ipmitool``);
``IpmiHook.get_conn()`` gives a pyghmi ``Command`` for anything else.

Cipher suites (the same choice, ``-C`` for ipmitool). pyghmi (1.5+) opens every RMCP+ session asking
for cipher suite 17 (RAKP-HMAC-SHA256)
and only falls back to suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES) when the BMC *rejects* the open
request. Some BMCs — virtualbmc among them, whose server side is pyghmi's own SHA-1-only session —
accept the SHA-256 request and then answer RAKP 2 with a 20-byte SHA-1 HMAC, and pyghmi dies in
``_got_rakp2`` with ``struct.error: pack expected 32 items``. Nothing in OpenSSL blocks SHA-1 here
(``hashlib.sha1`` HMACs fine); the client must *offer* SHA-1. So the hook takes ``cipher_suite``
(connection extra ``{"cipher_suite": 3}`` or the constructor): 3 starts the session with SHA-1, 17
(the default) keeps pyghmi's SHA-256-first behaviour for BMCs that have suite 3 disabled.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from typing import Any

from airflow.sdk import BaseHook

# pyghmi's set_power states per action rackflow asks for.
POWER_ACTIONS = {"on": "on", "soft_off": "shutdown", "hard_off": "off"}
# ipmitool's ``chassis power`` verbs per action.
IPMITOOL_ACTIONS = {"on": "on", "soft_off": "soft", "hard_off": "off"}
CIPHER_SUITES = (3, 17)


class IpmiError(RuntimeError):
    """The BMC did not answer or refused; the message names the BMC and what failed."""


def _sha1_session_class() -> type:
    """A pyghmi session that opens RMCP+ with cipher suite 3 (HMAC-SHA1) instead of 17 (SHA-256)."""
    from pyghmi.ipmi.private import session

    class Sha1Session(session.Session):  # type: ignore[misc]
        def _initsession(self) -> None:
            super()._initsession()
            self.attemptedhash = 1  # pyghmi's marker for the SHA-1 suite in _open_rmcpplus_request

    return Sha1Session


class _PollSelect:
    """``select.select()`` done with ``poll()``, for pyghmi's I/O thread.

    pyghmi waits on its UDP sockets with ``select()``, which cannot watch a file descriptor numbered
    1024 or more: in a process holding many files (a long-running worker, the test suite) its thread
    then never sees a reply and every IPMI call hangs until it times out. ``poll()`` has no such limit.
    """

    error = select.error

    @staticmethod
    def select(
        rlist: list, wlist: list, xlist: list, timeout: float | None = None
    ) -> tuple[list, list, list]:
        poller = select.poll()
        for sock in rlist:
            poller.register(sock, select.POLLIN)
        for sock in wlist:
            poller.register(sock, select.POLLOUT)
        ready = {fd for fd, _events in poller.poll(None if timeout is None else max(0, int(timeout * 1000)))}

        def fileno(sock: Any) -> int:
            return sock if isinstance(sock, int) else sock.fileno()

        return [s for s in rlist if fileno(s) in ready], [s for s in wlist if fileno(s) in ready], []


def _forget_sessions(bmc: str, port: int) -> None:
    """Make pyghmi forget its cached sessions to ``bmc`` so the next command logs in afresh.

    pyghmi reuses a logged-in session per BMC, and without keepalive it cannot tell that the BMC
    dropped it (virtualbmc after 60 s idle, any BMC after a reboot): such a session is never answered.
    """
    from pyghmi.ipmi.private import session

    for handlers in list(session.Session.bmc_handlers.values()):
        for key, cached in list(handlers.items()):
            if getattr(cached, "bmc", None) == bmc and getattr(cached, "port", None) == port:
                handlers.pop(key, None)


def _open_command(*, bmc: str, userid: str, password: str, port: int, cipher_suite: int) -> Any:
    """A logged-in ``pyghmi.ipmi.command.Command`` on the given cipher suite."""
    from pyghmi.ipmi import command
    from pyghmi.ipmi.private import session

    session.select = _PollSelect  # type: ignore[attr-defined]

    if cipher_suite == 17:
        return command.Command(bmc=bmc, userid=userid, password=password, port=port, keepalive=False)
    # Command.__init__ hard-wires session.Session; build the same object around the SHA-1 session.
    cmd = command.Command.__new__(command.Command)
    cmd.onlogon = None
    cmd.bmc = bmc
    cmd._sdrcachedir = None
    cmd._sdr = None
    cmd._oem = None
    cmd._oemknown = False
    cmd._netchannel = None
    cmd._ipv6support = None
    cmd.certverify = None
    cmd.kwargs = {}
    session_cls = _sha1_session_class()
    assert issubclass(session_cls, session.Session)
    cmd.ipmi_session = session_cls(bmc=bmc, userid=userid, password=password, port=port)
    return cmd


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

    def get_conn(self) -> Any:
        host, port, login, password, suite = self._settings()
        _forget_sessions(host, port)  # every call logs in afresh
        cmd = _open_command(bmc=host, userid=login, password=password, port=port, cipher_suite=suite)
        cmd.ipmi_session.maxtimeout = max(1.0, float(self.timeout))
        return cmd

    def _call(self, what: str, fn: Any) -> Any:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_delay)
            try:
                return fn()
            except IpmiError:
                raise
            except Exception as err:
                last = err
                self.log.warning(
                    "IPMI %s at %s failed (attempt %d): %s", what, self.address, attempt + 1, err
                )
        raise IpmiError(f"IPMI BMC {self.address}: {what} failed after {self.retries + 1} attempt(s): {last}")

    def _ipmitool(self, *args: str) -> str:
        """One ``ipmitool -I lanplus`` command in its own process.

        Power reads and actions use ipmitool rather than pyghmi: pyghmi keeps sessions and an I/O
        thread per process and, once a BMC has dropped an idle session (virtualbmc after 60 s), its
        next calls in that process took up to ~30 s; a fresh ipmitool session answers in milliseconds.
        The password goes through the environment (``-E``), not the command line.
        """
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
        return {
            "hidden_fields": ["schema"],
            "relabeling": {},
            "placeholders": {
                "host": "10.0.0.21",
                "port": "623",
                "login": "admin",
                "extra": '{"cipher_suite": 3}',
            },
        }
