"""rackflow's pages inside Airflow's real UI, in headless Chromium."""

from __future__ import annotations

from tests.conftest import SCREENSHOTS, login_page


def test_home_page_is_in_airflow_nav_and_shows_signed_in_user(browser, airflow_stack):
    page = login_page(browser, airflow_stack, "victor")
    page.goto(f"{airflow_stack.url}/plugin/rackflow-home")
    frame = page.frame_locator("iframe")
    frame.get_by_text("signed in as victor").wait_for(timeout=30_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "home.png"))
    page.close()
