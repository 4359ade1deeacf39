"""rackflow's React pages (dashboard, jobs, S3 intake) inside Airflow's real UI, in headless Chromium.

The pages are rendered by Airflow's UI itself (``react_apps``), not in an iframe: they use Airflow's
React and Chakra, so its theme applies; screenshots are taken in light and dark mode at 1400x900.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SCREENSHOTS, login_page

SCHEMES = ("light", "dark")


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.mark.parametrize("user", ["operator", "alice", "victor"])
def test_dashboard_is_the_rackflow_nav_entry_with_fleet_jobs_intake_plan_and_failures(
    browser: Any, airflow_stack: Any, user: str
) -> None:
    for scheme in SCHEMES:
        page = login_page(browser, airflow_stack, user, color_scheme=scheme)
        try:
            page.goto(f"{airflow_stack.url}/plugin/rackflow")
            page.get_by_test_id("who").get_by_text(f"signed in as {user}").wait_for(timeout=30_000)
            hosts = page.get_by_test_id("dash-hosts")
            for host in ("host-a", "host-b", "host-c"):
                hosts.locator(f"[data-host='{host}']").wait_for(timeout=30_000)
            page.get_by_test_id("capacity-vCPU").wait_for()
            jobs = page.get_by_test_id("dash-jobs")
            for state in ("QUEUED", "ACTIVE", "COMPLETED", "FAILED", "CANCELED"):
                jobs.locator(f"[data-job-state='{state}']").wait_for()
            page.get_by_test_id("dash-plan").wait_for()
            page.get_by_test_id("dash-intake").wait_for()
            page.get_by_test_id("dash-failures").wait_for()
            page.get_by_test_id("updated").get_by_text("UTC").first.wait_for(timeout=30_000)
            assert page.get_by_test_id("error").count() == 0, page.get_by_test_id("error").all_inner_texts()
            # Each block links to its page, relative to Airflow's base URL.
            assert (
                hosts.get_by_role("link", name="Hosts by group").get_attribute("href")
                == "/plugin/rackflow-layout"
            )
            assert jobs.get_by_role("link").first.get_attribute("href") == "/plugin/rackflow-jobs"
            page.wait_for_timeout(500)
            _shot(page, f"dashboard-{user}-{scheme}")
        finally:
            page.close()
