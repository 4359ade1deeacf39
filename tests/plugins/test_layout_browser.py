"""The server layout page (a react app inside Airflow's real UI), in headless Chromium.

Drawn: a column per network group, a box per host with power, vCPU and memory bars and its VMs as
tiles coloured by state; search and filters; a host's detail; the launch form with its name preview,
which launches two VMs that then run. As operator, alice (user) and victor (viewer), light and dark.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rackflow.hooks.libvirt import LibvirtHook
from tests.conftest import SCREENSHOTS, login_page

SCHEMES = ("light", "dark")


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _open(browser: Any, stack: Any, user: str, scheme: str) -> Any:
    page = login_page(browser, stack, user, color_scheme=scheme)
    page.goto(f"{stack.url}/plugin/rackflow-layout")
    page.get_by_test_id("layout-page").wait_for(timeout=30_000)
    return page


@pytest.mark.parametrize("user", ["operator", "alice", "victor"])
def test_layout_draws_groups_hosts_capacity_and_vm_tiles_filters_and_host_detail(
    browser: Any, airflow_stack: Any, user: str
) -> None:
    for scheme in SCHEMES:
        page = _open(browser, airflow_stack, user, scheme)
        try:
            rack1 = page.locator(".group-column[data-group='rack-1']")
            rack2 = page.locator(".group-column[data-group='rack-2']")
            for column, host in ((rack1, "host-a"), (rack1, "host-b"), (rack2, "host-c")):
                column.locator(f"section.host[data-host='{host}']").wait_for(timeout=30_000)
            host_a = page.locator("section.host[data-host='host-a']")
            host_a.locator(".rf-tile[data-vm='db-01'][data-state='running']").wait_for()
            page.locator("section.host[data-host='host-b'] .rf-tile[data-vm='cache-01']").wait_for()
            assert host_a.locator("[data-bar='vCPU']").count() == 1
            assert host_a.locator("[data-bar='mem']").count() == 1
            assert "power on" in host_a.inner_text() or "power unknown" in host_a.inner_text()
            page.get_by_test_id("updated").get_by_text("UTC").wait_for(timeout=30_000)
            assert page.get_by_test_id("error").count() == 0, page.get_by_test_id("error").all_inner_texts()
            # Only who may trigger the launch DAG gets the launch button.
            assert page.get_by_test_id("launch-open").count() == (1 if user == "operator" else 0)
            _shot(page, f"layout-{user}-{scheme}")

            # Search narrows to the hosts with a matching VM; the state filter to VMs in that state.
            page.locator("input[name=search]").fill("cache-0")
            page.locator("section.host[data-host='host-a']").wait_for(state="detached")
            assert page.locator("section.host").count() == 1
            assert page.locator(".rf-tile[data-vm='cache-01']").count() == 1
            page.locator("input[name=search]").fill("")
            page.locator("select[name=group]").select_option("rack-2")
            page.locator("section.host[data-host='host-b']").wait_for(state="detached")
            assert page.locator("section.host").count() == 1
            page.locator("select[name=group]").select_option("")
            page.locator("select[name=state]").select_option("running")
            host_a.locator(".rf-tile[data-vm='db-01']").wait_for()
            assert page.locator(".rf-tile:not([data-state='running'])").count() == 0
            page.locator("select[name=state]").select_option("")

            # A tile says which VM it is; the host's detail lists its VMs with addresses and disks.
            host_a.locator(".rf-tile[data-vm='db-01']").click()
            assert "db-01" in page.get_by_test_id("picked").inner_text()
            host_a.get_by_test_id("host-detail").click()
            drawer = page.get_by_test_id("host-drawer")
            row = drawer.locator("tr[data-vm='db-01']")
            row.wait_for(timeout=30_000)
            assert "running" in row.inner_text()
            assert {"addresses", "disks", "volumes"} <= set(drawer.locator("th").all_inner_texts())
            if scheme == "light":
                page.wait_for_timeout(500)  # the drawer slides in
                _shot(page, f"layout-detail-{user}")
        finally:
            page.close()


def test_launch_form_previews_the_names_and_launches_two_vms_that_run(
    browser: Any, airflow_stack: Any
) -> None:
    airflow_stack.wait_for_dag("rackflow_launch_vms")
    prefix = f"ui{uuid.uuid4().hex[:5]}"
    page = _open(browser, airflow_stack, "operator", "light")
    try:
        page.locator("section.host[data-host='host-c']").wait_for(timeout=30_000)
        page.get_by_test_id("launch-open").click()
        form = page.get_by_test_id("launch-form")
        # Over a network group the names continue after those on any of its hosts (host-b: cache-01/02).
        form.locator("select[name=over]").select_option("group")
        form.locator("select[name=group]").select_option("rack-1")
        form.locator("input[name=pattern]").fill("cache-{seq:02d}")
        page.get_by_test_id("name-preview").locator("[data-name='cache-04']").wait_for(timeout=30_000)
        assert page.get_by_test_id("name-preview").locator("[data-name]").all_inner_texts() == [
            "cache-03",
            "cache-04",
        ]
        form.locator("select[name=over]").select_option("host")
        form.locator("select[name=host]").select_option("host-c")
        # A bad pattern is refused with the server's naming rule, before anything is launched.
        form.locator("input[name=pattern]").fill("Bad_{seq}")
        page.get_by_test_id("preview-error").wait_for(timeout=30_000)
        assert "not a valid VM name" in page.get_by_test_id("preview-error").inner_text()
        assert form.get_by_test_id("launch-submit").is_disabled()
        form.locator("input[name=pattern]").fill(f"{prefix}-{{seq:02d}}")
        form.locator("input[name=count]").fill("2")
        form.locator("input[name=memory_mib]").fill("128")
        preview = page.get_by_test_id("name-preview")
        for name in (f"{prefix}-01", f"{prefix}-02"):
            preview.locator(f"[data-name='{name}']").wait_for(timeout=30_000)
        _shot(page, "layout-launch-form")
        form.get_by_test_id("launch-submit").click()
        run = page.locator(".launch-run").first
        run.wait_for(timeout=30_000)
        ended = page.locator(".launch-run[data-run-state='success'], .launch-run[data-run-state='failed']")
        ended.first.wait_for(timeout=400_000)
        if run.get_attribute("data-run-state") != "success":
            run_id = run.get_attribute("data-run")
            tis = airflow_stack.session("admin").get(
                f"{airflow_stack.url}/api/v2/dags/rackflow_launch_vms/dagRuns/{run_id}/taskInstances",
                timeout=30,
            )
            raise AssertionError(f"launch run {run_id} failed: {tis.text[:2000]}")
        for name in (f"{prefix}-01", f"{prefix}-02"):
            page.locator(
                f"section.host[data-host='host-c'] .rf-tile[data-vm='{name}'][data-state='running']"
            ).wait_for(timeout=30_000)
            assert f"{name} running" in run.inner_text()
        _shot(page, "layout-launched")
    finally:
        page.close()
        with LibvirtHook("libvirt_host_c") as hook:
            for vm in hook.list_domains(addresses=False):
                if vm.name.startswith(prefix):
                    hook.destroy_domain(vm.name)
