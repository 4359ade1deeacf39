"""Launches over a network group on the devfleet's real libvirtds, placed by the placement policy, and
the build-environment DAG running its jobnet on VMs placed that way."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rackflow.hooks.libvirt import LibvirtHook
from tests.operators.test_libvirt import HOSTS, _context, _launch, _names
from tests.operators.test_libvirt_claims import free_on, virsh_usage


@pytest.fixture
def prefix(rackflow_db: str, devfleet: Any) -> Iterator[str]:
    """A VM name prefix of this test; its VMs are destroyed on every host afterwards."""
    value = f"g{uuid.uuid4().hex[:6]}"
    yield value
    for conn_id in HOSTS.values():
        with LibvirtHook(conn_id) as hook:
            for name in _names(conn_id, value):
                hook.destroy_domain(name)


def four_per_host(devfleet: Any) -> int:
    """MiB per VM such that each host of rack-1 (host-a, host-b) has room for exactly four."""
    free = [free_on(devfleet, host)[1] for host in ("host-a", "host-b")]
    memory = max(free) // 5 + 1
    assert all(4 * memory <= f < 5 * memory for f in free), f"rack-1 free memory {free} does not allow it"
    return memory


def test_six_vms_over_a_group_whose_hosts_each_fit_four_land_on_two_hosts_of_the_group(
    devfleet: Any, prefix: str
) -> None:
    memory = four_per_host(devfleet)
    context = _context(f"manual__{prefix}")
    result = _launch(prefix, host=None, group="rack-1", count=6, memory_mib=memory).execute(context)

    names = [f"{prefix}-0{i}" for i in range(1, 7)]
    assert [vm["name"] for vm in result] == names and {vm["state"] for vm in result} == {"running"}
    plan = context["ti"].pushed["plan"]
    assert plan == {vm["name"]: vm["host"] for vm in result}
    # The packing policy fills the first host of the group, then the second.
    assert Counter(plan.values()) == {"host-a": 4, "host-b": 2}
    for host in ("host-a", "host-b"):
        on_host = sorted(n for n in virsh_usage(devfleet.hosts[host].uri) if n.startswith(prefix))
        assert on_host == sorted(n for n, h in plan.items() if h == host)
    assert _names("libvirt_host_c", prefix) == []  # rack-2 is not in the group


def test_a_group_launch_that_does_not_fit_fails_before_creating_anything_naming_the_shortfall(
    devfleet: Any, prefix: str
) -> None:
    memory = four_per_host(devfleet)
    with pytest.raises(
        AirflowFailException,
        match=r"refusing to launch over group rack-1: group rack-1 cannot take 9 VMs x 1 vCPU/\d+ MiB: "
        r"host-a .*\(room for 4\), host-b .*\(room for 4\); short by 1 VM",
    ):
        _launch(prefix, host=None, group="rack-1", count=9, memory_mib=memory).execute(
            _context(f"manual__{prefix}")
        )
    assert _names("libvirt_host_a", prefix) == _names("libvirt_host_b", prefix) == []


def test_an_unknown_group_names_the_known_ones(prefix: str) -> None:
    with pytest.raises(AirflowFailException, match=r"group 'rack-9' is not in the inventory.*rack-1"):
        _launch(prefix, host=None, group="rack-9").execute(_context(f"manual__{prefix}"))


def six_server_jobnet() -> str:
    """A jobnet of six launched servers, one step on each (in parallel) naming the VM it ran on."""
    lines = ["name: six", "params:", "  out: {type: string}", "servers:"]
    lines += [f"  s{i}: {{from_launch: launch, index: {i}}}" for i in range(6)]
    lines.append("steps:")
    for i in range(6):
        lines += [
            f"  {'- -' if i == 0 else '  -'} id: hello-{i}",
            f"      server: s{i}",
            '      command: echo "step on $RACKFLOW_SERVER" >> "$RACKFLOW_PARAM_OUT"',
        ]
    return "\n".join(lines) + "\n"


def test_the_build_environment_dag_runs_its_jobnet_on_vms_placed_over_a_group(
    airflow_db: Path, devfleet: Any, prefix: str, tmp_path: Path
) -> None:
    from rackflow.core.jobnet import load_jobnets
    from rackflow.dag_factories.build_environment import build_environment_dag
    from tests.dag_factories.jobnet_support import run_dag

    folder = tmp_path / "jobnets"
    folder.mkdir()
    (folder / "six.yaml").write_text(six_server_jobnet())
    library = load_jobnets(folder)
    assert not library.errors, library.errors
    dag = build_environment_dag(
        library, "six", dag_id=f"build_env_test_{prefix}", groups=["rack-1", "rack-2"]
    )
    out = tmp_path / "steps.log"
    out.touch(mode=0o666)
    memory = four_per_host(devfleet)
    run = run_dag(
        dag,
        {
            "group": "rack-1",
            "count": 6,
            "memory_mib": memory,
            "pattern": f"{prefix}-{{seq:02d}}",
            "out": str(out),
        },
    )
    assert str(run.state) == "success"
    ti = run.get_task_instance("launch")
    plan = ti.xcom_pull(task_ids="launch", key="plan")
    assert Counter(plan.values()) == {"host-a": 4, "host-b": 2}
    # Every step ran on the launched VM its server is bound to, by name.
    assert sorted(out.read_text().splitlines()) == [f"step on {name}" for name in sorted(plan)]
    assert {vm["name"]: vm["host"] for vm in ti.xcom_pull(task_ids="launch")} == plan
    assert str(run.get_task_instance("destroy_vms").state) == "skipped"


def test_the_hadoop_build_environment_dag_builds_its_cluster_on_vms_placed_over_a_group(
    airflow_db: Path, devfleet: Any, prefix: str, tmp_path: Path
) -> None:
    import importlib.util

    from tests.dag_factories.jobnet_support import run_dag

    path = Path(__file__).resolve().parents[2] / "dags" / "rackflow_build_environment.py"
    spec = importlib.util.spec_from_file_location("rackflow_build_env_dags", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.__dict__["build_env_hadoop-cluster"]
    root = tmp_path / "root"
    memory = four_per_host(devfleet)
    conf = {"group": "rack-1", "count": 6, "memory_mib": memory, "pattern": f"{prefix}-{{seq:02d}}"}
    run = run_dag(dag, {**conf, "root": str(root), "daemon_seconds": 5})

    assert str(run.state) == "success"
    plan = run.get_task_instance("launch").xcom_pull(task_ids="launch", key="plan")
    assert Counter(plan.values()) == {"host-a": 4, "host-b": 2}
    report = run.get_task_instance("report").xcom_pull(task_ids="report", key="report")
    assert {row["state"] for row in report} == {"succeeded"}
    assert {row["step_id"] for row in report} >= {"install-java-nn", "smoke-test"}
    assert (root / "nn" / "opt" / "java" / "VERSION").exists()


def test_a_group_launch_uses_only_the_powered_on_hosts_of_the_group(devfleet: Any, prefix: str) -> None:
    from rackflow.db.models import Host
    from rackflow.db.session import session_scope

    memory = four_per_host(devfleet)
    with session_scope() as session:
        host = session.get(Host, "host-b")
        assert host is not None
        before = (host.mode, host.status)
        host.mode, host.status = "off", "stopped"
    try:
        with pytest.raises(
            AirflowFailException, match=r"group rack-1 cannot take 6 VMs.*: host-a .*short by 2 VMs"
        ):
            _launch(prefix, host=None, group="rack-1", count=6, memory_mib=memory).execute(
                _context(f"manual__{prefix}")
            )
        result = _launch(prefix, host=None, group="rack-1", count=3, memory_mib=memory).execute(
            _context(f"manual__{prefix}-b")
        )
        assert {vm["host"] for vm in result} == {"host-a"}
    finally:
        with session_scope() as session:
            host = session.get(Host, "host-b")
            assert host is not None
            host.mode, host.status = before


def test_launched_vms_come_back_in_sequence_order_not_name_order(prefix: str) -> None:
    # A jobnet's launched server #i is the i-th VM of the list: web9 before web10.
    context = _context(f"manual__{prefix}")
    result = _launch(
        prefix, host=None, group="rack-1", count=2, start=9, name_pattern=f"{prefix}n{{seq}}"
    ).execute(context)
    assert [vm["name"] for vm in result] == [f"{prefix}n9", f"{prefix}n10"]
    assert (
        list(context["ti"].pushed["plan"]) == context["ti"].pushed["names"] == [f"{prefix}n9", f"{prefix}n10"]
    )
