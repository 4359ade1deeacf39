"""The server layout page inside Airflow's real UI, in headless Chromium: see the fleet, launch two VMs."""

from __future__ import annotations

import uuid
from typing import Any

from rackflow.hooks.libvirt import LibvirtHook
from tests.conftest import SCREENSHOTS, login_page


def test_layout_page_shows_hosts_and_vms_and_launches_two_vms_that_run(
    browser: Any, airflow_stack: Any
) -> None:
    airflow_stack.wait_for_dag("rackflow_launch_vms")
    prefix = f"ui{uuid.uuid4().hex[:5]}"
    page = login_page(browser, airflow_stack, "operator")
    try:
        page.goto(f"{airflow_stack.url}/plugin/rackflow-layout")
        frame = page.frame_locator("iframe")
        for host in ("host-a", "host-b", "host-c"):
            frame.locator(f"section.host[data-host='{host}']").wait_for(timeout=30_000)
        frame.locator("section.host[data-host='host-a'] tr[data-vm='db-01'] .state-running").wait_for()
        frame.locator("section.host[data-host='host-b'] tr[data-vm='cache-01']").wait_for()
        assert "rack-2" in frame.locator("section.host[data-host='host-c'] .group").inner_text()

        card = frame.locator("section.host[data-host='host-c']")
        card.locator("details.launch summary").click()
        card.locator("input[name=pattern]").fill(f"{prefix}-{{seq:02d}}")
        card.locator("input[name=count]").fill("2")
        card.locator("input[name=memory_mib]").fill("128")
        card.locator("button[type=submit]").click()
        card.locator(".launch-run", has_text="success").wait_for(timeout=180_000)
        for name in (f"{prefix}-01", f"{prefix}-02"):
            card.locator(f".launch-status li[data-vm='{name}'] .state-running").wait_for(timeout=30_000)
            card.locator(f"tr[data-vm='{name}'] .state-running").wait_for(timeout=30_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "layout-launch.png"), full_page=True)
    finally:
        page.close()
        with LibvirtHook("libvirt_host_c") as hook:
            for vm in hook.list_domains(addresses=False):
                if vm.name.startswith(prefix):
                    hook.destroy_domain(vm.name)
