"""Concurrent VM launches on the devfleet's real libvirtds: names and capacity claimed in the rackflow DB.

Launch runs are separate processes (as tasks on different workers are), started at once through a
barrier; what they made is read back with ``virsh`` through the host's URI. The same runs are made
against the session's SQLite rackflow DB and against a throwaway Postgres.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rackflow.hooks.libvirt import LibvirtHook
from tests.operators.test_libvirt import _context, _launch, _names, vm_prefix

CTX = multiprocessing.get_context("fork")


def virsh_usage(uri: str) -> dict[str, tuple[int, int]]:
    """Every domain ``virsh list --all`` shows on ``uri``: name -> (vCPUs, MiB), from ``virsh dominfo``."""
    listed = subprocess.run(
        ["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True, text=True, check=True
    ).stdout.split()
    usage = {}
    for name in listed:
        info = subprocess.run(
            ["virsh", "-c", uri, "dominfo", name], capture_output=True, text=True, check=True
        ).stdout
        cpus = int(re.search(r"^CPU\(s\):\s+(\d+)", info, re.M).group(1))  # type: ignore[union-attr]
        kib = int(re.search(r"^Max memory:\s+(\d+) KiB", info, re.M).group(1))  # type: ignore[union-attr]
        usage[name] = (cpus, kib // 1024)
    return usage


def allocatable(host: str) -> tuple[int, int]:
    from rackflow.operators.libvirt import inventory_host

    row = inventory_host(host)
    return row.cpus, row.memory_mib


def free_on(devfleet: Any, host: str) -> tuple[int, int]:
    cpus, memory = allocatable(host)
    used = virsh_usage(devfleet.hosts[host].uri).values()
    return cpus - sum(c for c, _ in used), memory - sum(m for _, m in used)


@pytest.fixture
def prefix(rackflow_db: str, devfleet: Any) -> Iterator[str]:
    """A VM name prefix of this test; its VMs are destroyed on every host afterwards."""
    yield from vm_prefix("c")


@pytest.fixture(scope="module")
def postgres_inventory(rackflow_db: str, postgres: Any) -> str:
    """A rackflow DB on the session's Postgres, migrated and synced from the same fleet file."""
    from rackflow.core.fleet import Fleet
    from rackflow.db.inventory import sync_fleet
    from rackflow.db.session import session_scope, upgrade
    from tests.conftest import FLEET_FILE

    url = str(postgres.create_database("rackflow_claims"))
    upgrade(url)
    with session_scope(url) as session:
        sync_fleet(session, Fleet.load(FLEET_FILE))
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, rackflow_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The rackflow DB the launches claim in (the setting every launch process reads)."""
    url = rackflow_db if request.param == "sqlite" else request.getfixturevalue("postgres_inventory")
    monkeypatch.setenv("AIRFLOW__RACKFLOW__DATABASE_URL", url)
    return url


def _fresh_engines() -> None:
    """A forked launch process opens its own DB connections, as a task on another worker would."""
    from rackflow import settings
    from rackflow.db.session import get_engine

    get_engine(settings.database_url()).dispose(close=False)


def _launch_at_once(prefix: str, run_id: str, memory_mib: int, barrier: Any, results: Any) -> None:
    _fresh_engines()
    barrier.wait(timeout=60)
    try:
        vms = _launch(prefix, count=3, memory_mib=memory_mib).execute(_context(run_id))
        results.put((run_id, "ok", [vm["name"] for vm in vms]))
    except BaseException as err:
        results.put((run_id, "refused", f"{type(err).__name__}: {err}"))


def _five_at_once(prefix: str, memory_mib: int) -> dict[str, tuple[str, Any]]:
    barrier = CTX.Barrier(5)
    results = CTX.Queue()
    runs = [f"manual__{prefix}-{i}" for i in range(5)]
    children = [
        CTX.Process(target=_launch_at_once, args=(prefix, run, memory_mib, barrier, results)) for run in runs
    ]
    for child in children:
        child.start()
    outcome = {}
    for _ in runs:
        run, status, detail = results.get(timeout=240)
        outcome[run] = (status, detail)
    for child in children:
        child.join(timeout=30)
    return outcome


def test_five_launches_at_once_with_one_pattern_get_exact_counts_and_unique_names(
    database: str, devfleet: Any, prefix: str
) -> None:
    free_cpus, free_mem = free_on(devfleet, "host-a")
    assert free_cpus >= 15 and free_mem >= 15 * 128, "host-a must have room for 15 small VMs"
    outcome = _five_at_once(prefix, 128)

    assert {status for status, _ in outcome.values()} == {"ok"}, outcome
    made = [name for _, names in outcome.values() for name in names]
    assert all(len(names) == 3 for _, names in outcome.values())
    assert len(made) == len(set(made)) == 15
    assert sorted(made) == [f"{prefix}-{i:02d}" for i in range(1, 16)]
    on_host = virsh_usage(devfleet.hosts["host-a"].uri)
    assert sorted(n for n in on_host if n.startswith(prefix)) == sorted(made)
    cpus, memory = allocatable("host-a")
    assert sum(c for c, _ in on_host.values()) <= cpus and sum(m for _, m in on_host.values()) <= memory


def test_five_launches_at_once_where_four_fit_never_overcommit_and_the_fifth_names_the_shortfall(
    database: str, devfleet: Any, prefix: str
) -> None:
    free_cpus, free_mem = free_on(devfleet, "host-a")
    memory = free_mem // 12  # four launches of 3 VMs fit (12 VMs), a fifth (15) does not
    assert free_cpus >= 12 and 15 * memory > free_mem
    outcome = _five_at_once(prefix, memory)

    refused = [detail for status, detail in outcome.values() if status == "refused"]
    made = [name for status, names in outcome.values() if status == "ok" for name in names]
    assert len(refused) == 1, outcome
    assert re.search(
        r"refusing to launch on host-a: host-a has \d+ MiB memory free.*short by \d+ MiB", refused[0]
    )
    assert len(made) == len(set(made)) == 12
    on_host = virsh_usage(devfleet.hosts["host-a"].uri)
    # The refused launch created nothing: exactly the twelve VMs of the four others are there.
    assert sorted(n for n in on_host if n.startswith(prefix)) == sorted(made)
    cpus, allocatable_mem = allocatable("host-a")
    assert sum(c for c, _ in on_host.values()) <= cpus
    assert sum(m for _, m in on_host.values()) <= allocatable_mem


def test_capacity_claimed_by_another_launch_counts_until_it_is_released(
    rackflow_db: str, devfleet: Any, prefix: str
) -> None:
    from rackflow.db.vm_claims import Claim, claim_vms, held_claims, release_claims

    _, free_mem = free_on(devfleet, "host-a")
    other = f"other/{prefix}/launch"
    # Another launch holds all but 100 MiB of host-a, and has not defined its VMs yet.
    claim_vms(
        ["host-a"], other, lambda held: [Claim("host-a", f"{prefix}-x", 1, free_mem - 100)], lease=_minutes(5)
    )
    try:
        assert [c.name for c in held_claims(["host-a"]) if c.launch == other] == [f"{prefix}-x"]
        with pytest.raises(AirflowFailException, match=r"host-a has 100 MiB memory free.*short by 156 MiB"):
            _launch(prefix, count=2, memory_mib=128).execute(_context(f"manual__{prefix}"))
        assert _names("libvirt_host_a", prefix) == []
        # Its claimed name is taken too: numbering continues after it.
    finally:
        release_claims(other)
    result = _launch(prefix, count=2, memory_mib=128).execute(_context(f"manual__{prefix}"))
    assert [vm["name"] for vm in result] == [f"{prefix}-01", f"{prefix}-02"]
    assert not [c for c in held_claims() if c.launch.endswith(f"manual__{prefix}/launch")]


def _minutes(n: float) -> Any:
    from datetime import timedelta

    return timedelta(minutes=n)


def _slow_launch(prefix: str, run_id: str, claim_lease: float, on_term: bool) -> None:
    """A launch whose VMs take a second each; with ``on_term`` SIGTERM runs ``on_kill`` as Airflow's
    task runner does when a run is marked failed."""
    _fresh_engines()
    real = LibvirtHook.launch_from_image

    def slow(self: LibvirtHook, *args: Any, **kw: Any) -> Any:
        result = real(self, *args, **kw)
        time.sleep(1.0)
        return result

    LibvirtHook.launch_from_image = slow  # type: ignore[method-assign]
    op = _launch(prefix, count=4, claim_lease=claim_lease)
    if on_term:

        def killed(*_: Any) -> None:
            op.on_kill()
            os._exit(1)

        signal.signal(signal.SIGTERM, killed)
    op.execute(_context(run_id))


def _start_slow(prefix: str, run_id: str, claim_lease: float, on_term: bool) -> Any:
    from rackflow.db.vm_claims import held_claims

    child = CTX.Process(target=_slow_launch, args=(prefix, run_id, claim_lease, on_term))
    child.start()
    deadline = time.monotonic() + 60
    while len(_names("libvirt_host_a", prefix)) < 2:
        assert time.monotonic() < deadline and child.is_alive(), "the launch never defined two VMs"
        time.sleep(0.05)
    tag = f"rackflow_launch_vms_test/{run_id}/launch"
    assert sorted(c.name for c in held_claims(["host-a"]) if c.launch == tag) == [
        f"{prefix}-0{i}" for i in range(1, 5)
    ]
    return child, tag


def test_a_launch_killed_through_its_task_releases_its_claims_at_once(rackflow_db: str, prefix: str) -> None:
    from rackflow.db.vm_claims import held_claims

    child, tag = _start_slow(prefix, f"manual__{prefix}", claim_lease=600, on_term=True)
    os.kill(child.pid, signal.SIGTERM)
    child.join(timeout=30)
    assert child.exitcode == 1
    assert [c for c in held_claims() if c.launch == tag] == []


def test_a_launch_whose_process_dies_holds_its_claims_only_until_they_lapse(
    rackflow_db: str, prefix: str
) -> None:
    from sqlalchemy import select

    from rackflow.db.models import VmClaim
    from rackflow.db.session import session_scope
    from rackflow.db.vm_claims import held_claims

    child, tag = _start_slow(prefix, f"manual__{prefix}", claim_lease=3, on_term=False)
    os.kill(child.pid, signal.SIGKILL)  # the worker dies: no on_kill, no cleanup
    child.join(timeout=30)
    assert len([c for c in held_claims() if c.launch == tag]) == 4  # still reserved, for now
    deadline = time.monotonic() + 10
    while [c for c in held_claims() if c.launch == tag]:
        assert time.monotonic() < deadline, "the dead launch's claims never lapsed"
        time.sleep(0.2)
    # The next launch on the host drops the lapsed rows and may use their names' successors.
    result = _launch(prefix, count=1).execute(_context(f"manual__{prefix}-next"))
    assert [vm["name"] for vm in result] == [f"{prefix}-0{len(_names('libvirt_host_a', prefix))}"]
    with session_scope() as session:
        assert list(session.scalars(select(VmClaim).where(VmClaim.launch == tag))) == []


def test_the_vm_name_preview_skips_names_a_launch_in_progress_has_claimed(
    api: Any, auth: Any, rackflow_db: str, devfleet: Any, prefix: str
) -> None:
    from rackflow.db.vm_claims import Claim, claim_vms, release_claims

    def preview(**params: Any) -> list[str]:
        resp = api.get("/rackflow/api/vm-names", params=params, headers=auth("victor"))
        assert resp.status_code == 200, resp.text
        return list(resp.json()["names"])

    pattern = f"{prefix}-{{seq:02d}}"
    assert preview(pattern=pattern, count=1, host="host-b") == [f"{prefix}-01"]
    other = f"other/{prefix}/launch"
    claim_vms(["host-b"], other, lambda held: [Claim("host-b", f"{prefix}-01", 1, 64)], lease=_minutes(5))
    try:
        assert preview(pattern=pattern, count=1, host="host-b") == [f"{prefix}-02"]
        assert preview(pattern=pattern, count=1, group="rack-1") == [f"{prefix}-02"]
        assert preview(pattern=pattern, count=1, host="host-a") == [f"{prefix}-01"]
    finally:
        release_claims(other)
    assert preview(pattern=pattern, count=1, host="host-b") == [f"{prefix}-01"]
