from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

import rackflow.core.power as power_module
from rackflow.core.placement import NodeCapacity, PlacementError, VmRequest
from rackflow.core.power import (
    NodeView,
    PowerAction,
    PowerMode,
    PowerStatus,
    PowerThresholds,
    ReconcileAction,
    ReconcileTimeouts,
    Reservation,
    ReservationBook,
    UnknownPowerState,
    decide_power_off,
    decide_power_on,
    plan_power,
    reconcile,
    reconcile_node,
    status_from_ipmi,
    status_from_redfish,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
S = PowerStatus


def nv(
    name: str,
    status: PowerStatus = S.ON,
    *,
    group: str = "g1",
    mode: PowerMode | None = None,
    vms: tuple[str, ...] = (),
    booting: tuple[str, ...] = (),
    cpus: int = 8,
    mem: int = 8192,
    vm_cpus: int = 2,
    cluster: str | None = None,
    since: timedelta = timedelta(0),
) -> NodeView:
    def vm(n: str) -> VmRequest:
        return VmRequest(n, vm_cpus, vm_cpus * 1024, cluster=cluster)

    return NodeView(
        name=name,
        group=group,
        cpus=cpus,
        memory_mib=mem,
        mode=mode or (PowerMode.ON if status in (S.ON, S.BOOTING) else PowerMode.OFF),
        status=status,
        status_since=NOW - since,
        vms_running=tuple(vm(n) for n in vms),
        vms_booting=tuple(vm(n) for n in booting),
    )


def rsv(
    rid: str, starts_in: timedelta, count: int, *, hours: float = 2, cpus: int = 8, group: str | None = None
):
    start = NOW + starts_in
    return Reservation(
        id=rid,
        start=start,
        end=start + timedelta(hours=hours),
        vm_count=count,
        vcpus_per_vm=cpus,
        memory_mib_per_vm=cpus * 1024,
        group=group,
    )


TH = PowerThresholds(off_threshold=timedelta(minutes=60), on_threshold=timedelta(minutes=30))
MIN = timedelta(minutes=1)


def test_core_power_and_placement_import_nothing_from_airflow() -> None:
    core = Path(power_module.__file__).parent
    for path in (core / "power.py", core / "placement.py"):
        tree = ast.parse(path.read_text())
        for stmt in ast.walk(tree):
            names = (
                [a.name for a in stmt.names]
                if isinstance(stmt, ast.Import)
                else [stmt.module or ""]
                if isinstance(stmt, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "airflow" for n in names), path


# --- BMC state mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "previous", "in_flight", "expected"),
    [
        ("On", S.OFF, None, S.ON),
        ("On", S.BOOTING, PowerAction.ON, S.ON),
        ("On", S.ERROR_STOPPED, None, S.ON),
        ("On", S.ON, PowerAction.OFF, S.STOPPING),
        ("Off", S.ON, None, S.OFF),
        ("Off", S.OFF, PowerAction.ON, S.BOOTING),  # accepted power-on, chassis not switched yet
        ("Off", S.BOOTING, PowerAction.ON, S.BOOTING),  # still booting; the boot timeout decides
        ("Off", S.BOOTING, None, S.ERROR_STOPPED),  # fell over while booting
        ("Off", S.STOPPING, PowerAction.OFF, S.STOPPED),
        ("Off", S.STOPPING, None, S.STOPPED),
        ("Off", S.ERROR_STOPPED, None, S.ERROR_STOPPED),  # stays until an operator acts
        ("Off", S.ERROR_STOPPED, PowerAction.ON, S.BOOTING),  # manual power on clears it
        ("Off", S.SUSPENDING, None, S.SUSPENDED),
        ("PoweringOn", S.OFF, PowerAction.ON, S.BOOTING),
        ("PoweringOff", S.ON, PowerAction.OFF, S.STOPPING),
        ("Paused", S.ON, None, S.SUSPENDED),
        ("poweringon", S.OFF, None, S.BOOTING),
    ],
)
def test_redfish_power_state_maps_to_one_vocabulary(raw, previous, in_flight, expected) -> None:
    assert status_from_redfish(raw, previous=previous, action_in_flight=in_flight) is expected


@pytest.mark.parametrize(
    ("raw", "previous", "in_flight", "expected"),
    [
        ("on", S.OFF, None, S.ON),
        ("off", S.ON, None, S.OFF),
        ("Chassis Power is off", S.OFF, PowerAction.ON, S.BOOTING),
        ("Chassis Power is on", S.ON, PowerAction.OFF, S.STOPPING),
        (True, S.BOOTING, None, S.ON),
        (False, S.STOPPING, None, S.STOPPED),
    ],
)
def test_ipmi_chassis_power_maps_to_one_vocabulary(raw, previous, in_flight, expected) -> None:
    assert status_from_ipmi(raw, previous=previous, action_in_flight=in_flight) is expected


@pytest.mark.parametrize("raw", [None, "", "Reset", "standby"])
def test_unknown_bmc_states_are_rejected_not_guessed(raw) -> None:
    with pytest.raises(UnknownPowerState):
        status_from_redfish(raw, previous=S.ON)
    with pytest.raises(UnknownPowerState):
        status_from_ipmi(raw, previous=S.ON)


# --- manual control ------------------------------------------------------------------------------


def test_power_on_is_always_allowed() -> None:
    for status in PowerStatus:
        decision = decide_power_on(nv("a", status, vms=("vm-1",)))
        assert decision.allowed and decision.action is PowerAction.ON


def test_power_off_of_idle_node_is_allowed() -> None:
    decision = decide_power_off(nv("a"))
    assert decision.allowed and decision.migrations == {}


def test_power_off_refused_while_node_runs_vms_and_names_them() -> None:
    decision = decide_power_off(nv("a", vms=("vm-1", "vm-2")))
    assert not decision.allowed
    assert decision.blocking_vms == ("vm-1", "vm-2")
    assert "vm-1, vm-2" in decision.reason


def test_power_off_refused_while_node_boots_vms_even_with_migration() -> None:
    a = nv("a", vms=("vm-1",), booting=("vm-2",))
    decision = decide_power_off(a, migrate=True, fleet=[a, nv("b")])
    assert not decision.allowed
    assert decision.blocking_vms == ("vm-2",) and "booting VMs vm-2" in decision.reason


def test_power_off_with_migration_plans_moves_within_the_group() -> None:
    a = nv("a", group="g1", vms=("vm-1", "vm-2"), cluster="c1")
    fleet = [a, nv("x", group="g2"), nv("b", group="g1"), nv("c", group="g1", cpus=2)]
    decision = decide_power_off(a, migrate=True, fleet=fleet)
    assert decision.allowed
    assert decision.migrations == {"vm-1": "b", "vm-2": "b"}
    assert "vm-1 -> b" in decision.reason and decision.reason.endswith("then power off a")


def test_power_off_with_migration_refused_when_no_placement_and_nothing_changes() -> None:
    a = nv("a", group="g1", vms=("vm-1", "vm-2"), vm_cpus=4)
    # Room only in another group or on nodes that are off.
    fleet = [a, nv("x", group="g2"), nv("b", S.OFF, group="g1"), nv("c", group="g1", cpus=4)]
    before = [n.model_copy() for n in fleet]
    decision = decide_power_off(a, migrate=True, fleet=fleet)
    assert not decision.allowed and decision.migrations == {}
    assert "no placement for VMs vm-1, vm-2" in decision.reason and "nothing changed" in decision.reason
    assert fleet == before


def test_power_off_with_migration_refuses_on_policy_failure_or_bad_answer() -> None:
    a = nv("a", vms=("vm-1",))

    class Down:
        def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
            raise PlacementError("service unreachable")

    class BackToSender:
        def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
            return {vm.name: "a" for vm in vms}

    for policy, text in ((Down(), "service unreachable"), (BackToSender(), "invalid")):
        decision = decide_power_off(a, migrate=True, fleet=[a, nv("b")], policy=policy)
        assert not decision.allowed and text in decision.reason and decision.migrations == {}


# --- reconcile ----------------------------------------------------------------------------------


def test_reconcile_powers_on_when_mode_on_and_status_off_or_stopped() -> None:
    for status in (S.OFF, S.STOPPED):
        step = reconcile_node(nv("a", status, mode=PowerMode.ON), now=NOW)
        assert step.action is ReconcileAction.POWER_ON and step.new_status is S.BOOTING


def test_reconcile_powers_off_idle_node_with_mode_off_but_waits_for_vms() -> None:
    idle = reconcile_node(nv("a", S.ON, mode=PowerMode.OFF), now=NOW)
    assert idle.action is ReconcileAction.POWER_OFF and idle.new_status is S.STOPPING
    busy = reconcile_node(nv("a", S.ON, mode=PowerMode.OFF, vms=("vm-1",)), now=NOW)
    assert busy.action is ReconcileAction.NONE and "vm-1" in busy.reason


def test_reconcile_error_stops_booting_or_stopping_past_timeout() -> None:
    timeouts = ReconcileTimeouts(boot_timeout=timedelta(minutes=10), stop_timeout=timedelta(minutes=5))
    late_boot = reconcile_node(nv("a", S.BOOTING, since=timedelta(minutes=11)), now=NOW, timeouts=timeouts)
    assert late_boot.action is ReconcileAction.MARK_ERROR and late_boot.new_status is S.ERROR_STOPPED
    assert late_boot.error is not None and "10 min timeout" in late_boot.error
    on_time = reconcile_node(nv("a", S.BOOTING, since=timedelta(minutes=9)), now=NOW, timeouts=timeouts)
    assert on_time.action is ReconcileAction.NONE
    late_stop = reconcile_node(
        nv("a", S.STOPPING, mode=PowerMode.OFF, since=timedelta(minutes=6)), now=NOW, timeouts=timeouts
    )
    assert late_stop.new_status is S.ERROR_STOPPED


def test_reconcile_error_stops_on_unreachable_bmc_with_the_error() -> None:
    steps = reconcile(
        [nv("a"), nv("b", S.OFF, mode=PowerMode.ON)], now=NOW, bmc_errors={"b": "connection refused"}
    )
    assert steps[0].action is ReconcileAction.NONE
    assert steps[1].action is ReconcileAction.MARK_ERROR
    assert steps[1].new_status is S.ERROR_STOPPED and steps[1].error == "connection refused"


def test_reconcile_leaves_error_stopped_nodes_to_an_operator() -> None:
    step = reconcile_node(nv("a", S.ERROR_STOPPED, mode=PowerMode.ON), now=NOW)
    assert step.action is ReconcileAction.NONE and "operator" in step.reason


# --- thresholds ----------------------------------------------------------------------------------


def test_thresholds_off_smaller_than_on_rejected_with_flapping_reason() -> None:
    with pytest.raises(ValidationError) as err:
        PowerThresholds(off_threshold=timedelta(minutes=10), on_threshold=timedelta(minutes=15))
    text = str(err.value)
    assert "OffThreshold (10 min) must exceed OnThreshold (15 min)" in text and "flapping" in text


def test_thresholds_equal_rejected_because_power_on_may_follow_power_off() -> None:
    with pytest.raises(ValidationError, match="powered on right after it was powered off"):
        PowerThresholds.model_validate({"off_threshold": "15m", "on_threshold": "15m"})


def test_thresholds_parse_config_strings_and_guarantee_off_time() -> None:
    th = PowerThresholds.model_validate({"off_threshold": "1h", "on_threshold": 900})
    assert th.off_threshold == timedelta(hours=1) and th.on_threshold == timedelta(minutes=15)
    assert th.guaranteed_off == timedelta(minutes=45)
    assert PowerThresholds.model_validate({"off_threshold": "PT20M", "on_threshold": "90s"}).on_threshold == (
        timedelta(seconds=90)
    )


@pytest.mark.parametrize(
    "value", ["1e400", "99999999999999999999h", "400d", float("inf"), float("nan"), 1e300, 10**30, "P9999D"]
)
def test_thresholds_beyond_a_year_or_not_finite_are_validation_errors_not_overflows(value: object) -> None:
    with pytest.raises(ValidationError, match=r"off_threshold|at most 365 days"):
        PowerThresholds.model_validate({"off_threshold": value, "on_threshold": "30m"})


def test_reservation_sizes_are_bounded_like_vm_launches() -> None:
    for field, value in (("vcpus_per_vm", 2**63), ("memory_mib_per_vm", 2**40), ("vm_count", 10**9)):
        with pytest.raises(ValidationError, match=field):
            Reservation.model_validate(
                {
                    "id": "r",
                    "start": NOW,
                    "end": NOW + timedelta(hours=1),
                    "vm_count": 1,
                    "vcpus_per_vm": 1,
                    "memory_mib_per_vm": 512,
                    field: value,
                }
            )


# --- reservations --------------------------------------------------------------------------------


def test_reservation_must_end_after_start_and_be_timezone_aware() -> None:
    with pytest.raises(ValidationError, match="not after start"):
        rsv("r", MIN, 1, hours=0)
    with pytest.raises(ValidationError):
        Reservation(
            id="r",
            start=datetime(2026, 1, 1),
            end=datetime(2026, 1, 2),
            vm_count=1,
            vcpus_per_vm=1,
            memory_mib_per_vm=1,
        )


def test_reservation_book_finds_reservations_overlapping_a_window() -> None:
    book = ReservationBook(
        [
            rsv("later", 40 * MIN, 1),
            rsv("soon", 20 * MIN, 1),
            rsv("running", -30 * MIN, 1, hours=1),
            rsv("over", -3 * 60 * MIN, 1, hours=1),
            rsv("long", -48 * 60 * MIN, 1, hours=49),
        ]
    )
    assert [r.id for r in book.in_window(NOW, NOW + 30 * MIN)] == ["long", "running", "soon"]
    assert len(book) == 5


# --- planner -------------------------------------------------------------------------------------


def test_planner_powers_on_two_off_nodes_for_reservation_within_on_threshold() -> None:
    nodes = [nv(f"n{i}", S.OFF) for i in range(4)]
    plan = plan_power(nodes, [rsv("r1", 20 * MIN, 2)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.ON) == ["n0", "n1"]
    assert plan.nodes(PowerAction.OFF) == []
    assert all("r1" in a.reason for a in plan.actions)
    assert any("power-off control: no node is on" in n for n in plan.notes)


def test_planner_does_not_power_on_for_reservation_beyond_on_threshold() -> None:
    nodes = [nv(f"n{i}", S.OFF) for i in range(4)]
    plan = plan_power(nodes, [rsv("r1", 45 * MIN, 2)], now=NOW, thresholds=TH)
    assert plan.actions == ()
    assert any("power-on control: no reservation" in n for n in plan.notes)


def test_planner_without_reservations_powers_nothing_off_as_the_notes_say() -> None:
    nodes = [nv(f"n{i}") for i in range(3)] + [nv("off", S.OFF)]
    plan = plan_power(nodes, [], now=NOW, thresholds=TH)
    assert plan.actions == ()
    assert any(n.startswith("power-off control: no reservation before") for n in plan.notes)
    assert any(n.startswith("power-on control: no reservation before") for n in plan.notes)


def test_planner_notes_and_reasons_give_window_ends_as_the_pages_show_times_not_raw_iso() -> None:
    nodes = [nv(f"n{i}") for i in range(3)] + [nv("off", S.OFF)]
    plan = plan_power(nodes, [], now=NOW, thresholds=TH)
    assert "power-on control: no reservation before 2026-05-01 12:30 UTC; nothing to do" in plan.notes
    off_note = "power-off control: no reservation before 2026-05-01 13:00 UTC;"
    assert any(n.startswith(off_note) for n in plan.notes), plan.notes
    assert not any("+00:00" in n or "T12:" in n for n in plan.notes), plan.notes
    on = plan_power([nv(f"n{i}", S.OFF) for i in range(4)], [rsv("r1", 20 * MIN, 2)], now=NOW, thresholds=TH)
    assert all("starting by 2026-05-01 12:30 UTC" in a.reason for a in on.actions), on.actions


def test_planner_with_all_nodes_off_and_no_reservations_has_nothing_to_do() -> None:
    plan = plan_power([nv("a", S.OFF), nv("b", S.STOPPED)], [], now=NOW, thresholds=TH)
    assert plan.actions == ()
    assert "power-off control: no node is on; nothing to do" in plan.notes


def test_planner_powers_off_nodes_not_needed_within_off_threshold() -> None:
    nodes = [nv(f"n{i}") for i in range(4)]
    plan = plan_power(nodes, [rsv("r1", 45 * MIN, 1)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.OFF) == ["n1", "n2", "n3"]
    assert plan.nodes(PowerAction.ON) == []
    assert "not needed by the 1 reservation(s)" in plan.actions[0].reason


def test_planner_never_powers_off_nodes_that_run_or_boot_vms() -> None:
    nodes = [nv("busy", vms=("vm-1",)), nv("booting", booting=("vm-2",)), nv("idle-1"), nv("idle-2")]
    plan = plan_power(nodes, [rsv("r1", 45 * MIN, 1)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.OFF) == ["idle-2"]
    skipped = {s.node: s.reason for s in plan.skipped}

    def hosts(vm: str) -> str:
        return f"not needed but hosts VMs {vm} (running or booting)"

    assert skipped == {"busy": hosts("vm-1"), "booting": hosts("vm-2")}


def test_planner_keeps_needed_nodes_on_and_skips_busy_not_needed_nodes() -> None:
    # r1 needs one full node; "busy" has no room for it, so an idle node is needed and busy is skipped.
    nodes = [nv("busy", vms=("vm-1",), vm_cpus=4), nv("idle-1"), nv("idle-2")]
    plan = plan_power(nodes, [rsv("r1", 45 * MIN, 1)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.OFF) == ["idle-2"]
    assert [(s.node, "vm-1" in s.reason) for s in plan.skipped] == [("busy", True)]


def test_planner_does_nothing_when_off_window_reservations_cannot_fit() -> None:
    nodes = [nv("a"), nv("b")]
    plan = plan_power(nodes, [rsv("big", 45 * MIN, 5)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.OFF) == []
    assert any("do not fit the fleet; nothing powered off" in n for n in plan.notes)


def test_planner_serves_earliest_reservations_and_reports_the_rest_when_short() -> None:
    nodes = [nv(f"n{i}", S.OFF) for i in range(3)]
    plan = plan_power(nodes, [rsv("first", 5 * MIN, 2), rsv("second", 10 * MIN, 2)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.ON) == ["n0", "n1"]
    assert plan.unplaced_reservations == ("second",)


def test_planner_counts_only_missing_vms_of_a_running_reservation_in_its_group() -> None:
    # r1 wants 2 VMs, one already runs on a (group g2); only one more node in g2 is needed.
    nodes = [
        nv("a", group="g2", vms=("r1-vm0",), cluster="r1", vm_cpus=8),
        nv("b", S.OFF, group="g1"),
        nv("c", S.OFF, group="g2"),
        nv("d", S.OFF, group="g2"),
    ]
    plan = plan_power(nodes, [rsv("r1", -10 * MIN, 2)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.ON) == ["c"]


def test_planner_cluster_goes_to_the_group_needing_fewest_power_ons() -> None:
    nodes = [
        nv("a1", S.OFF, group="g1"),
        nv("a2", S.OFF, group="g1"),
        nv("b1", group="g2"),
        nv("b2", S.OFF, group="g2"),
    ]
    plan = plan_power(nodes, [rsv("r1", 10 * MIN, 2)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.ON) == ["b2"]
    assert plan.nodes(PowerAction.OFF) == []


def test_planner_does_not_power_off_what_power_on_control_needs() -> None:
    class Fickle:
        """Picks different nodes for the two windows, as an external policy may."""

        def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
            target = nodes[1].name if len(vms) == 1 else nodes[0].name
            return {vm.name: target for vm in vms}

    nodes = [nv(n, cpus=64, mem=65536) for n in "abc"] + [nv("z", S.OFF)]
    reservations = [rsv("soon", 10 * MIN, 1), rsv("later", 50 * MIN, 1)]
    plan = plan_power(nodes, reservations, now=NOW, thresholds=TH, policy=Fickle())
    # Off window (both reservations) needs only "a"; on window ("soon") needs "b": b must stay on.
    assert plan.nodes(PowerAction.OFF) == ["c"]
    assert [(s.node, "power-on control needs it" in s.reason) for s in plan.skipped] == [("b", True)]


def test_planner_never_acts_on_error_stopped_or_transitional_nodes() -> None:
    nodes = [
        nv("err", S.ERROR_STOPPED),
        nv("stopping", S.STOPPING),
        nv("susp", S.SUSPENDED),
        nv("off", S.OFF),
    ]
    plan = plan_power(nodes, [rsv("r1", 5 * MIN, 1)], now=NOW, thresholds=TH)
    assert plan.nodes(PowerAction.ON) == ["off"]


def test_planner_notes_placement_failure_and_acts_on_nothing() -> None:
    class Down:
        def place(self, vms: list[VmRequest], nodes: list[NodeCapacity]) -> dict[str, str] | None:
            raise PlacementError("service unreachable")

    nodes = [nv("a"), nv("b", S.OFF)]
    plan = plan_power(nodes, [rsv("r1", 5 * MIN, 1)], now=NOW, thresholds=TH, policy=Down())
    assert plan.actions == ()
    assert sum("service unreachable" in n for n in plan.notes) == 2


def test_planner_accepts_a_prebuilt_reservation_book() -> None:
    nodes = [nv(f"n{i}", S.OFF) for i in range(3)]
    book = ReservationBook([rsv("r1", 20 * MIN, 2)])
    assert plan_power(nodes, book, now=NOW, thresholds=TH).nodes(PowerAction.ON) == ["n0", "n1"]
