"""Drive a BMC's power through Redfish: reads with one plain HTTP GET, actions through sushy."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote, urljoin

import aiohttp
import sushy
import urllib3
from airflow.sdk import BaseHook

# Redfish ResetType per action rackflow asks for.
RESET_TYPES = {
    "on": sushy.RESET_ON,
    "soft_off": sushy.RESET_GRACEFUL_SHUTDOWN,
    "hard_off": sushy.RESET_FORCE_OFF,
}

T = TypeVar("T")

_POOLS: dict[bool, urllib3.PoolManager] = {}
_POOLS_LOCK = threading.Lock()


def _pool(verify: bool) -> urllib3.PoolManager:
    """The process's HTTP pool manager for BMC reads (one per TLS mode), shared by every hook.

    One TLS context for all BMCs (building one loads the CA bundle: milliseconds of CPU each), no
    proxies from the environment (BMCs sit on the management network), no urllib3 retries (ours
    are counted by the hook).
    """
    with _POOLS_LOCK:
        manager = _POOLS.get(verify)
        if manager is None:
            context = ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            manager = urllib3.PoolManager(
                num_pools=4096,
                # Reads close their connection, so a pool only ever holds closed slots; room for many
                # at once keeps urllib3 from warning when many BMCs share one address (emulators).
                maxsize=256,
                block=False,
                retries=False,
                ssl_context=context,
                cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
            )
            _POOLS[verify] = manager
        return manager


class _HttpStatusError(Exception):
    def __init__(self, status: int, url: str, body: bytes) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:200].decode(errors='replace')}")
        self.status = status


class RedfishError(RuntimeError):
    """The BMC did not answer, refused, or has no such system; the message names BMC and call."""


class RedfishHook(BaseHook):
    """
    Read and change the power of systems behind a Redfish BMC.

    Connection: host/port of the BMC, scheme (``http``/``https``) in the schema field, login and password.
    Each call gets ``timeout`` seconds per HTTP request and ``retries`` extra attempts on transport
    errors or 5xx answers; then it raises :class:`RedfishError`. A missing system is not retried.

    :meth:`get_power_state` is what the monitoring cycle calls for every node, so it is kept cheap: one
    ``GET /redfish/v1/Systems/<system>`` through a process-wide urllib3 pool (about a tenth of the CPU
    of sushy's service-root login plus resource parsing), with a fresh connection per read — the poll
    runs minutes apart and BMCs have few connection slots, so idle keep-alive connections would buy
    nothing. Only when the BMC has no system with that id does it fall back to sushy's search by name
    or UUID. Power actions and listings go through sushy.

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
    def _endpoint(self) -> tuple[str, str | None, str | None]:
        """(base URL, login, password), from one connection lookup."""
        conn = self.get_connection(self.redfish_conn_id)
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{conn.host}{port}", conn.login, conn.password

    @property
    def base_url(self) -> str:
        return self._endpoint[0]

    def get_conn(self) -> sushy.Sushy:
        """The service root (one login per hook; dropped and rebuilt after a failed call)."""
        if self._root is None:
            base_url, login, password = self._endpoint
            self._root = sushy.Sushy(
                base_url,
                verify=self.verify,
                auth=sushy.auth.BasicAuth(username=login, password=password),
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

    def _get_json(self, path: str) -> dict[str, Any]:
        """One GET of ``path`` on the BMC (basic auth, fresh connection); 4xx/5xx raise with the status.

        Redirects within the BMC are followed (sushy-emulator sends a system's name to its UUID with a
        307); credentials are never sent to another origin.
        """
        base_url, login, password = self._endpoint
        url = f"{base_url}{path}"
        headers = {"Accept": "application/json", "Connection": "close"}
        if login is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{login}:{password or ''}"))
        for _hop in range(4):
            resp = _pool(self.verify).request(
                "GET",
                url,
                headers=headers,
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout, total=self.timeout),
                redirect=False,
            )
            location = resp.headers.get("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                break
            target = urljoin(url, location)
            if not target.startswith(f"{base_url}/"):
                raise ValueError(f"{url} redirects off the BMC to {target}; not followed")
            url = target
        if resp.status >= 400:
            raise _HttpStatusError(resp.status, url, resp.data)
        body = json.loads(resp.data)
        if not isinstance(body, dict):
            raise ValueError(f"{url} answered {type(body).__name__}, not a JSON object")
        return body

    @staticmethod
    def _system_path(system: str) -> str:
        return f"/redfish/v1/Systems/{quote(system, safe='')}"

    @staticmethod
    def _power_state_of(system: str, body: dict[str, Any]) -> str:
        state = body.get("PowerState")
        if not isinstance(state, str):
            raise ValueError(f"system {system!r} has no PowerState in {sorted(body)[:10]}")
        return state

    def get_power_state(self, system: str) -> str:
        """The Redfish PowerState as the BMC says it: ``On``, ``Off``, ``PoweringOn``, ``PoweringOff``..."""
        what = f"power state of {system}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_delay)
            try:
                return self._power_state_of(system, self._get_json(self._system_path(system)))
            except _HttpStatusError as err:
                if err.status == 404:
                    return self._power_state_by_search(system)  # not an id: a name or UUID?
                last = err
                if err.status < 500:
                    break  # 4xx will not change on retry (bad credentials, bad request)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                last = err  # refused, timed out, reset, not JSON, no PowerState
            self.log.warning(
                "Redfish %s at %s failed (attempt %d): %s", what, self.base_url, attempt + 1, last
            )
        raise RedfishError(f"Redfish BMC {self.base_url}: {what} failed: {last}")

    async def aget_power_state(self, system: str, *, session: aiohttp.ClientSession) -> str:
        """:meth:`get_power_state` on an event loop: many BMCs read at once from one thread.

        Same GET, timeouts, retries and errors as the blocking call. The connection lookup and the
        rare fallback search by name run in the loop's default executor (they block).

        :param system: the system's id (or name/UUID, found by a search when it is not an id).
        :param session: the aiohttp session of the poll (one per monitoring cycle, no env proxies).
        """
        base_url, login, password = await asyncio.to_thread(lambda: self._endpoint)
        url = f"{base_url}{self._system_path(system)}"
        headers = {"Accept": "application/json", "Connection": "close"}
        if login is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{login}:{password or ''}"))
        what = f"power state of {system}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_delay)
            try:
                async with session.get(
                    url,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    ssl=bool(self.verify),
                    # Redirects within the BMC (name -> UUID) are followed; aiohttp drops the
                    # Authorization header on a redirect to another origin.
                    max_redirects=3,
                ) as resp:
                    data = await resp.read()
                    if resp.status >= 400:
                        raise _HttpStatusError(resp.status, url, data)
                body = json.loads(data)
                if not isinstance(body, dict):
                    raise ValueError(f"{url} answered {type(body).__name__}, not a JSON object")
                return self._power_state_of(system, body)
            except _HttpStatusError as err:
                if err.status == 404:
                    return await asyncio.to_thread(self._power_state_by_search, system)
                last = err
                if err.status < 500:
                    break
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
                last = err  # refused, timed out, reset, not JSON, no PowerState
            self.log.warning("Redfish %s at %s failed (attempt %d): %s", what, base_url, attempt + 1, last)
        detail = str(last) or type(last).__name__  # aiohttp's timeouts have no message
        raise RedfishError(f"Redfish BMC {base_url}: {what} failed: {detail}")

    def _power_state_by_search(self, system: str) -> str:
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
