"""/rackflow/api/hosts: the fleet layout through Airflow's real API app, against the devfleet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rackflow.hooks.libvirt import DomainSpec, LibvirtHook
from rackflow.services.fleet_layout import HostRecord, LayoutService
from rackflow_devfleet.fleet import _reset_domains
from rackflow_devfleet.servers import Libvirtd, free_port


@pytest.fixture
def layout_api(api: Any, rackflow_db: str, devfleet: Any) -> Iterator[Any]:
    from rackflow_plugin.api.fleet import layout_service

    layout_service().forget_uris()
    yield api
    layout_service().forget_uris()


def test_hosts_without_a_token_is_401(layout_api: Any) -> None:
    assert layout_api.get("/rackflow/api/hosts").status_code == 401
    assert layout_api.get("/rackflow/api/hosts/host-a").status_code == 401
    assert layout_api.get("/rackflow/ui/app/rackflow.umd.js").status_code == 401


def test_the_layout_says_who_may_launch(layout_api: Any, auth: Any) -> None:
    # Everyone who reads the layout sees it; only the operator (and admins) get the launch form.
    for user, allowed in (("victor", False), ("alice", False), ("operator", True), ("admin", True)):
        resp = layout_api.get("/rackflow/api/hosts", headers=auth(user))
        assert resp.status_code == 200 and resp.json()["can_launch"] is allowed, user


def test_a_viewer_reads_every_host_with_group_power_capacity_and_vms(layout_api: Any, auth: Any) -> None:
    resp = layout_api.get("/rackflow/api/hosts", headers=auth("victor"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    hosts = {h["name"]: h for h in body["hosts"]}
    assert list(hosts) == ["host-a", "host-b", "host-c"]
    assert body["groups"] == ["rack-1", "rack-2"]
    a = hosts["host-a"]
    assert (a["group"], a["cpus"], a["memory_mib"], a["hypervisor"]) == ("rack-1", 16, 3072, "ok")
    assert {"mode", "status", "status_since", "last_error"} <= set(a)  # power fields from the inventory
    db01 = next(vm for vm in a["vms"] if vm["name"] == "db-01")
    assert (db01["state"], db01["vcpus"], db01["memory_mib"]) == ("running", 1, 256)
    assert a["used_cpus"] == sum(vm["vcpus"] for vm in a["vms"])
    assert a["free_memory_mib"] == 3072 - sum(vm["memory_mib"] for vm in a["vms"])
    assert {"cache-01", "cache-02"} <= {vm["name"] for vm in hosts["host-b"]["vms"]}


def test_group_filter_and_host_detail(layout_api: Any, auth: Any) -> None:
    rack2 = layout_api.get("/rackflow/api/hosts", params={"group": "rack-2"}, headers=auth("victor")).json()
    assert [h["name"] for h in rack2["hosts"]] == ["host-c"]
    assert rack2["groups"] == ["rack-1", "rack-2"]  # the filter still offers every group
    detail = layout_api.get("/rackflow/api/hosts/host-a", headers=auth("victor")).json()
    db01 = next(vm for vm in detail["vms"] if vm["name"] == "db-01")
    assert db01["uuid"] and db01["disks"] == []
    missing = layout_api.get("/rackflow/api/hosts/host-z", headers=auth("victor"))
    assert missing.status_code == 404 and "host-z" in missing.json()["detail"]


def test_a_host_whose_libvirt_does_not_answer_is_unreachable_and_the_others_still_listed(
    layout_api: Any, auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # host-b's connection points at a port where no libvirtd listens (the shared devfleet keeps running).
    dead = f"test+tcp://127.0.0.1:{free_port()}/default"
    monkeypatch.setenv("AIRFLOW_CONN_LIBVIRT_HOST_B", json.dumps({"conn_type": "libvirt", "host": dead}))
    hosts = {
        h["name"]: h for h in layout_api.get("/rackflow/api/hosts", headers=auth("victor")).json()["hosts"]
    }
    assert hosts["host-b"]["hypervisor"] == "unreachable"
    assert dead in hosts["host-b"]["hypervisor_error"]
    assert hosts["host-b"]["vms"] == [] and hosts["host-b"]["free_cpus"] is None
    assert hosts["host-a"]["hypervisor"] == hosts["host-c"]["hypervisor"] == "ok"
    assert any(vm["name"] == "db-01" for vm in hosts["host-a"]["vms"])


def test_layout_reports_a_stopped_libvirtd_unreachable_and_reconnects_when_it_is_back(tmp_path: Path) -> None:
    servers = {name: Libvirtd(workdir=tmp_path / name).start() for name in ("a", "b")}
    try:
        for server in servers.values():
            _reset_domains(server, ["vm-01"])
        records = [
            HostRecord(name=f"host-{n}", group="g", rack=None, cpus=16, memory_mib=3072, libvirt_conn_id=n)
            for n in servers
        ]
        service = LayoutService(resolve_uri=lambda conn_id: servers[conn_id].uri, host_timeout=10)
        try:
            assert [h["hypervisor"] for h in service.build(records)] == ["ok", "ok"]
            port = servers["b"].port
            servers["b"].stop()
            a, b = service.build(records)
            assert (a["hypervisor"], [vm["name"] for vm in a["vms"]]) == ("ok", ["vm-01"])
            assert b["hypervisor"] == "unreachable" and f"127.0.0.1:{port}" in b["hypervisor_error"]
            servers["b"] = Libvirtd(workdir=tmp_path / "b2", port=port).start()
            assert [h["hypervisor"] for h in service.build(records)] == ["ok", "ok"]
        finally:
            service.close()
    finally:
        for server in servers.values():
            server.stop()


def test_layout_counts_defined_but_stopped_vms_as_used(tmp_path: Path) -> None:
    server = Libvirtd(workdir=tmp_path / "h").start()
    try:
        _reset_domains(server, [])
        with LibvirtHook(uri=server.uri) as hook:
            hook.define_domain(DomainSpec(name="off-01", vcpus=3, memory_mib=300))
        service = LayoutService(resolve_uri=lambda _c: server.uri)
        record = HostRecord(name="h", group="g", rack=None, cpus=8, memory_mib=1000, libvirt_conn_id="h")
        (host,) = service.build([record])
        service.close()
        assert (host["used_cpus"], host["free_cpus"], host["free_memory_mib"]) == (3, 5, 700)
        assert (host["vm_count"], host["running_vms"], host["vms"][0]["state"]) == (1, 0, "shutoff")
    finally:
        server.stop()


def test_vm_name_preview_continues_after_the_hosts_names_and_names_the_bad_field(
    layout_api: Any, auth: Any
) -> None:
    def preview(**params: Any) -> Any:
        return layout_api.get("/rackflow/api/vm-names", params=params, headers=auth("victor"))

    assert (
        layout_api.get("/rackflow/api/vm-names", params={"pattern": "x-{seq}", "count": 1}).status_code == 401
    )
    # host-b already runs cache-01 and cache-02: a launch of two more goes on at 03.
    resp = preview(pattern="cache-{seq:02d}", count=2, host="host-b")
    assert resp.status_code == 200, resp.text
    assert resp.json()["names"] == ["cache-03", "cache-04"]
    assert preview(pattern="hadoop-{seq:02d}", count=3, host="host-c").json()["names"] == [
        "hadoop-01",
        "hadoop-02",
        "hadoop-03",
    ]
    assert preview(pattern="web{seq}", count=2, start=9, group="rack-1").json()["names"] == ["web9", "web10"]
    taken = preview(pattern="cache-{seq:02d}", count=1, start=1, host="host-b")
    assert taken.status_code == 400 and taken.json()["detail"]["field"] == "start"
    assert "cache-01" in taken.json()["detail"]["message"]
    for pattern in ("Hadoop-{seq}", "no-field", "{seq:x}-a", "a-{seq}-{seq}"):
        bad = preview(pattern=pattern, count=1, host="host-a")
        assert bad.status_code == 400 and bad.json()["detail"]["field"] == "pattern", pattern
    assert preview(pattern="a-{seq}", count=0, host="host-a").status_code == 422
    assert preview(pattern="a-{seq}", count=101, host="host-a").status_code == 422
    assert preview(pattern="a-{seq}", count=1).json()["detail"]["field"] == "host"
    missing = preview(pattern="a-{seq}", count=1, host="host-z")
    assert missing.status_code == 404 and "host-z" in missing.json()["detail"]["message"]
