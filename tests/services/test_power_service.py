"""Power service against real BMCs (sushy-emulator, virtualbmc) and real libvirtds: the issue's acceptance."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from rackflow.core.power import PowerAction, PowerThresholds, ReconcileTimeouts
from rackflow.db.models import Host, HostTransition
from rackflow.db.models import Reservation as ReservationRow
from rackflow.db.session import session_scope
from rackflow.services.power.bmc import run_bounded
from rackflow.services.power.config import PowerConfig, PowerConfigError, load_power_config
from rackflow.services.power.control import PowerRefused, plan_cycle, power_off, power_on
from rackflow.services.power.monitor import monitor_cycle

CONFIG = PowerConfig(
    thresholds=PowerThresholds(off_threshold=timedelta(minutes=60), on_threshold=timedelta(minutes=30)),
    timeouts=ReconcileTimeouts(),
    bmc_timeout=8.0,  # generous: IPMI sessions are slow on a loaded 2-core CI machine
    placement_policy="packing",
)


@pytest.fixture
def fleet(power_fleet):
    power_fleet.reset()
    return power_fleet


def hosts(url: str) -> dict[str, Host]:
    with session_scope(url) as session:
        return {h.name: h for h in session.scalars(select(Host))}


def transitions(url: str, node: str) -> list[HostTransition]:
    with session_scope(url) as session:
        return list(
            session.scalars(
                select(HostTransition).where(HostTransition.host == node).order_by(HostTransition.id)
            )
        )


def test_monitor_records_each_nodes_status_from_its_bmc(fleet):
    fleet.set_powered("pw-b", False)
    report = monitor_cycle(url=fleet.url, config=CONFIG)
    readings = {n.node: n.reading for n in report.nodes}
    assert readings == {"pw-a": "On", "pw-b": "Off", "pw-c": "on"}, [(n.node, n.error) for n in report.nodes]
    # pw-b: mode on + status off -> reconcile powers it on (Redfish really starts the plane domain).
    assert report.node("pw-b").action == "power-on"
    assert fleet.powered("pw-b")
    state = hosts(fleet.url)
    assert (state["pw-a"].status, state["pw-b"].status, state["pw-c"].status) == ("on", "booting", "on")
    monitor_cycle(url=fleet.url, config=CONFIG)
    assert hosts(fleet.url)["pw-b"].status == "on"
    history = [(t.field, t.from_value, t.to_value, t.actor) for t in transitions(fleet.url, "pw-b")]
    assert history == [
        ("status", None, "off", "rackflow_power_monitor"),
        ("status", "off", "booting", "rackflow_power_monitor"),
        ("status", "booting", "on", "rackflow_power_monitor"),
    ]


def test_power_off_with_running_vm_is_refused_and_lists_the_vms(fleet):
    fleet.add_vm("pw-a", "app-01")
    fleet.add_vm("pw-a", "app-02")
    monitor_cycle(url=fleet.url, config=CONFIG)
    with pytest.raises(PowerRefused) as refused:
        power_off("pw-a", actor="alice", url=fleet.url, config=CONFIG)
    assert refused.value.decision.blocking_vms == ("app-01", "app-02")
    assert "app-01, app-02" in str(refused.value)
    assert fleet.powered("pw-a")
    assert hosts(fleet.url)["pw-a"].mode == "on"
    assert [t.field for t in transitions(fleet.url, "pw-a")] == ["status"]  # only the monitor's reading


def test_power_off_with_migration_moves_vm_within_group_then_bmc_reports_off(fleet):
    from rackflow.hooks.redfish import RedfishHook

    fleet.add_vm("pw-a", "app-01")
    monitor_cycle(url=fleet.url, config=CONFIG)
    result = power_off("pw-a", actor="alice", migrate=True, url=fleet.url, config=CONFIG)
    assert result.migrations == {"app-01": "pw-b"}  # pw-b shares pw-a's group; pw-c does not
    assert fleet.vms("pw-a") == []
    assert fleet.vms("pw-b") == ["app-01"]
    assert RedfishHook("pw_redfish_a", timeout=5).get_power_state("pw-a") == "Off"
    assert hosts(fleet.url)["pw-a"].mode == "off"
    monitor_cycle(url=fleet.url, config=CONFIG)
    assert hosts(fleet.url)["pw-a"].status == "stopped"
    mode_change = next(t for t in transitions(fleet.url, "pw-a") if t.field == "mode")
    assert (mode_change.from_value, mode_change.to_value, mode_change.actor) == ("on", "off", "alice")
    assert "app-01 -> pw-b" in (mode_change.reason or "")


def test_power_off_with_migration_but_no_placement_refuses_and_changes_nothing(fleet):
    fleet.add_vm("pw-c", "lonely-01")  # pw-c is alone in group pw-g2
    monitor_cycle(url=fleet.url, config=CONFIG)
    with pytest.raises(PowerRefused, match="no placement"):
        power_off("pw-c", actor="alice", migrate=True, url=fleet.url, config=CONFIG)
    assert fleet.vms("pw-c") == ["lonely-01"]
    assert fleet.powered("pw-c")
    assert hosts(fleet.url)["pw-c"].mode == "on"


def test_power_on_and_off_through_ipmi(fleet):
    monitor_cycle(url=fleet.url, config=CONFIG)
    power_off("pw-c", actor="operator", hard=True, url=fleet.url, config=CONFIG)
    assert not fleet.powered("pw-c")
    power_on("pw-c", actor="operator", url=fleet.url, config=CONFIG)
    assert fleet.powered("pw-c")
    assert hosts(fleet.url)["pw-c"].status == "booting"
    monitor_cycle(url=fleet.url, config=CONFIG)
    assert hosts(fleet.url)["pw-c"].status == "on"


def test_thresholds_off_10_min_on_15_min_rejected_at_load_with_reason(monkeypatch):
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_OFF_THRESHOLD", "10m")
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_ON_THRESHOLD", "15m")
    with pytest.raises(PowerConfigError) as err:
        load_power_config()
    message = str(err.value)
    assert "power_off_threshold='10m'" in message
    assert "OffThreshold (10 min) must exceed OnThreshold (15 min)" in message
    assert "flapping" in message


def test_thresholds_equal_rejected_and_valid_ones_load(monkeypatch):
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_OFF_THRESHOLD", "20m")
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_ON_THRESHOLD", "20m")
    with pytest.raises(PowerConfigError, match="Off = On"):
        load_power_config()
    monkeypatch.setenv("AIRFLOW__RACKFLOW__POWER_OFF_THRESHOLD", "45m")
    config = load_power_config()
    assert config.thresholds.guaranteed_off == timedelta(minutes=25)


def _reserve(url: str, *, start: datetime, minutes: int, vms: int, cpus: int, group: str | None) -> None:
    with session_scope(url) as session:
        session.add(
            ReservationRow(
                name="cluster-x",
                start=start,
                end=start + timedelta(minutes=minutes),
                vm_count=vms,
                vcpus_per_vm=cpus,
                memory_mib_per_vm=1024,
                group=group,
                created_by="alice",
            )
        )


def test_planner_powers_on_two_off_nodes_for_reservation_in_20_min_with_on_threshold_30(fleet):
    # pw-a and pw-b are off (mode off: an operator or an earlier planner cycle turned them off).
    monitor_cycle(url=fleet.url, config=CONFIG)
    for node in ("pw-a", "pw-b"):
        power_off(node, actor="operator", url=fleet.url, config=CONFIG)
    monitor_cycle(url=fleet.url, config=CONFIG)
    assert {n: h.status for n, h in hosts(fleet.url).items()} == {
        "pw-a": "stopped",
        "pw-b": "stopped",
        "pw-c": "on",
    }
    now = datetime.now(UTC)
    # 2 VMs of 8 vCPUs: each needs a whole 8-vCPU node of group pw-g1.
    _reserve(fleet.url, start=now + timedelta(minutes=20), minutes=60, vms=2, cpus=8, group="pw-g1")
    dry = plan_cycle(url=fleet.url, config=CONFIG, now=now, dry_run=True)
    assert sorted(dry.plan.nodes(PowerAction.ON)) == ["pw-a", "pw-b"]
    assert not fleet.powered("pw-a")  # dry run changed nothing
    report = plan_cycle(url=fleet.url, config=CONFIG, now=now)
    assert sorted(a.node for a in report.plan.actions if a.action.value == "on") == ["pw-a", "pw-b"]
    assert fleet.powered("pw-a") and fleet.powered("pw-b")
    # pw-c (other group, idle, not needed by reservations within OffThreshold) is powered off.
    assert [a.node for a in report.plan.actions if a.action.value == "off"] == ["pw-c"]
    assert not fleet.powered("pw-c")
    why = next(t for t in transitions(fleet.url, "pw-a") if t.actor == "rackflow_power_planner")
    assert "OnThreshold 30 min" in (why.reason or "") and why.to_value == "on"


def test_planner_with_no_reservations_leaves_idle_nodes_on_as_the_notes_say(fleet):
    monitor_cycle(url=fleet.url, config=CONFIG)
    report = plan_cycle(url=fleet.url, config=CONFIG)
    assert report.plan.actions == ()
    assert any("power-off control: no reservation" in n for n in report.plan.notes)
    assert all(fleet.powered(n) for n in ("pw-a", "pw-b", "pw-c"))


def test_planner_never_powers_off_a_node_running_vms(fleet):
    fleet.add_vm("pw-c", "keep-01")
    monitor_cycle(url=fleet.url, config=CONFIG)
    _reserve(
        fleet.url, start=datetime.now(UTC) + timedelta(minutes=5), minutes=30, vms=1, cpus=2, group="pw-g1"
    )
    report = plan_cycle(url=fleet.url, config=CONFIG)
    assert "pw-c" not in [a.node for a in report.plan.actions]
    assert any(s.node == "pw-c" and "keep-01" in s.reason for s in report.plan.skipped)
    assert fleet.powered("pw-c")


def test_stopped_bmc_makes_only_its_node_error_stopped_while_others_are_managed(fleet):
    monitor_cycle(url=fleet.url, config=CONFIG)
    emulator = fleet.redfish["pw-b"]
    emulator.stop()
    try:
        with session_scope(fleet.url) as session:
            session.get(Host, "pw-c").mode = "off"  # type: ignore[union-attr]
        first = monitor_cycle(url=fleet.url, config=CONFIG)
        second = monitor_cycle(url=fleet.url, config=CONFIG)
        state = hosts(fleet.url)
        assert state["pw-b"].status == "error-stopped"
        assert "failed" in (state["pw-b"].last_error or "")
        assert first.node("pw-b").action == "mark-error-stopped"
        # The others were read and reconciled in the same cycles: pw-c (mode off) was powered off.
        assert first.node("pw-c").action == "power-off"
        assert not fleet.powered("pw-c")
        assert state["pw-a"].status == "on" and state["pw-c"].status == "stopped"
        assert second.node("pw-a").reading == "On"
    finally:
        emulator.start()
    # The BMC is back: the next cycle sees the node on again.
    monitor_cycle(url=fleet.url, config=CONFIG)
    assert hosts(fleet.url)["pw-b"].status == "on"


def test_booting_past_timeout_becomes_error_stopped(fleet):
    monitor_cycle(url=fleet.url, config=CONFIG)
    fleet.set_powered("pw-a", False)  # the node "never comes up"
    with session_scope(fleet.url) as session:
        host = session.get(Host, "pw-a")
        assert host is not None
        host.status, host.status_since = "booting", datetime.now(UTC) - timedelta(minutes=11)
    report = monitor_cycle(url=fleet.url, config=CONFIG)
    assert report.node("pw-a").action == "mark-error-stopped"
    assert "longer than the 10 min timeout" in (hosts(fleet.url)["pw-a"].last_error or "")


def test_bounded_calls_take_the_slowest_not_the_sum():
    """Plain functions stand in for BMCs here: sleeping is the fault a real BMC cannot be told to do."""

    def slow(seconds: float):  # type: ignore[no-untyped-def]
        return lambda: time.sleep(seconds) or seconds

    calls = {f"bmc-{i}": slow(0.3) for i in range(20)}
    calls["hung"] = slow(30)
    results = run_bounded(calls, timeout=1.0)
    assert all(results[f"bmc-{i}"].value == 0.3 for i in range(20))
    assert results["hung"].error == "no answer within 1s"
