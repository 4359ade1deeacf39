"""Wait in the triggerer until libvirt domains run, so no worker slot is held while VMs boot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rackflow.hooks.libvirt import MISSING, LibvirtHook

# States from which a domain will not reach "running" by itself.
FAILED_STATES = frozenset({"crashed", MISSING})


class LibvirtDomainsRunningTrigger(BaseTrigger):
    """
    Poll one host until every named domain is running, one is lost, or the deadline passes.

    Events carry ``names``, ``states`` (name -> last state seen) and ``status``: ``success`` with
    ``vms`` (name, state, addresses); ``failed`` when a domain crashed or disappeared; ``timeout`` when
    ``deadline`` passed first; ``error`` when the host could not be asked.

    :param libvirt_conn_id: connection of the host's libvirt.
    :param names: domains to wait for.
    :param deadline: UNIX time after which waiting stops with ``timeout``.
    :param poll_interval: seconds between polls.
    """

    def __init__(
        self,
        *,
        libvirt_conn_id: str,
        names: list[str],
        deadline: float,
        poll_interval: float = 2.0,
    ) -> None:
        super().__init__()
        self.libvirt_conn_id = libvirt_conn_id
        self.names = list(names)
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "libvirt_conn_id": self.libvirt_conn_id,
                "names": self.names,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
            },
        )

    def _event(self, status: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "names": self.names, **payload})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            conn = await LibvirtHook.aget_connection(self.libvirt_conn_id)
            hook = LibvirtHook(self.libvirt_conn_id, uri=conn.host)
        except Exception as err:
            yield self._event("error", message=f"{self.libvirt_conn_id}: {err}", states={})
            return
        states: dict[str, str] = {}
        try:
            while True:
                try:
                    states = await asyncio.to_thread(hook.domain_states, self.names)
                except Exception as err:  # host unreachable: keep trying until the deadline
                    self.log.warning("asking %s for %s failed: %s", hook.uri, self.names, err)
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
                    vms = await asyncio.to_thread(_describe, hook, self.names)
                    yield self._event("success", vms=vms, states=states)
                    return
                if time.time() >= self.deadline:
                    waiting = {n: s for n, s in states.items() if s != "running"}
                    message = f"VMs not running by the deadline: {format_states(waiting)}"
                    yield self._event("timeout", message=message, states=states)
                    return
                await asyncio.sleep(min(self.poll_interval, max(0.0, self.deadline - time.time())))
        finally:
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
