"""LaunchVMsOperator, DestroyVMsOperator and the VM DAGs on the devfleet's real libvirtds."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from rackflow.hooks.libvirt import LibvirtHook
from rackflow.operators.libvirt import DestroyVMsOperator, LaunchVMsOperator

HOSTS = {"host-a": "libvirt_host_a", "host-b": "libvirt_host_b", "host-c": "libvirt_host_c"}


def _vms_dag_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "rackflow_vms_dags", Path(__file__).resolve().parents[2] / "dags" / "rackflow_vms.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(conn_id: str, prefix: str) -> list[str]:
    with LibvirtHook(conn_id) as hook:
        return [d.name for d in hook.list_domains(addresses=False) if d.name.startswith(prefix)]


@pytest.fixture
def prefix(rackflow_db: str, devfleet: Any) -> Iterator[str]:
    """A VM name prefix of this test; its VMs are destroyed on every host afterwards."""
    yield from vm_prefix("t")


def vm_prefix(letter: str) -> Iterator[str]:
    """A fresh VM name prefix starting with ``letter``; its VMs on every host are destroyed afterwards."""
    value = f"{letter}{uuid.uuid4().hex[:6]}"
    yield value
    for conn_id in HOSTS.values():
        with LibvirtHook(conn_id) as hook:
            for name in _names(conn_id, value):
                hook.destroy_domain(name)


def _context(run_id: str, task_id: str = "launch") -> dict[str, Any]:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="rackflow_launch_vms_test",
        run_id=run_id,
        task_id=task_id,
        map_index=-1,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
        xcom_pull=lambda task_ids, key="return_value": pushed.get(key),
        pushed=pushed,
    )
    return {"ti": ti}


def _launch(prefix: str, **kw: Any) -> LaunchVMsOperator:
    args: dict[str, Any] = {
        "task_id": "launch",
        "host": "host-a",
        "image": "debian-12.qcow2",
        "count": 3,
        "name_pattern": f"{prefix}-{{seq:02d}}",
        "vcpus": 1,
        "memory_mib": 128,
        "network": "default",
        "deferrable": False,
        "poll_interval": 0.2,
    }
    args.update(kw)
    return LaunchVMsOperator(**args)


def test_launch_dag_creates_the_vms_on_the_chosen_host_only_pushes_names_and_continues_numbering(
    airflow_db: Path, prefix: str
) -> None:
    dag = _vms_dag_module().launch_dag
    conf = {"host": "host-a", "count": 3, "pattern": f"{prefix}-{{seq:02d}}", "memory_mib": 128}
    run = dag.test(run_conf={**conf, "network": "default"})
    assert run.state == "success"
    ti = run.get_task_instance("launch")
    names = [f"{prefix}-01", f"{prefix}-02", f"{prefix}-03"]
    assert ti.xcom_pull(task_ids="launch", key="names") == names
    vms = ti.xcom_pull(task_ids="launch")
    assert [(vm["name"], vm["host"], vm["state"]) for vm in vms] == [(n, "host-a", "running") for n in names]
    assert all(vm["addresses"] for vm in vms)
    assert _names("libvirt_host_a", prefix) == names
    assert _names("libvirt_host_b", prefix) == _names("libvirt_host_c", prefix) == []
    with LibvirtHook("libvirt_host_a") as hook:
        assert {hook.domain(n).state for n in names} == {"running"}  # type: ignore[union-attr]

    again = dag.test(run_conf=conf)
    assert again.state == "success"
    assert again.get_task_instance("launch").xcom_pull(task_ids="launch", key="names") == [
        f"{prefix}-04",
        f"{prefix}-05",
        f"{prefix}-06",
    ]

    destroy = _vms_dag_module().destroy_dag.test(
        run_conf={"host": "host-a", "names": [f"{prefix}-01", f"{prefix}-09"]}
    )
    assert destroy.get_task_instance("destroy").xcom_pull(task_ids="destroy") == {
        "destroyed": [f"{prefix}-01"],
        "absent": [f"{prefix}-09"],
    }


def test_asking_for_more_memory_than_the_host_has_free_fails_before_creating_anything(prefix: str) -> None:
    before = _names("libvirt_host_a", "")
    op = _launch(prefix, count=2, memory_mib=4096)
    with pytest.raises(AirflowFailException, match=r"host-a has \d+ MiB memory free.*short by \d+ MiB"):
        op.execute(_context(f"manual__{prefix}"))
    assert _names("libvirt_host_a", "") == before


def test_a_vm_that_never_runs_fails_the_launch_and_the_runs_vms_are_destroyed(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection (the test driver always runs a started VM): the third VM is paused at once and
    # stays paused, as a guest stuck before running would.
    real_start = LibvirtHook.start_domain

    def start(self: LibvirtHook, name: str) -> None:
        if not name.endswith("-03"):
            return real_start(self, name)
        dom = self.get_conn().lookupByName(name)
        dom.create()
        dom.suspend()

    monkeypatch.setattr(LibvirtHook, "start_domain", start)
    op = _launch(prefix, timeout=1.5)
    with pytest.raises(AirflowException, match=rf"timeout.*{prefix}-03 \(paused\)"):
        op.execute(_context(f"manual__{prefix}"))
    assert _names("libvirt_host_a", prefix) == []
    pool = "default-pool"
    with LibvirtHook("libvirt_host_a") as hook:
        volumes = hook.get_conn().storagePoolLookupByName(pool).listVolumes()
    assert not [v for v in volumes if v.startswith(prefix)]


def test_keep_on_failure_leaves_the_vms_of_a_failed_launch(prefix: str) -> None:
    op = _launch(prefix, count=2, keep_on_failure=True)
    op.execute(_context(f"manual__{prefix}"))
    # The trigger reports a timeout (as it would for VMs that never run): nothing is destroyed.
    event = {"status": "timeout", "message": "not running", "states": {}, "names": []}
    with pytest.raises(AirflowException, match="timeout: not running"):
        op.execute_complete(_context(f"manual__{prefix}"), event)
    assert len(_names("libvirt_host_a", prefix)) == 2


def _launch_slowly(prefix: str, run_id: str) -> None:
    """A task process whose launches take a while (to be killed between two VMs)."""
    real = LibvirtHook.launch_from_image

    def slow(self: LibvirtHook, *args: Any, **kw: Any) -> Any:
        result = real(self, *args, **kw)
        time.sleep(1.0)
        return result

    LibvirtHook.launch_from_image = slow  # type: ignore[method-assign]
    _launch(prefix, count=4).execute(_context(run_id))


def test_task_killed_mid_launch_then_retried_leaves_exactly_count_vms(prefix: str) -> None:
    run_id = f"manual__{prefix}"
    child = multiprocessing.get_context("fork").Process(target=_launch_slowly, args=(prefix, run_id))
    child.start()
    deadline = time.monotonic() + 60
    while len(_names("libvirt_host_a", prefix)) < 2:
        assert time.monotonic() < deadline and child.is_alive(), "the task never launched two VMs"
        time.sleep(0.05)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)  # the worker dies: no cleanup, no on_kill
    child.join()
    assert 2 <= len(_names("libvirt_host_a", prefix)) < 4

    context = _context(run_id)
    result = _launch(prefix, count=4).execute(context)
    names = [f"{prefix}-0{i}" for i in range(1, 5)]
    assert [vm["name"] for vm in result] == names
    assert _names("libvirt_host_a", prefix) == names
    assert context["ti"].pushed["names"] == names
    # And a third attempt of the same run changes nothing.
    _launch(prefix, count=4).execute(_context(run_id))
    assert _names("libvirt_host_a", prefix) == names


def test_explicit_start_refuses_names_that_exist(prefix: str) -> None:
    _launch(prefix, count=1, start=7).execute(_context(f"manual__{prefix}-a"))
    with pytest.raises(AirflowFailException, match=rf"names already exist: \['{prefix}-07'\]"):
        _launch(prefix, count=2, start=6).execute(_context(f"manual__{prefix}-b"))
    assert _names("libvirt_host_a", prefix) == [f"{prefix}-07"]


def test_unknown_host_names_the_known_ones(prefix: str) -> None:
    with pytest.raises(AirflowFailException, match=r"host 'host-z' is not in the inventory.*host-a"):
        _launch(prefix, host="host-z").execute(_context(f"manual__{prefix}"))


def test_destroy_operator_is_idempotent(prefix: str) -> None:
    _launch(prefix, count=1).execute(_context(f"manual__{prefix}"))
    op = DestroyVMsOperator(task_id="destroy", host="host-a", names=[f"{prefix}-01"])
    assert op.execute({}) == {"destroyed": [f"{prefix}-01"], "absent": []}
    assert op.execute({}) == {"destroyed": [], "absent": [f"{prefix}-01"]}
