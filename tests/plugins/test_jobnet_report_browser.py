"""The jobnet report tab of a DAG run (a react app inside Airflow's real UI), in headless Chromium.

The session's run of the hadoop example's build environment on the real Airflow standalone, loopback
sshd and launched VMs (tests/plugins/conftest.py ``failed_hadoop_build``, which the jobnet e2e test
checks too) fails its smoke test on purpose; its report tab draws the steps as a Gantt chart (the
parallel installs side by side, each bar with server, duration and exit code) and the reverts after
the failure, in the order they ran. As operator, alice (user) and victor (viewer), in light and dark
mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import SCREENSHOTS, login_page
from tests.plugins.conftest import HADOOP_BUILD_DAG

DAG_ID = HADOOP_BUILD_DAG
SCHEMES = ("light", "dark")


@pytest.fixture(scope="module")
def failed_run(airflow_stack: Any, failed_hadoop_build: tuple[str, Path]) -> str:
    run_id, root = failed_hadoop_build
    operator = airflow_stack.session("operator")
    run = operator.get(f"{airflow_stack.url}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=30).json()
    state = run["state"]
    assert state == "failed", state
    assert not any(Path(root).glob("*/opt"))  # reverted
    return run_id


@pytest.mark.parametrize("user", ["operator", "alice", "victor"])
def test_report_tab_draws_stages_side_by_side_and_the_reverts_after_the_failure(
    browser: Any, airflow_stack: Any, failed_run: str, user: str
) -> None:
    for scheme in SCHEMES:
        page = login_page(browser, airflow_stack, user, color_scheme=scheme)
        try:
            run = quote(failed_run, safe="")
            page.goto(f"{airflow_stack.url}/dags/{DAG_ID}/runs/{run}/plugin/rackflow-jobnet-report")
            gantt = page.get_by_test_id("gantt")
            gantt.wait_for(timeout=60_000)
            assert page.get_by_test_id("error").count() == 0, page.get_by_test_id("error").all_inner_texts()
            steps = gantt.locator("g.lane[data-lane='step']")
            smoke = gantt.locator("g.lane[data-lane='step'][data-step='smoke-test']")
            assert smoke.get_attribute("data-state") == "failed"
            assert "exit 1" in (smoke.text_content() or "")
            # The three installs of stage 1 run in parallel: their bars overlap in time.
            bars = [
                gantt.locator(f"g.lane[data-lane='step'][data-step='install-java-{n}'] rect").bounding_box()
                for n in ("nn", "dn1", "dn2")
            ]
            assert all(b is not None for b in bars)
            assert max(b["x"] for b in bars if b) < min(b["x"] + b["width"] for b in bars if b)
            install = (
                gantt.locator("g.lane[data-lane='step'][data-step='install-java-nn']").text_content() or ""
            )
            assert "nn" in install and "exit 0" in install
            # Every step but the failed one is reverted, drawn after the failure, in reverse stage order.
            reverts = gantt.locator("g.lane[data-lane='revert']")
            assert reverts.count() == steps.count() - 1
            mark = gantt.get_by_test_id("failure-mark").locator("line").bounding_box()
            assert mark is not None
            for i in range(reverts.count()):
                box = reverts.nth(i).locator("rect").bounding_box()
                assert box is not None and box["x"] >= mark["x"] - 1, (i, box, mark)
            sections = gantt.locator("g[data-section]")
            order = [sections.nth(i).get_attribute("data-section") for i in range(sections.count())]
            assert order[-4:] == ["revert-1", "revert-2", "revert-3", "revert-4"]
            first_revert = gantt.locator("g[data-section='revert-1'] g.lane").all()
            assert {lane.get_attribute("data-step") for lane in first_revert} == {
                "start-namenode",
                "start-datanode-dn1",
                "start-datanode-dn2",
            }
            page.get_by_test_id("steps").locator("tr[data-step='smoke-test']").get_by_text(
                "failing on purpose"
            ).wait_for()
            page.get_by_test_id("updated").get_by_text("UTC").wait_for()
            page.wait_for_timeout(300)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"jobnet-report-{user}-{scheme}.png"))
        finally:
            page.close()
