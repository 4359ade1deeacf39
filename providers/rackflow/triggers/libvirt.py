"""Wait in the triggerer until libvirt domains run (on one host or several), holding no worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rackflow.hooks.libvirt import MISSING, LibvirtHook

# States from which a domain will not reach "running" by itself.
FAILED_STATES = frozenset({"crashed", MISSING})


class LibvirtDomainsRunningTrigger(BaseTrigger):
    """
    Poll one or more hosts until every named domain is running, one is lost, or the deadline passes.

    Events carry ``names`` (every domain waited for, hosts in the order given), ``states`` (name ->
    last state seen) and ``status``: ``success`` with ``vms`` (name, state, addresses); ``failed``
    when a domain crashed or disappeared; ``timeout`` when ``deadline`` passed first; ``error`` when
    a host could not be asked.

    :param libvirt_conn_id: connection of the host's libvirt (with ``names``: one host).
    :param names: domains to wait for on that host.
    :param hosts: libvirt connection id -> domains to wait for there (a launch over a group); the
        one-host form above is the same as ``{libvirt_conn_id: names}``.
    :param deadline: UNIX time after which waiting stops with ``timeout``.
    :param poll_interval: seconds between polls.
    """

    def __init__(
        self,
        *,
        libvirt_conn_id: str | None = None,
        names: list[str] | None = None,
        hosts: Mapping[str, list[str]] | None = None,
        deadline: float,
        poll_interval: float = 2.0,
    ) -> None:
        super().__init__()
        self.hosts: dict[str, list[str]] = {k: list(v) for k, v in (hosts or {}).items()}
        if libvirt_conn_id is not None:
            self.hosts.setdefault(libvirt_conn_id, []).extend(names or [])
        if not self.hosts:
            raise ValueError("LibvirtDomainsRunningTrigger needs libvirt_conn_id and names, or hosts")
        self.names = [name for names_there in self.hosts.values() for name in names_there]
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"hosts": self.hosts, "deadline": self.deadline, "poll_interval": self.poll_interval},
        )

    def _event(self, status: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "names": self.names, **payload})

    def _states(self, hooks: list[tuple[LibvirtHook, list[str]]]) -> dict[str, str]:
        states: dict[str, str] = {}
        for hook, names in hooks:
            states.update(hook.domain_states(names))
        return states

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hooks: list[tuple[LibvirtHook, list[str]]] = []
        try:
            for conn_id, names in self.hosts.items():
                conn = await LibvirtHook.aget_connection(conn_id)
                hooks.append((LibvirtHook(conn_id, uri=conn.host), names))
        except Exception as err:
            yield self._event("error", message=f"{conn_id}: {err}", states={})
            return
        states: dict[str, str] = {}
        try:
            while True:
                try:
                    states = await asyncio.to_thread(self._states, hooks)
                except Exception as err:  # host unreachable: keep trying until the deadline
                    self.log.warning("asking libvirt for %s failed: %s", self.names, err)
                    if time.time() >= self.deadline:
                        yield self._event("error", message=str(err), states=states)
                        return
                    await asyncio.sleep(self.poll_interval)
                    continue
                lost = {n: s for n, s in states.items() if s in FAILED_STATES}
                if lost:
                    yield self._event("failed", message=f"VMs lost: {format_states(lost)}", states=states)
                    return
                if all(s == "running" for s in states.values()):
                    vms = [
                        vm for hook, names in hooks for vm in await asyncio.to_thread(_describe, hook, names)
                    ]
                    yield self._event("success", vms=vms, states=states)
                    return
                if time.time() >= self.deadline:
                    waiting = {n: s for n, s in states.items() if s != "running"}
                    message = f"VMs not running by the deadline: {format_states(waiting)}"
                    yield self._event("timeout", message=message, states=states)
                    return
                await asyncio.sleep(min(self.poll_interval, max(0.0, self.deadline - time.time())))
        finally:
            for hook, _ in hooks:
                hook.close()


def format_states(states: dict[str, str]) -> str:
    """``web-01 (paused), web-02 (missing)``"""
    return ", ".join(f"{name} ({state})" for name, state in sorted(states.items()))


def _describe(hook: LibvirtHook, names: list[str]) -> list[dict[str, Any]]:
    vms = []
    for name in names:
        info = hook.domain(name)
        vms.append(
            {
                "name": name,
                "state": info.state if info else MISSING,
                "addresses": list(info.addresses) if info else [],
            }
        )
    return vms
