"""The S3 intake page inside Airflow's real UI, in headless Chromium, over the ``api`` test intake.

A job uploaded to the intake's bucket is taken and run; the page then lists it with its status line,
its FILE_UPLOAD -> QUEUED latency and, for whoever may see the job in the job API (admins, and the
intake's ``visible_to``), a link to its job page. Screenshots in light and dark mode.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import SCREENSHOTS, login_page
from tests.dag_factories.s3_intake_support import read_status, upload_job

DAG_ID = "s3_intake_api"


@pytest.mark.timeout(1200)
def test_intake_page_lists_bucket_jobs_with_status_line_latency_and_job_link_per_role(
    browser: Any, airflow_stack: Any, devfleet: Any, intake_buckets: dict[str, str]
) -> None:
    client = devfleet.s3.client()
    bucket = intake_buckets["api"]
    airflow_stack.wait_for_dag(DAG_ID)  # parsed and unpaused
    prefix = f"ui{uuid.uuid4().hex[:6]}"
    upload_job(client, bucket, prefix)
    deadline = time.monotonic() + 600
    while read_status(client, bucket, prefix).split("\n")[0] not in ("COMPLETED", "FAILED", "CANCELED"):
        assert time.monotonic() < deadline, f"{prefix} stuck at {read_status(client, bucket, prefix)!r}"
        time.sleep(0.5)
    assert read_status(client, bucket, prefix).startswith("COMPLETED"), read_status(client, bucket, prefix)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for user in ("admin", "operator", "alice", "victor"):
        for scheme in ("light", "dark"):
            page = login_page(browser, airflow_stack, user, color_scheme=scheme)
            try:
                page.goto(f"{airflow_stack.url}/plugin/rackflow-s3")
                block = page.get_by_test_id("intake-api")
                block.get_by_text(f"s3://{bucket}").wait_for(timeout=30_000)
                assert block.get_by_text("live", exact=True).count() == 1  # unpaused
                row = block.locator(f"tr[data-key='{prefix}']")
                row.locator("[data-state='COMPLETED']").wait_for(timeout=30_000)
                assert f"{prefix}/" in row.inner_text()
                latency = row.locator("[data-col='latency']").inner_text()
                assert latency.endswith(" s") or "m" in latency, latency
                counts = block.get_by_test_id("intake-counts").inner_text()
                assert "COMPLETED" in counts and "FILE_UPLOAD" in counts
                link = row.locator("[data-col='job'] a")
                if user == "admin":  # admins see every S3 job; the others are not named by the intake
                    job_id = link.inner_text()
                    assert job_id
                    if scheme == "light":
                        # The table fits its box at 1400 px: no column is pushed out of sight.
                        widths = block.get_by_test_id("intake-jobs").evaluate(
                            "t => [t.scrollWidth, t.parentElement.clientWidth]"
                        )
                        assert widths[0] <= widths[1], f"intake table {widths[0]} px in a {widths[1]} px box"
                        page.screenshot(path=str(SCREENSHOTS / f"intake-{user}-{scheme}.png"))
                        link.click()
                        page.wait_for_url(f"**/plugin/rackflow-jobs/job/{job_id}")
                        summary = page.get_by_test_id("job-summary")
                        summary.get_by_text(f"s3://{bucket}/{prefix}").first.wait_for(timeout=30_000)
                        summary.locator("[data-state='COMPLETED']").wait_for(timeout=30_000)
                        continue
                else:
                    assert link.count() == 0
                page.screenshot(path=str(SCREENSHOTS / f"intake-{user}-{scheme}.png"))
            finally:
                page.close()
