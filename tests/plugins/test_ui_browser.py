"""rackflow's React pages (dashboard, jobs, S3 intake) inside Airflow's real UI, in headless Chromium.

The pages are rendered by Airflow's UI itself (``react_apps``), not in an iframe: they use Airflow's
React and Chakra, so its theme applies; screenshots are taken in light and dark mode at 1400x900.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import SCREENSHOTS, login_page

SCHEMES = ("light", "dark")


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.querySelector('[data-rackflow-page]')?.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.mark.timeout(900)
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


JSDL = """<?xml version="1.0" encoding="UTF-8"?>
<jsdl:JobDefinition xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"
                    xmlns:jsdl-hpcpa="http://schemas.ggf.org/jsdl/2006/07/jsdl-hpcpa">
  <jsdl:JobDescription>
    <jsdl:Application>
      <jsdl-hpcpa:HPCProfileApplication>
        <jsdl-hpcpa:Executable>/bin/true</jsdl-hpcpa:Executable>
      </jsdl-hpcpa:HPCProfileApplication>
    </jsdl:Application>
  </jsdl:JobDescription>
</jsdl:JobDefinition>
"""


def _submit_in_form(page: Any, description: str) -> None:
    form = page.get_by_test_id("submit")
    form.locator("textarea[name=description]").fill(description)
    form.get_by_test_id("submit-button").click()


def _job_page_final(page: Any, timeout: float = 240_000) -> str:
    """Wait on a job's page until its state badge shows a final state; return that state."""
    badge = page.get_by_test_id("job-summary").locator(
        "[data-state='COMPLETED'],[data-state='FAILED'],[data-state='CANCELED']"
    )
    badge.first.wait_for(timeout=timeout)
    return str(badge.first.get_attribute("data-state"))


@pytest.mark.timeout(1200)
def test_jobs_page_alice_submits_is_told_what_is_wrong_follows_her_job_to_its_output_and_terminates_one(
    browser: Any, airflow_stack: Any, tmp_path: Any
) -> None:
    airflow_stack.wait_for_dag("rackflow_job")
    page = login_page(browser, airflow_stack, "alice")
    try:
        page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs")
        page.get_by_test_id("submit").wait_for(timeout=30_000)
        # An invalid description: the API's message names the field, and no job is listed.
        _submit_in_form(page, '{"arguments": ["no executable"], "attributes": {"duration": -5}}')
        problems = page.get_by_test_id("problems")
        problems.get_by_text("Refused (400)").wait_for(timeout=30_000)
        assert "executable" in problems.inner_text()
        # Not JSON at all: refused before sending.
        _submit_in_form(page, "{not json")
        problems.get_by_text("Not sent").wait_for()
        assert "not JSON" in problems.inner_text()

        # A JSDL upload goes as XML.
        jsdl = tmp_path / "true.jsdl"
        jsdl.write_text(JSDL)
        page.get_by_test_id("upload").set_input_files(str(jsdl))
        page.get_by_test_id("format").get_by_text("JSDL (XML)").wait_for()
        page.get_by_test_id("submit-button").click()
        page.get_by_test_id("notice-success").get_by_text("Submitted job__").wait_for(timeout=30_000)

        # A job that prints and fails with exit 3: followed from the list to its page.
        script = "echo hello-from-the-ui; echo oops >&2; exit 3"
        _submit_in_form(page, json.dumps({"executable": "/bin/sh", "arguments": ["-c", script]}))
        notice = page.get_by_test_id("notice-success")
        notice.get_by_text("Submitted job__").wait_for(timeout=30_000)
        job_id = notice.get_by_role("link").inner_text()
        page.get_by_test_id("jobs-table").locator(f"tr[data-key='{job_id}']").wait_for(timeout=30_000)
        notice.get_by_role("link").click()
        page.wait_for_url(f"**/plugin/rackflow-jobs/job/{job_id}")
        assert _job_page_final(page) == "FAILED"
        job = (
            airflow_stack.session("alice")
            .get(f"{airflow_stack.url}/rackflow/api/jobs/{job_id}", timeout=60)
            .json()
        )
        assert job["properties"]["exit_code"] == 3, json.dumps(job)
        summary = page.get_by_test_id("job-summary")
        summary.locator("[data-field='exit code']", has_text="3").wait_for(timeout=30_000)
        assert summary.get_by_test_id("terminate").count() == 0  # finished: nothing to terminate
        events = page.get_by_test_id("job-events")
        assert events.locator("[data-event-state='QUEUED']").count() >= 1
        assert "UTC" in events.inner_text()
        page.get_by_test_id("output-stdout").get_by_text("hello-from-the-ui").wait_for(timeout=30_000)
        page.get_by_role("tab", name="stderr").click()
        page.get_by_test_id("output-stderr").get_by_text("oops").wait_for(timeout=30_000)
        page.get_by_role("tab", name="stdout").click()
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            page.wait_for_timeout(300)
            _shot(page, f"job-alice-{scheme}")

        # The dashboard counts it and lists it among the recent failures, linking to its page.
        page.emulate_media(color_scheme="light")
        page.goto(f"{airflow_stack.url}/plugin/rackflow")
        failures = page.get_by_test_id("dash-failures")
        failures.get_by_role("link", name=f"job {job_id}").wait_for(timeout=30_000)
        assert failures.get_by_role("link", name=f"job {job_id}").get_attribute("href") == (
            f"/plugin/rackflow-jobs/job/{job_id}"
        )
        page.get_by_test_id("dash-intake").get_by_text("updated").wait_for(timeout=60_000)
        failed = page.get_by_test_id("dash-jobs").locator("[data-job-state='FAILED']")
        assert int(failed.inner_text().split()[0]) >= 1
        _shot(page, "dashboard-alice-after-jobs-light")

        # The list's filters: by state (in the URL, so a link can carry it) and by text.
        page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs?state=FAILED")
        table = page.get_by_test_id("jobs-table")
        table.locator(f"tr[data-key='{job_id}']").wait_for(timeout=30_000)
        assert table.locator("[data-state]").all_inner_texts() and all(
            s == "FAILED" for s in table.locator("[data-col='state'] [data-state]").all_inner_texts()
        )
        page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs?state=COMPLETED")
        page.get_by_test_id("jobs-table").get_by_text("no COMPLETED jobs").or_(
            page.get_by_test_id("jobs-table").locator("tr[data-key]").first
        ).wait_for(timeout=30_000)
        assert page.get_by_test_id("jobs-table").locator(f"tr[data-key='{job_id}']").count() == 0
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs")
            page.get_by_test_id("jobs-table").locator(f"tr[data-key='{job_id}']").wait_for(timeout=30_000)
            _shot(page, f"jobs-alice-{scheme}")

        # Terminate a long job from its page.
        page.emulate_media(color_scheme="light")
        page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs")
        _submit_in_form(page, '{"executable": "/bin/sleep", "arguments": ["300"]}')
        page.get_by_test_id("notice-success").get_by_role("link").click()
        page.get_by_test_id("terminate").click()
        page.get_by_test_id("notice-success").get_by_text("terminating").wait_for(timeout=30_000)
        assert _job_page_final(page) == "CANCELED"
    finally:
        page.close()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("user", ["victor", "operator"])
def test_jobs_page_viewer_reads_without_actions_and_no_one_sees_anothers_job(
    browser: Any, airflow_stack: Any, user: str
) -> None:
    alice = airflow_stack.session("alice")
    listed = alice.get(f"{airflow_stack.url}/rackflow/api/jobs", timeout=60).json()["jobs"]
    page = login_page(browser, airflow_stack, user)
    try:
        page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs")
        page.get_by_test_id("jobs-table").wait_for(timeout=30_000)
        page.get_by_test_id("updated").get_by_text("UTC").wait_for(timeout=30_000)
        # victor (viewer) may read but never submit; operator (op) may submit.
        assert page.get_by_test_id("submit").count() == (0 if user == "victor" else 1)
        assert page.get_by_test_id("read-only").count() == (1 if user == "victor" else 0)
        for job in listed:  # alice's jobs are not theirs: not listed, and their pages say so
            assert page.get_by_test_id("jobs-table").locator(f"tr[data-key='{job['job_id']}']").count() == 0
        if listed:
            page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs/job/{listed[0]['job_id']}")
            page.get_by_test_id("error").get_by_text("404").wait_for(timeout=30_000)
            assert page.get_by_test_id("terminate").count() == 0
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            page.goto(f"{airflow_stack.url}/plugin/rackflow-jobs")
            page.get_by_test_id("jobs-table").wait_for(timeout=30_000)
            _shot(page, f"jobs-{user}-{scheme}")
    finally:
        page.close()
