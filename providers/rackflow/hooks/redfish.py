"""Drive a BMC's power through Redfish, over one HTTP client (aiohttp) for reads and actions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from airflow.sdk import BaseHook

from rackflow.hooks.connection_forms import ui_field_behaviour
from rackflow.hooks.retrying import retry_async

# Redfish ResetType per action rackflow asks for (DMTF Redfish ResetType enum).
RESET_TYPES = {"on": "On", "soft_off": "GracefulShutdown", "hard_off": "ForceOff"}
SYSTEMS_PATH = "/redfish/v1/Systems"
RESET_ACTION = "#ComputerSystem.Reset"

T = TypeVar("T")


class _HttpStatusError(Exception):
    def __init__(self, status: int, url: str, body: bytes) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:200].decode(errors='replace')}")
        self.status = status


class RedfishError(RuntimeError):
    """The BMC did not answer, refused, or has no such system; the message names BMC and call."""


def _retryable(err: BaseException) -> bool:
    """Transport errors and 5xx answers may pass; a 4xx (bad credentials, bad request) will not."""
    if isinstance(err, _HttpStatusError):
        return err.status >= 500
    return isinstance(err, aiohttp.ClientError | TimeoutError | OSError | ValueError)


def new_session() -> aiohttp.ClientSession:
    """An HTTP session for BMC calls: a fresh connection per request (BMCs have few connection slots
    and the monitor polls minutes apart), no proxy from the environment (BMCs sit on the management
    network, never behind the environment's HTTP proxy)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True), trust_env=False)


class RedfishHook(BaseHook):
    """
    Read and change the power of systems behind a Redfish BMC.

    Connection: host/port of the BMC, scheme (``http``/``https``) in the schema field, login and password
    (HTTP basic authentication). Each call gets ``timeout`` seconds per HTTP request and ``retries`` extra
    attempts on transport errors or 5xx answers; then it raises :class:`RedfishError`. A missing system
    is not retried (``KeyError`` naming it).

    Every call is a plain request on aiohttp: :meth:`get_power_state` (what the monitoring cycle calls for
    every node) is one ``GET /redfish/v1/Systems/<system>``; only when the BMC has no system with that id
    does it search the collection by name or UUID. The ``a``-prefixed coroutines do the same on a running
    event loop, so the monitor reads hundreds of BMCs from one thread (:func:`new_session` gives the
    session to share); the blocking methods run them on a loop of their own.

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

    @cached_property
    def _endpoint(self) -> tuple[str, dict[str, str]]:
        """(base URL, request headers with the basic authentication), from one connection lookup."""
        conn = self.get_connection(self.redfish_conn_id)
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        headers = {"Accept": "application/json"}
        if conn.login is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(conn.login, conn.password or "")
        return f"{scheme}://{conn.host}{port}", headers

    @property
    def base_url(self) -> str:
        return self._endpoint[0]

    def get_conn(self) -> aiohttp.ClientSession:
        """A new HTTP session for this BMC's calls (close it; the blocking methods make their own)."""
        return new_session()

    # -- one request ----------------------------------------------------------------------------------

    async def _request(
        self, session: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One request; 4xx/5xx raise with the status. Redirects within the BMC are followed
        (sushy-emulator sends a system's name to its UUID with a 307); aiohttp drops the credentials on
        a redirect to another origin."""
        base_url, headers = await asyncio.to_thread(lambda: self._endpoint)
        url = path if path.startswith(("http://", "https://")) else f"{base_url}{path}"
        async with session.request(
            method,
            url,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            ssl=bool(self.verify),
            max_redirects=3,
        ) as resp:
            data = await resp.read()
            if resp.status >= 400:
                raise _HttpStatusError(resp.status, url, data)
        if method != "GET":
            return {}
        parsed = json.loads(data)
        if not isinstance(parsed, dict):
            raise ValueError(f"{url} answered {type(parsed).__name__}, not a JSON object")
        return parsed

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn`` with the hook's retries; its last failure becomes a :class:`RedfishError`."""
        base_url = (await asyncio.to_thread(lambda: self._endpoint))[0]
        try:
            return await retry_async(
                fn,
                attempts=self.retries + 1,
                delay=self.retry_delay,
                retry_on=_retryable,
                log=self.log,
                what=f"Redfish {what} at {base_url}",
            )
        except KeyError:
            raise
        except Exception as err:
            detail = str(err) or type(err).__name__  # aiohttp's timeouts have no message
            raise RedfishError(f"Redfish BMC {base_url}: {what} failed: {detail}") from err

    # -- systems --------------------------------------------------------------------------------------

    @staticmethod
    def _system_path(system: str) -> str:
        return f"{SYSTEMS_PATH}/{quote(system, safe='')}"

    async def _system(self, session: aiohttp.ClientSession, system: str) -> tuple[str, dict[str, Any]]:
        """(path, body) of the system whose id is ``system`` (one GET), else of the member whose name or
        UUID matches; ``KeyError`` naming it when there is none."""
        try:
            path = self._system_path(system)
            return path, await self._request(session, "GET", path)
        except _HttpStatusError as err:
            if err.status != 404:
                raise
        collection = await self._request(session, "GET", SYSTEMS_PATH)
        for member in collection.get("Members", []):
            path = str(member.get("@odata.id", ""))
            body = await self._request(session, "GET", path)
            if system in (body.get("Id"), body.get("Name"), body.get("UUID")):
                return path, body
        raise KeyError(f"Redfish BMC has no system {system!r}")

    @staticmethod
    def _power_state_of(system: str, body: dict[str, Any]) -> str:
        state = body.get("PowerState")
        if not isinstance(state, str):
            raise ValueError(f"system {system!r} has no PowerState in {sorted(body)[:10]}")
        return state

    async def aget_power_state(self, system: str, *, session: aiohttp.ClientSession) -> str:
        """The Redfish PowerState as the BMC says it: ``On``, ``Off``, ``PoweringOn``, ``PoweringOff``...

        :param system: the system's id (or name/UUID, found by a search when it is not an id).
        :param session: the HTTP session to use (the monitor shares one per cycle: :func:`new_session`).
        """

        async def read() -> str:
            _path, body = await self._system(session, system)
            return self._power_state_of(system, body)

        return await self._call(f"power state of {system}", read)

    async def aset_power(self, system: str, action: str, *, session: aiohttp.ClientSession) -> None:
        """``on``, ``soft_off`` (graceful shutdown) or ``hard_off`` (force off): the system's Reset action."""
        if action not in RESET_TYPES:
            raise ValueError(f"unknown power action {action!r}; use one of {sorted(RESET_TYPES)}")

        async def reset() -> None:
            path, body = await self._system(session, system)
            action_info = body.get("Actions", {}).get(RESET_ACTION, {})
            target = action_info.get("target") or f"{path}/Actions/ComputerSystem.Reset"
            await self._request(session, "POST", target, {"ResetType": RESET_TYPES[action]})

        await self._call(f"power {action} of {system}", reset)

    async def alist_systems(self, *, session: aiohttp.ClientSession) -> list[str]:
        async def names() -> list[str]:
            collection = await self._request(session, "GET", SYSTEMS_PATH)
            members = [await self._request(session, "GET", str(m.get("@odata.id", ""))) for m in
                       collection.get("Members", [])]  # fmt: skip
            return sorted(str(m.get("Name") or m.get("Id")) for m in members)

        return await self._call("list systems", names)

    # -- blocking forms -------------------------------------------------------------------------------

    def _blocking(self, call: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
        async def run() -> T:
            async with new_session() as session:
                return await call(session)

        return asyncio.run(run())

    def get_power_state(self, system: str) -> str:
        return self._blocking(lambda session: self.aget_power_state(system, session=session))

    def set_power(self, system: str, action: str) -> None:
        self._blocking(lambda session: self.aset_power(system, action, session=session))

    def list_systems(self) -> list[str]:
        return self._blocking(lambda session: self.alist_systems(session=session))

    def test_connection(self) -> tuple[bool, str]:
        try:
            return True, f"Redfish BMC {self.base_url} has systems {', '.join(self.list_systems())}"
        except Exception as err:
            return False, str(err)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour(cls.conn_type)
