"""LibvirtDomainsRunningTrigger polling the devfleet's real libvirtd (host-a)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rackflow.hooks.libvirt import DomainSpec, LibvirtHook
from rackflow.triggers.libvirt import LibvirtDomainsRunningTrigger

CONN = "libvirt_host_a"


@pytest.fixture
def hook(devfleet: Any) -> Iterator[LibvirtHook]:
    prefix = f"tr{uuid.uuid4().hex[:6]}"
    with LibvirtHook(CONN) as h:
        h.prefix = prefix  # type: ignore[attr-defined]
        yield h
        for vm in h.list_domains(addresses=False):
            if vm.name.startswith(prefix):
                h.destroy_domain(vm.name)


def _first_event(trigger: LibvirtDomainsRunningTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


def _trigger(names: list[str], seconds: float) -> LibvirtDomainsRunningTrigger:
    return LibvirtDomainsRunningTrigger(
        libvirt_conn_id=CONN, names=names, deadline=time.time() + seconds, poll_interval=0.1
    )


def test_serializes_to_its_own_classpath() -> None:
    path, kwargs = _trigger(["a"], 5).serialize()
    assert path == "rackflow.triggers.libvirt.LibvirtDomainsRunningTrigger"
    assert LibvirtDomainsRunningTrigger(**kwargs).serialize() == (path, kwargs)


def test_success_when_every_vm_runs_with_addresses(hook: LibvirtHook) -> None:
    names = [f"{hook.prefix}-1", f"{hook.prefix}-2"]  # type: ignore[attr-defined]
    for name in names:
        hook.launch_from_image(DomainSpec(name, 1, 64, network="default"), image="debian-12.qcow2")
    event = _first_event(_trigger(names, 10))
    assert event["status"] == "success" and event["names"] == names
    assert [vm["name"] for vm in event["vms"]] == names and all(vm["addresses"] for vm in event["vms"])


def test_timeout_names_the_vm_that_is_not_running(hook: LibvirtHook) -> None:
    name = f"{hook.prefix}-p"  # type: ignore[attr-defined]
    hook.launch_from_image(DomainSpec(name, 1, 64), image="debian-12.qcow2")
    hook.get_conn().lookupByName(name).suspend()
    event = _first_event(_trigger([name], 0.5))
    assert event["status"] == "timeout"
    assert event["message"] == f"VMs not running by the deadline: {name} (paused)"


def test_a_vm_that_disappears_fails_at_once(hook: LibvirtHook) -> None:
    name = f"{hook.prefix}-gone"  # type: ignore[attr-defined]
    event = _first_event(_trigger([name], 3600))  # would be "timeout" had it waited for the deadline
    assert event["status"] == "failed" and f"{name} (missing)" in event["message"]
