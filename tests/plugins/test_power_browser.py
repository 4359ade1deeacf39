"""The power page (a react app inside Airflow's real UI), in headless Chromium.

The shared devfleet's hosts a/b/c are used by other tests, so nothing here powers them off: the one
power action is a power off of host-a, which runs db-01 and is therefore refused (409) without changing
anything; a reservation made on the page is canceled at the end. As operator, alice (user) and victor
(viewer), in light and dark mode.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from rackflow.db.models import Host, HostTransition
from rackflow.db.session import session_scope
from tests.conftest import SCREENSHOTS, login_page

HOSTS = ("host-a", "host-b", "host-c")
SCHEMES = ("light", "dark")


def _record_statuses(url: str) -> None:
    """One monitoring cycle over hosts a/b/c so the page shows real BMC statuses.

    Only hosts whose mode is on are polled: with mode on the reconcile step can at most power a node
    on, never off (the shared fleet must stay up).
    """
    from rackflow.services.power.monitor import monitor_cycle

    with session_scope(url) as session:
        modes = {h.name: h.mode for h in session.scalars(select(Host).where(Host.name.in_(HOSTS)))}
    assert modes == dict.fromkeys(HOSTS, "on"), modes
    report = monitor_cycle(url=url, nodes=list(HOSTS))
    assert {n.node: n.status for n in report.nodes} == dict.fromkeys(HOSTS, "on"), report.summary()


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _open(browser: Any, stack: Any, user: str, scheme: str) -> Any:
    page = login_page(browser, stack, user, color_scheme=scheme)
    page.goto(f"{stack.url}/plugin/rackflow-power")
    page.get_by_test_id("power-page").wait_for(timeout=30_000)
    return page


def _utc_input(at: datetime) -> str:
    """A ``datetime-local`` value in UTC (the page reads its times as UTC)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize("user", ["operator", "alice", "victor"])
def test_power_page_draws_each_nodes_timeline_windows_and_plan_and_shows_actions_by_role(
    browser: Any, airflow_stack: Any, rackflow_db: str, user: str
) -> None:
    _record_statuses(rackflow_db)
    for scheme in SCHEMES:
        page = _open(browser, airflow_stack, user, scheme)
        try:
            timeline = page.get_by_test_id("timeline")
            for host in HOSTS:
                row = timeline.locator(f"g.node-row[data-node='{host}']")
                row.locator("rect[data-band='status'][data-value='on']").last.wait_for(timeout=30_000)
                assert row.locator("rect[data-band='mode'][data-value='on']").count() >= 1
                page.locator(
                    f"[data-testid='nodes'] tr[data-node='{host}'] [data-state='on']"
                ).first.wait_for()
            # The On and Off windows lie ahead of now, the Off window the longer (OffThreshold > OnThreshold).
            now_x = float(timeline.get_by_test_id("now").get_attribute("x1") or "nan")
            on_w = timeline.get_by_test_id("on-window")
            off_w = timeline.get_by_test_id("off-window")
            assert float(on_w.get_attribute("x") or "nan") == pytest.approx(now_x)
            assert float(off_w.get_attribute("width") or 0) > float(on_w.get_attribute("width") or 0) > 0
            page.get_by_test_id("thresholds").get_by_text(
                "OffThreshold 60 min, OnThreshold 30 min"
            ).wait_for()
            # The planner's next actions as the API plans them (a dry run): rows, or "no action".
            plan = airflow_stack.session(user).get(f"{airflow_stack.url}/rackflow/api/power/plan", timeout=60)
            planned = plan.json()["actions"] + plan.json()["skipped"]
            if planned:
                page.get_by_test_id("plan").locator("tr[data-node]").first.wait_for(timeout=60_000)
            else:
                page.get_by_test_id("plan").get_by_text("no action").wait_for(timeout=60_000)
            page.get_by_test_id("updated").get_by_text("UTC").wait_for()
            assert page.get_by_test_id("error").count() == 0, page.get_by_test_id("error").all_inner_texts()
            # Power on/off and reservations are for who may trigger rackflow_power (the op role).
            acts = user == "operator"
            assert page.locator("button[data-action]").count() == (2 * len(HOSTS) if acts else 0)
            assert page.get_by_test_id("reserve").count() == (1 if acts else 0)
            assert page.get_by_test_id("migrate").count() == (1 if acts else 0)
            _shot(page, f"power-{user}-{scheme}")
        finally:
            page.close()


def test_operator_reserves_on_the_page_sees_the_bar_and_a_refused_power_off_names_the_vms(
    browser: Any, airflow_stack: Any, rackflow_db: str
) -> None:
    _record_statuses(rackflow_db)
    name = f"ui-res-{uuid.uuid4().hex[:6]}"
    operator = airflow_stack.session("operator")
    with session_scope(rackflow_db) as session:
        before = session.scalar(select(func.count()).select_from(HostTransition))
    page = _open(browser, airflow_stack, "operator", "light")
    try:
        # A reservation in 10 minutes, made through the page's form: listed, and drawn as a bar.
        start = datetime.now(UTC) + timedelta(minutes=10)
        form = page.get_by_test_id("reserve")
        form.locator("input[name=name]").fill(name)
        form.locator("input[name=start]").fill(_utc_input(start))
        form.locator("input[name=end]").fill(_utc_input(start + timedelta(hours=1)))
        form.locator("input[name=vm_count]").fill("1")
        form.locator("input[name=vcpus_per_vm]").fill("1")
        form.locator("input[name=memory_mib_per_vm]").fill("128")
        form.locator("select[name=group]").select_option("rack-1")
        form.locator("button[type=submit]").click()
        page.locator("[data-testid='reservation-message'][data-ok='yes']", has_text="Reserved res-").wait_for(
            timeout=30_000
        )
        row = page.get_by_test_id("reservations").locator(f"tr[data-reservation='{name}']")
        row.wait_for(timeout=30_000)
        assert "operator" in row.inner_text() and "rack-1" in row.inner_text()
        page.get_by_test_id("timeline").locator(f"g[data-reservation='{name}'] rect").wait_for(timeout=30_000)
        listed = operator.get(f"{airflow_stack.url}/rackflow/api/power/reservations", timeout=30).json()
        made = next(r for r in listed if r["name"] == name)
        assert made["start"].startswith(_utc_input(start)), made  # the form's times are UTC

        # Power off host-a (db-01 runs there): refused, with the reason and the VM, nothing changed.
        page.locator("[data-testid='nodes'] tr[data-node='host-a'] button[data-action='off']").click()
        outcome = page.locator("[data-testid='power-outcome'][data-ok='no']")
        outcome.wait_for(timeout=60_000)
        assert "refusing power off" in outcome.inner_text(), outcome.inner_text()
        outcome.get_by_test_id("blocking-vms").locator("[data-vm='db-01']").wait_for()
        _shot(page, "power-refused")

        row.locator("button[data-cancel]").click()
        row.wait_for(state="detached", timeout=30_000)
    finally:
        page.close()
        for r in operator.get(f"{airflow_stack.url}/rackflow/api/power/reservations", timeout=30).json():
            if r["name"] == name:
                operator.delete(f"{airflow_stack.url}/rackflow/api/power/reservations/{r['id']}", timeout=30)
    with session_scope(rackflow_db) as session:
        assert session.get(Host, "host-a").mode == "on"  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(HostTransition)) == before
