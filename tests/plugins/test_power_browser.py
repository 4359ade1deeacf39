"""The power page and the layout page's power controls inside Airflow's real UI, in headless Chromium.

The shared devfleet's hosts a/b/c are used by other tests, so nothing here powers them off: the power
page is used read-only for them (plus a reservation that is canceled at the end), and on the layout
page the one power action is a power off of host-a, which runs db-01 and is therefore refused (409)
without changing anything.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from rackflow.db.models import Host, HostTransition
from rackflow.db.session import session_scope
from tests.conftest import SCREENSHOTS, login_page

HOSTS = ("host-a", "host-b", "host-c")


def _record_statuses(url: str) -> None:
    """One monitoring cycle over hosts a/b/c so the pages show real BMC statuses.

    Only hosts whose mode is on are polled: with mode on the reconcile step can at most power a node
    on, never off (the shared fleet must stay up).
    """
    from rackflow.services.power.monitor import monitor_cycle

    with session_scope(url) as session:
        modes = {h.name: h.mode for h in session.scalars(select(Host).where(Host.name.in_(HOSTS)))}
    assert modes == dict.fromkeys(HOSTS, "on"), modes
    report = monitor_cycle(url=url, nodes=list(HOSTS))
    assert {n.node: n.status for n in report.nodes} == dict.fromkeys(HOSTS, "on"), report.summary()


def _local(at: datetime) -> str:
    """A ``datetime-local`` input value (the browser runs in the machine's zone, as this process)."""
    return at.astimezone().strftime("%Y-%m-%dT%H:%M")


def test_power_page_shows_nodes_plan_and_a_reservation_made_on_it_and_viewer_gets_no_buttons(
    browser: Any, airflow_stack: Any, rackflow_db: str
) -> None:
    _record_statuses(rackflow_db)
    name = f"ui-res-{uuid.uuid4().hex[:6]}"
    operator = airflow_stack.session("operator")
    page = login_page(browser, airflow_stack, "operator")
    try:
        page.goto(f"{airflow_stack.url}/plugin/rackflow-power")
        frame = page.frame_locator("iframe")
        for host in HOSTS:
            row = frame.locator(f"#nodes tr[data-node='{host}']")
            row.locator(".status", has_text="on").wait_for(timeout=30_000)
            assert row.locator(".mode").inner_text() == "on"
            assert "status" in row.inner_text()  # last transition: status ... -> on by the monitor
            assert row.locator("button[data-action='on']").count() == 1
            assert row.locator("button[data-action='off']").count() == 1
        frame.locator("#thresholds", has_text="OffThreshold 60 min, OnThreshold 30 min").wait_for()

        # A reservation in 10 minutes, made through the page's form.
        start = datetime.now().astimezone() + timedelta(minutes=10)
        form = frame.locator("#reserve")
        form.locator("input[name=name]").fill(name)
        form.locator("input[name=start]").fill(_local(start))
        form.locator("input[name=end]").fill(_local(start + timedelta(hours=1)))
        form.locator("input[name=vm_count]").fill("1")
        form.locator("input[name=vcpus_per_vm]").fill("1")
        form.locator("input[name=memory_mib_per_vm]").fill("128")
        form.locator("input[name=group]").fill("rack-1")
        form.locator("button[type=submit]").click()
        frame.locator("#message.ok", has_text="Reserved res-").wait_for(timeout=30_000)
        row = frame.locator(f"#reservations tr[data-reservation='{name}']")
        row.wait_for(timeout=30_000)
        assert "operator" in row.inner_text() and "rack-1" in row.inner_text()
        listed = operator.get(f"{airflow_stack.url}/rackflow/api/power/reservations", timeout=30)
        assert name in [r["name"] for r in listed.json()]

        # The planner's next actions (a dry run) now weigh that reservation: with it inside the
        # OffThreshold window, the power-off control decides per node (off, or skip with the reason).
        plan_rows = frame.locator("#plan tbody tr[data-node]")
        plan_rows.first.wait_for(timeout=30_000)
        plan = operator.get(f"{airflow_stack.url}/rackflow/api/power/plan", timeout=60).json()
        expected = {(a["node"], a["action"]) for a in plan["actions"] + plan["skipped"]}
        assert expected, plan
        shown = {
            (plan_rows.nth(i).get_attribute("data-node"), plan_rows.nth(i).locator("td").nth(1).inner_text())
            for i in range(plan_rows.count())
        }
        assert shown == expected
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "power.png"), full_page=True)
    finally:
        page.close()
        for r in operator.get(f"{airflow_stack.url}/rackflow/api/power/reservations", timeout=30).json():
            if r["name"] == name:
                operator.delete(f"{airflow_stack.url}/rackflow/api/power/reservations/{r['id']}", timeout=30)

    viewer = login_page(browser, airflow_stack, "victor")
    try:
        viewer.goto(f"{airflow_stack.url}/plugin/rackflow-power")
        frame = viewer.frame_locator("iframe")
        frame.locator("#nodes tr[data-node='host-a'] .status", has_text="on").wait_for(timeout=30_000)
        frame.locator("#thresholds", has_text="OffThreshold").wait_for()
        assert frame.locator("button[data-action]").count() == 0
        assert frame.locator("button[data-cancel]").count() == 0
        assert not frame.locator("#reserve").is_visible()
    finally:
        viewer.close()


def test_layout_page_shows_power_and_a_refused_power_off_names_the_vms_and_viewer_gets_no_buttons(
    browser: Any, airflow_stack: Any, rackflow_db: str
) -> None:
    _record_statuses(rackflow_db)
    with session_scope(rackflow_db) as session:
        before = session.scalar(select(func.count()).select_from(HostTransition))
    page = login_page(browser, airflow_stack, "operator")
    try:
        page.goto(f"{airflow_stack.url}/plugin/rackflow-layout")
        frame = page.frame_locator("iframe")
        for host in HOSTS:
            card = frame.locator(f"section.host[data-host='{host}']")
            card.locator(".badge.power.power-on", has_text="power on").wait_for(timeout=30_000)
            assert card.locator(".power-mode").inner_text() == "mode on"
            assert "status since" in card.locator(".power-since").inner_text()
            card.locator(".power-transition", has_text="→ on by rackflow_power_monitor").wait_for()
            assert card.locator("button.power-on").is_visible()
            assert card.locator("button.power-off").is_visible()

        card = frame.locator("section.host[data-host='host-a']")
        card.locator("tr[data-vm='db-01'] .state-running").wait_for()
        card.locator("button.power-off").click()
        refused = card.locator(".power-message.refused")
        refused.wait_for(timeout=60_000)
        text = refused.inner_text()
        assert "refusing power off" in text and "VMs: " in text and "db-01" in text, text
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "layout-power.png"), full_page=True)
    finally:
        page.close()
    # Refused means nothing changed: mode still on, no transition recorded.
    with session_scope(rackflow_db) as session:
        assert session.get(Host, "host-a").mode == "on"  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(HostTransition)) == before

    viewer = login_page(browser, airflow_stack, "victor")
    try:
        viewer.goto(f"{airflow_stack.url}/plugin/rackflow-layout")
        frame = viewer.frame_locator("iframe")
        card = frame.locator("section.host[data-host='host-a']")
        card.locator(".badge.power", has_text="power on").wait_for(timeout=30_000)
        assert card.locator(".power-mode").inner_text() == "mode on"
        assert frame.locator(".power-actions").count() == 0
        assert frame.locator("button.power-on, button.power-off").count() == 0
    finally:
        viewer.close()
