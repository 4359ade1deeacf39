"""How a job-API job waits, on a real Airflow standalone, triggerer and Slurm (issue 14 items 2 and 6).

* The defer-exit race (apache/airflow#72716): a deferred task whose trigger fires before the executor
  has reported the deferring process's exit used to be resumed, and the stale event then failed the
  resumed try. A burst of jobs that end at once (their trigger fires on its first poll while the
  executor is slow with a queue of task starts on 4 slots) must complete every job exactly once: the
  trigger ends its task itself (no resumed try), each run's tasks succeed at their first try.
* Airflow 3.3's triggerer calls a trigger's ``on_kill`` for a cleared task too: clearing the waiting
  ``submit`` re-attaches to the same Slurm job and cancels nothing; marking the run failed cancels it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.plugins.jobs_support import JOBS, job_finished, wait_for_job


def _task_instances(stack: Any, admin: Any, job_id: str) -> dict[str, dict[str, Any]]:
    resp = admin.get(f"{stack.url}/api/v2/dags/rackflow_job/dagRuns/{job_id}/taskInstances", timeout=180)
    assert resp.status_code == 200, resp.text
    return {ti["task_id"]: ti for ti in resp.json()["task_instances"]}


def test_a_burst_of_jobs_that_end_at_once_completes_each_once_with_no_resumed_or_retried_try(
    airflow_stack: Any, devfleet: Any
) -> None:
    from rackflow.hooks.scheduler import BatchSchedulerHook

    airflow_stack.wait_for_dag("rackflow_job")
    alice, admin = airflow_stack.session("alice"), airflow_stack.session("admin")

    def submit(_: int) -> str:
        resp = alice.post(f"{airflow_stack.url}{JOBS}", json={"executable": "/bin/true"}, timeout=180)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["job_id"])

    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(submit, range(12)))
    finals = [wait_for_job(airflow_stack, alice, j, job_finished, timeout=600) for j in ids]
    assert [f["state"] for f in finals] == ["COMPLETED"] * 12, [
        (f["state"], f["message"], [e["message"] for e in f["events"]]) for f in finals
    ]
    hook = BatchSchedulerHook()
    slurm_ids = [f["properties"]["scheduler_job_id"] for f in finals]
    assert len(set(slurm_ids)) == 12
    for final in finals:
        name = final["properties"]["workdir"].rsplit("/", 1)[-1]
        assert hook.find_by_name(name) == [final["properties"]["scheduler_job_id"]]  # submitted once
        assert not any("lost track" in e["message"] for e in final["events"])
        tis = _task_instances(airflow_stack, admin, final["job_id"])
        assert {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()} == {
            "submit": ("success", 1),
            "finish": ("success", 1),
        }, tis


def test_clearing_a_waiting_job_reattaches_and_marking_its_run_failed_cancels_it(
    airflow_stack: Any, devfleet: Any
) -> None:
    from rackflow.hooks.scheduler import BatchSchedulerHook

    airflow_stack.wait_for_dag("rackflow_job")
    alice, admin = airflow_stack.session("alice"), airflow_stack.session("admin")
    resp = alice.post(
        f"{airflow_stack.url}{JOBS}", json={"executable": "/bin/sleep", "arguments": ["300"]}, timeout=180
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["job_id"]
    job = wait_for_job(airflow_stack, alice, job_id, lambda j: j["state"] == "ACTIVE", timeout=300)
    slurm_id = job["properties"]["scheduler_job_id"]
    name = job["properties"]["workdir"].rsplit("/", 1)[-1]
    hook = BatchSchedulerHook()

    # Clear the deferred submit (its trigger is stopped: the triggerer calls on_kill) -> re-attach.
    resp = admin.post(
        f"{airflow_stack.url}/api/v2/dags/rackflow_job/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": job_id, "task_ids": ["submit"], "only_failed": False},
        timeout=180,
    )
    assert resp.status_code == 200, resp.text
    wait_for_job(
        airflow_stack,
        alice,
        job_id,
        lambda j: any("not submitted again" in e["message"] for e in j["events"]),
    )
    deadline = time.monotonic() + 180
    while (ti := _task_instances(airflow_stack, admin, job_id)["submit"])["state"] != "deferred":
        assert time.monotonic() < deadline, ti
        time.sleep(1)
    assert ti["try_number"] == 2
    time.sleep(10)  # the stopped trigger's on_kill has long run: the job must still be running
    assert hook.statuses([slurm_id])[slurm_id].native_state == "RUNNING"
    assert hook.find_by_name(name) == [slurm_id]
    job = alice.get(f"{airflow_stack.url}{JOBS}/{job_id}", timeout=180).json()
    assert not any("cancel sent" in e["message"] for e in job["events"]), job["events"]

    # Marking the run failed ends the waiting task for good: its trigger's on_kill cancels the job.
    resp = admin.patch(
        f"{airflow_stack.url}/api/v2/dags/rackflow_job/dagRuns/{job_id}",
        json={"state": "failed"},
        timeout=180,
    )
    assert resp.status_code == 200, resp.text
    job = wait_for_job(
        airflow_stack, alice, job_id, lambda j: any("cancel sent to" in e["message"] for e in j["events"])
    )
    deadline = time.monotonic() + 60
    while hook.statuses([slurm_id])[slurm_id].native_state != "CANCELLED":
        assert time.monotonic() < deadline, hook.statuses([slurm_id])
        time.sleep(1)
    assert sum("cancel sent to" in e["message"] for e in job["events"]) == 1
