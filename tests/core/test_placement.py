from __future__ import annotations

import json
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from rackflow.core.fleet import HostSpec
from rackflow.core.placement import (
    CapacityShortfall,
    HttpPlacementPolicy,
    LaunchRequest,
    NodeCapacity,
    PackingPlacement,
    PlacementError,
    PlacementPolicy,
    VmRequest,
    check_placement,
    load_placement_policy,
    nodes_needed,
    plan_vm_placement,
)


def node(
    name: str, group: str = "g1", *, cpus: int = 8, mem: int = 8192, used: int = 0, on: bool = True
) -> NodeCapacity:
    return NodeCapacity(name, group, cpus, mem, used_cpus=used, used_memory_mib=used * 1024, powered_on=on)


def vms(n: int, *, cpus: int = 2, mem: int = 2048, cluster: str | None = "c1", group: str | None = None):
    return [VmRequest(f"{cluster or 'vm'}-{i}", cpus, mem, cluster=cluster, group=group) for i in range(n)]


# --- PackingPlacement -------------------------------------------------------------------------------


def test_packing_fills_fewest_nodes_first_fit_decreasing() -> None:
    nodes = [node("a"), node("b"), node("c")]
    mapping = PackingPlacement().place(vms(4), nodes)
    assert mapping is not None
    assert set(mapping.values()) == {"a"}


def test_packing_prefers_nodes_on_and_already_hosting_vms() -> None:
    nodes = [node("a", on=False), node("b"), node("c", used=2)]
    mapping = PackingPlacement().place(vms(2), nodes)
    assert mapping == {"c1-0": "c", "c1-1": "c"}


def test_packing_uses_off_nodes_only_when_on_nodes_are_full() -> None:
    nodes = [node("a", used=8), node("b", on=False), node("c", on=False)]
    mapping = PackingPlacement().place(vms(3, cpus=4, mem=4096), nodes)
    assert mapping is not None
    assert set(mapping.values()) == {"b", "c"}


def test_packing_respects_memory_as_well_as_cpus() -> None:
    nodes = [node("a", cpus=64, mem=4096), node("b", cpus=64, mem=4096)]
    mapping = PackingPlacement().place(vms(2, cpus=1, mem=3000), nodes)
    assert mapping is not None
    assert sorted(mapping.values()) == ["a", "b"]


def test_packing_keeps_a_cluster_in_one_group() -> None:
    # g1 has room for 2 VMs on each of 2 nodes but the cluster needs 3 node-sized VMs: only g2 fits all.
    nodes = [node("a1", "g1"), node("a2", "g1"), node("b1", "g2"), node("b2", "g2"), node("b3", "g2")]
    mapping = PackingPlacement().place(vms(3, cpus=8, mem=8192), nodes)
    assert mapping is not None
    assert {n for n in mapping.values()} == {"b1", "b2", "b3"}


def test_packing_picks_the_group_needing_fewest_extra_nodes_on() -> None:
    nodes = [
        node("a1", "g1", on=False),
        node("a2", "g1", on=False),
        node("b1", "g2"),
        node("b2", "g2", on=False),
    ]
    mapping = PackingPlacement().place(vms(2, cpus=8, mem=8192), nodes)
    assert mapping is not None
    assert set(mapping.values()) == {"b1", "b2"}


def test_packing_honours_group_pin_and_refuses_when_pinned_group_is_full() -> None:
    nodes = [node("a", "g1"), node("b", "g2")]
    assert set((PackingPlacement().place(vms(1, group="g2"), nodes) or {}).values()) == {"b"}
    assert PackingPlacement().place(vms(5, group="g2"), nodes) is None


def test_packing_returns_none_when_capacity_is_short() -> None:
    assert PackingPlacement().place(vms(1, cpus=16), [node("a"), node("b")]) is None


def test_packing_places_clusterless_vms_independently_across_groups() -> None:
    nodes = [node("a", "g1"), node("b", "g2")]
    mapping = PackingPlacement().place(vms(2, cpus=8, mem=8192, cluster=None), nodes)
    assert mapping is not None
    assert sorted(mapping.values()) == ["a", "b"]


def test_packing_satisfies_its_own_checker_on_a_mixed_fleet() -> None:
    nodes = [node(f"n{i}", f"g{i % 3}", cpus=16, mem=16384, used=i % 5, on=i % 2 == 0) for i in range(30)]
    wanted = [
        VmRequest(f"c{c}-{i}", 1 + (i % 4), 1024 * (1 + i % 3), cluster=f"c{c}")
        for c in range(6)
        for i in range(5)
    ]
    mapping = PackingPlacement().place(wanted, nodes)
    assert mapping is not None
    assert check_placement(wanted, nodes, mapping) == []


def test_check_placement_reports_overload_split_clusters_and_missing_vms() -> None:
    nodes = [node("a", "g1", cpus=2), node("b", "g2")]
    wanted = vms(3, cpus=2)
    problems = check_placement(wanted, nodes, {"c1-0": "a", "c1-1": "a", "c1-x": "zz"})
    text = "; ".join(problems)
    assert "no node for VMs c1-2" in text
    assert "a over capacity" in text and "unknown or excluded nodes zz" in text
    assert "split" in "; ".join(check_placement(vms(2), nodes, {"c1-0": "a", "c1-1": "b"}))


# --- nodes_needed ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Res:
    """Anything with these fields is a reservation to placement (power.Reservation is one)."""

    id: str
    vm_count: int
    vcpus_per_vm: int = 8
    memory_mib_per_vm: int = 8192
    group: str | None = None


def res(rid: str, count: int) -> Res:
    return Res(rid, count)


def test_nodes_needed_names_the_nodes_for_all_reservations() -> None:
    nodes = [node(n) for n in "abcd"]
    need = nodes_needed(PackingPlacement(), [res("r1", 1), res("r2", 2)], nodes)
    assert need is not None
    assert need.nodes == frozenset("abc") and need.unplaced == ()


def test_nodes_needed_counts_only_outstanding_vms() -> None:
    need = nodes_needed(PackingPlacement(), [res("r1", 3)], [node(n) for n in "abcd"], outstanding={"r1": 1})
    assert need is not None and len(need.nodes) == 1


def test_nodes_needed_partial_keeps_earliest_reservations_that_fit() -> None:
    nodes = [node(n) for n in "abc"]
    assert nodes_needed(PackingPlacement(), [res("r1", 2), res("r2", 2)], nodes) is None
    need = nodes_needed(PackingPlacement(), [res("r1", 2), res("r2", 2)], nodes, allow_partial=True)
    assert need is not None
    assert need.placed == ("r1",) and need.unplaced == ("r2",) and len(need.nodes) == 2


def test_nodes_needed_rejects_an_invalid_answer_from_a_policy() -> None:
    class Liar:
        def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
            return {vm.name: "nowhere" for vm in vms}

    with pytest.raises(PlacementError, match="nowhere"):
        nodes_needed(Liar(), [res("r1", 1)], [node("a")])


# --- loading ------------------------------------------------------------------------------------------


class FirstNode:
    def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
        return {vm.name: nodes[0].name for vm in vms} if nodes else None


def test_load_default_and_url_policies() -> None:
    assert isinstance(load_placement_policy(None), PackingPlacement)
    assert isinstance(load_placement_policy("packing"), PackingPlacement)
    policy = load_placement_policy("http://placement.example:8080/place")
    assert isinstance(policy, HttpPlacementPolicy) and policy.url.endswith("/place")


def test_load_policy_by_dotted_path_instantiates_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("site_policies")
    module.FirstNode = FirstNode  # type: ignore[attr-defined]
    module.ready = FirstNode()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "site_policies", module)
    assert isinstance(load_placement_policy("site_policies:FirstNode"), FirstNode)
    assert isinstance(load_placement_policy("site_policies.FirstNode"), FirstNode)
    assert load_placement_policy("site_policies:ready") is module.ready  # type: ignore[attr-defined]
    assert isinstance(load_placement_policy("site_policies:ready"), PlacementPolicy)


def test_load_policy_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import rackflow.core.placement as placement

    module = types.ModuleType("site_ep")
    module.FirstNode = FirstNode  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "site_ep", module)
    ep = EntryPoint(name="first", value="site_ep:FirstNode", group=placement.ENTRY_POINT_GROUP)
    monkeypatch.setattr(placement, "entry_points", lambda group: [ep] if group == ep.group else [])
    assert isinstance(load_placement_policy("first"), FirstNode)


def test_load_policy_errors_name_the_problem() -> None:
    with pytest.raises(PlacementError, match="unknown placement policy 'nosuch'"):
        load_placement_policy("nosuch")
    with pytest.raises(PlacementError, match="cannot load"):
        load_placement_policy("rackflow.core.placement:NoSuchThing")
    with pytest.raises(PlacementError, match="not a placement policy"):
        load_placement_policy("rackflow.core.placement:ENTRY_POINT_GROUP")


# --- HTTP policy --------------------------------------------------------------------------------------


@pytest.fixture
def placement_server() -> Iterator[tuple[str, list[dict[str, Any]], list[tuple[int, bytes]]]]:
    """A loopback placement service: records requests, replies with queued (status, body)."""
    seen: list[dict[str, Any]] = []
    replies: list[tuple[int, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body = replies.pop(0)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/place", seen, replies
    finally:
        server.shutdown()
        server.server_close()


def test_http_policy_posts_documented_json_and_parses_placement(placement_server) -> None:
    url, seen, replies = placement_server
    replies.append((200, json.dumps({"placement": {"c1-0": "b"}}).encode()))
    mapping = HttpPlacementPolicy(url).place(vms(1), [node("a", used=1), node("b", on=False)])
    assert mapping == {"c1-0": "b"}
    assert seen[0]["vms"] == [{"name": "c1-0", "cpus": 2, "memory_mib": 2048, "cluster": "c1", "group": None}]
    assert seen[0]["nodes"][0] == {
        "name": "a",
        "group": "g1",
        "cpus": 8,
        "memory_mib": 8192,
        "used_cpus": 1,
        "used_memory_mib": 1024,
        "powered_on": True,
    }


def test_http_policy_null_placement_means_no_placement(placement_server) -> None:
    url, _, replies = placement_server
    replies.append((200, b'{"placement": null, "reason": "group g1 is full"}'))
    policy = HttpPlacementPolicy(url)
    assert policy.place(vms(1), [node("a")]) is None
    assert policy.last_reason == "group g1 is full"


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (500, b"{}", "HTTP 500"),
        (200, b"not json", "malformed"),
        (200, b'{"placement": ["a"]}', "must map"),
    ],
)
def test_http_policy_failures_raise_placement_error(placement_server, status, body, match) -> None:
    url, _, replies = placement_server
    replies.append((status, body))
    with pytest.raises(PlacementError, match=match):
        HttpPlacementPolicy(url).place(vms(1), [node("a")])


def test_http_policy_unreachable_raises_placement_error() -> None:
    with pytest.raises(PlacementError, match="unreachable"):
        HttpPlacementPolicy("http://127.0.0.1:9/place", timeout=2).place(vms(1), [node("a")])


# --- capacity check for the launcher --------------------------------------------------------------


def host(cpus: int = 8, mem: int = 4096) -> HostSpec:
    return HostSpec(name="host-a", group="g1", cpus=cpus, memory_mib=mem, libvirt_conn_id="libvirt_a")


def test_capacity_check_names_host_and_memory_shortfall() -> None:
    existing = [VmRequest("old-1", 1, 2048), VmRequest("old-2", 1, 1024)]
    check = plan_vm_placement(host(), existing, LaunchRequest(count=3, cpus=1, memory_mib=512))
    assert not check.fits
    assert (
        check.message == "host-a has 1024 MiB memory free, 3 VMs x 512 MiB need 1536 MiB (short by 512 MiB)"
    )
    with pytest.raises(CapacityShortfall, match="short by 512 MiB"):
        check.require()


def test_capacity_check_reports_cpu_shortfall_and_fits_when_room() -> None:
    check = plan_vm_placement(host(cpus=2), [VmRequest("old", 1, 0)], LaunchRequest(2, 1, 128))
    assert check.message == "host-a has 1 vCPU free, 2 VMs x 1 vCPU need 2 vCPUs (short by 1 vCPU)"
    ok = plan_vm_placement(host(), [VmRequest("old", 2, 1024)], LaunchRequest(3, 2, 1024))
    assert ok.fits and ok.free_cpus == 6 and ok.free_memory_mib == 3072
    ok.require()
