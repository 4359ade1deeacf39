"""Jobnets end to end on a real Airflow standalone (scheduler, LocalExecutor, triggerer) and the
devfleet: the hadoop example's parallel installs run at once and a run marked failed through the REST
API leaves no remote process; the build-environment DAG launches VMs, fails its smoke test on
purpose, reverts in order, destroys the VMs and serves the report to the UI page."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import SCREENSHOTS, login_page
from tests.plugins.conftest import HADOOP_BUILD_DAG


def _wait(what: str, check: Callable[[], Any], timeout: float = 180, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def _sleeps(seconds: int) -> list[str]:
    """PIDs of ``sleep <seconds>`` processes (the sshd is on loopback: the server is this machine)."""
    out = subprocess.run(["pgrep", "-x", "-f", f"sleep {seconds}"], capture_output=True, text=True).stdout
    return out.split()


def _run_state(stack: Any, session: Any, dag_id: str, run_id: str) -> str:
    return str(session.get(f"{stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30).json()["state"])


def _task_states(stack: Any, session: Any, dag_id: str, run_id: str) -> dict[str, str]:
    tis = session.get(
        f"{stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100", timeout=30
    ).json()["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tis}


# The stack's start (the first test of the session to use it) and five waits on a loaded machine.
@pytest.mark.timeout(900)
def test_parallel_installs_run_at_once_and_marking_the_run_failed_kills_them_on_the_server(
    airflow_stack: Any, tmp_path: Path
) -> None:
    dag_id = "jobnet_hadoop-cluster"
    airflow_stack.wait_for_dag(dag_id)
    operator = airflow_stack.session("operator")
    seconds = 600 + secrets.randbelow(300)  # a value no other process sleeps for
    resp = operator.post(
        f"{airflow_stack.url}/api/v2/dags/{dag_id}/dagRuns",
        json={"logical_date": None, "conf": {"root": str(tmp_path / "root"), "install_seconds": seconds}},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]

    # The three install steps of the parallel group are on the server at the same time, and no worker
    # slot is held for them: their tasks are deferred (the triggerer follows them over SSH).
    _wait("three concurrent installs", lambda: len(_sleeps(seconds)) == 3, timeout=180)
    seen: dict[str, str] = {}

    def installs_deferred() -> bool:
        seen.clear()
        seen.update(_task_states(airflow_stack, operator, dag_id, run_id))
        installs = [
            state for task_id, state in seen.items() if task_id.startswith("parallel_1.install-java-")
        ]
        return installs == ["deferred"] * 3

    _wait("the installs to defer", installs_deferred, timeout=60)
    assert "running" not in seen.values(), seen

    def claimed_by_the_triggerer() -> bool:
        tis = operator.get(
            f"{airflow_stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100", timeout=30
        ).json()["task_instances"]
        return all(ti["triggerer_job"] for ti in tis if ti["task_id"].startswith("parallel_1.install-java-"))

    # (A trigger's on_kill is what kills a deferred step: it must be running in the triggerer.)
    _wait("the triggerer to take the installs' triggers", claimed_by_the_triggerer, timeout=60)
    time.sleep(3)
    pids = set(_sleeps(seconds))
    assert len(pids) == 3  # still the same three: a deferral does not start them again

    # Clearing a deferred step does not kill it: its next try re-attaches to the same remote process.
    cleared = "parallel_1.install-java-nn"
    ti_url = f"{airflow_stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{cleared}"
    tries = operator.get(ti_url, timeout=30).json()["try_number"]
    resp = operator.post(
        f"{airflow_stack.url}/api/v2/dags/{dag_id}/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": run_id, "task_ids": [cleared], "only_failed": False},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    cleared_at = time.monotonic()

    def deferred_again() -> bool:
        ti = operator.get(ti_url, timeout=30).json()
        return bool(ti["try_number"] > tries and ti["state"] == "deferred")

    _wait("the cleared step to defer again on its next try", deferred_again, timeout=120)
    _wait("the triggerer to take the new try's trigger", claimed_by_the_triggerer, timeout=60)
    time.sleep(max(3.0, cleared_at + 15 - time.monotonic()))  # past the old trigger's 12 s re-attach wait
    assert set(_sleeps(seconds)) == pids

    resp = operator.patch(
        f"{airflow_stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    # The triggers' on_kill kills each step's process group over SSH: nothing of the run is left.
    _wait("the remote installs to be killed", lambda: not _sleeps(seconds), timeout=60)
    assert _run_state(airflow_stack, operator, dag_id, run_id) == "failed"
    # (The kill removes each step's folder right after its process group is gone.)
    _wait(
        "the steps' job folders to be removed",
        lambda: not list(Path("/tmp/rackflow-steps").glob(f"{dag_id}-{run_id}-*")),
        timeout=30,
    )


def test_build_environment_launches_vms_reverts_in_order_destroys_them_and_reports(
    airflow_stack: Any, devfleet: Any, failed_hadoop_build: tuple[str, Path], browser: Any
) -> None:
    from rackflow.hooks.libvirt import LibvirtHook

    dag_id = HADOOP_BUILD_DAG
    admin = airflow_stack.session("admin")
    # Triggered on host-b with fail_smoke_test (see the fixture); the report tab's browser test reads it too.
    run_id, root = failed_hadoop_build
    assert _run_state(airflow_stack, admin, dag_id, run_id) == "failed"
    states = _task_states(airflow_stack, admin, dag_id, run_id)
    assert states["launch"] == "success" and states["smoke-test"] == "failed"
    assert states["destroy_vms"] == "success" and states["report"] == "failed"

    report = admin.get(f"{airflow_stack.url}/rackflow/api/jobnets/{dag_id}/runs/{run_id}/report", timeout=30)
    assert report.status_code == 200, report.text
    rows = {row["step_id"]: row for row in report.json()["steps"]}
    assert {row["reverted"] for step, row in rows.items() if step != "smoke-test"} == {"yes"}
    # Steps ran on the launched VMs, by name.
    assert "java installed on nn" in rows["install-java-nn"]["output_tail"]
    assert not any(root.glob("*/opt")) and not any(root.glob("*/run"))

    # The VMs were destroyed after the reverts.
    launched = admin.get(
        f"{airflow_stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/launch/xcomEntries/names",
        timeout=30,
    ).json()["value"]
    assert sorted(launched) == ["e2e-hd-01", "e2e-hd-02", "e2e-hd-03"]
    with LibvirtHook("libvirt_host_b") as hook:
        names = {vm.name for vm in hook.list_domains()}
    assert not names & set(launched)

    # The report page, as a DAG-run tab would show it, for a viewer.
    page = login_page(browser, airflow_stack, "victor")
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(
        f"{airflow_stack.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/plugin/rackflow-jobnet-report"
    )
    row = page.get_by_test_id("steps").locator("tr[data-step='smoke-test']")
    try:
        row.wait_for(timeout=30_000)
    except Exception as err:
        raise AssertionError(f"report page: {page.inner_text('body')!r}; console: {errors}") from err
    assert "failed" in row.inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "jobnet_report.png"), full_page=True)
    page.close()


def test_each_ssh_step_is_ended_by_its_trigger_with_its_result_and_never_resumed_on_a_worker(
    airflow_stack: Any, failed_hadoop_build: tuple[str, Path]
) -> None:
    """A deferred SSH step that has ended is ended by its trigger (end-from-trigger): its task is at
    its first try, its result is in XCom as the report reads it, and its only worker start is the
    one that started the step (no resumed try that Airflow's defer-exit race could fail)."""
    dag_id = HADOOP_BUILD_DAG
    admin = airflow_stack.session("admin")
    run_id, _ = failed_hadoop_build
    run_url = f"{airflow_stack.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    tis = admin.get(f"{run_url}/taskInstances?limit=100", timeout=30).json()["task_instances"]
    steps = {ti["task_id"]: ti for ti in tis if ti["operator"] == "SSHStepOperator"}
    ended = {task_id: ti for task_id, ti in steps.items() if ti["state"] in ("success", "failed")}
    by_step = {task_id.rsplit(".", 1)[-1]: task_id for task_id in ended}
    assert "smoke-test" in by_step and "install-java-nn" in by_step, sorted(steps)
    for task_id, ti in ended.items():
        assert ti["try_number"] == 1, (task_id, ti["try_number"])
        result = admin.get(f"{run_url}/taskInstances/{task_id}/xcomEntries/step_result", timeout=30)
        assert result.status_code == 200, (task_id, result.text)
        value = result.json()["value"]  # (the value as stored: JSON text)
        value = json.loads(value) if isinstance(value, str) else value
        assert (value["exit_code"] == 0) == (ti["state"] == "success"), (task_id, value)
    assert ended[by_step["smoke-test"]]["state"] == "failed"

    for task_id in (by_step["install-java-nn"], by_step["smoke-test"]):
        resp = admin.get(
            f"{run_url}/taskInstances/{task_id}/logs/1?full_content=true",
            headers={"Accept": "application/json"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        text = "\n".join(str(part) for part in resp.json()["content"])
        assert "deferring" in text, text[-3000:]  # the one worker start (the step's start)
        assert "ended by the trigger" in text, text[-3000:]  # the trigger's end, in the task's log
        # No resumed worker try: execute_complete's own end lines never ran.
        assert not re.search(r"Step \S+ succeeded in|step '[^']+' failed with exit code", text), text[-3000:]
