"""The job API end to end on a real Airflow standalone, Slurm and triggerer: clear after submit,
idempotent termination with one scancel, and ten concurrent users' jobs.

Request timeouts are long: the API server builds its execution-API routes (Cadwyn) on the event loop
when the first task starts, which stalls every request for tens of seconds on a loaded 2-core box."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.plugins.jobs_support import JOBS, job_finished, wait_for_job

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")


def test_clear_after_submit_keeps_one_slurm_job_and_terminate_cancels_once(
    airflow_stack: Any, devfleet: Any
) -> None:
    from rackflow.hooks.scheduler import BatchSchedulerHook

    airflow_stack.wait_for_dag("rackflow_job")
    alice = airflow_stack.session("alice")
    job_id = alice.post(
        f"{airflow_stack.url}{JOBS}", json={"executable": "/bin/sleep", "arguments": ["300"]}, timeout=30
    ).json()["job_id"]
    job = wait_for_job(airflow_stack, alice, job_id, lambda j: j["state"] == "ACTIVE")
    slurm_id = job["properties"]["scheduler_job_id"]
    workdir = job["properties"]["workdir"]
    assert Path(workdir).is_dir()

    # A system failure after submit: clearing the submit stage runs it again, and it takes the job over.
    admin = airflow_stack.session("admin")
    resp = admin.post(
        f"{airflow_stack.url}/api/v2/dags/rackflow_job/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": job_id, "task_ids": ["submit"], "only_failed": False},
        timeout=180,
    )
    assert resp.status_code == 200, resp.text
    wait_for_job(
        airflow_stack, alice, job_id, lambda j: any("found existing" in e["message"] for e in j["events"])
    )
    hook = BatchSchedulerHook()
    name = Path(workdir).name
    assert hook.find_by_name(name) == [slurm_id]

    first = alice.post(f"{airflow_stack.url}{JOBS}/{job_id}/terminate", json={}, timeout=180)
    second = alice.post(f"{airflow_stack.url}{JOBS}/{job_id}/terminate", json={}, timeout=180)
    assert first.status_code == 202 and first.json()["acted"] is True
    assert second.status_code == 200 and second.json()["acted"] is False
    assert "already terminating" in second.json()["message"]
    job = wait_for_job(airflow_stack, alice, job_id, job_finished)
    assert job["state"] == "CANCELED"
    assert hook.statuses([slurm_id])[slurm_id].native_state == "CANCELLED"
    assert sum("cancel sent to" in e["message"] for e in job["events"]) == 1
    log = (devfleet.slurm.workdir / "log" / "slurmctld.log").read_text()
    assert len(re.findall(rf"REQUEST_KILL_JOB JobId={slurm_id}\b", log)) == 1
    assert not Path(workdir).exists()  # cleanup removed the job directory
    states = {
        ti["task_id"]: ti["state"]
        for ti in admin.get(
            f"{airflow_stack.url}/api/v2/dags/rackflow_job/dagRuns/{job_id}/taskInstances", timeout=30
        ).json()["task_instances"]
    }
    # The remaining stages did nothing: the submit (its wait) ended skipped, finish staged nothing out.
    assert states["submit"] == "skipped" and states["finish"] == "failed", states
    assert not any(e["message"].startswith("staged out") for e in job["events"])

    # Terminating a finished job changes nothing.
    done_id = alice.post(f"{airflow_stack.url}{JOBS}", json={"executable": "/bin/true"}, timeout=180).json()[
        "job_id"
    ]
    done = wait_for_job(airflow_stack, alice, done_id, job_finished)
    assert done["state"] == "COMPLETED"
    late = alice.post(f"{airflow_stack.url}{JOBS}/{done_id}/terminate", json={}, timeout=180).json()
    assert late["acted"] is False and "already finished" in late["message"]
    assert alice.get(f"{airflow_stack.url}{JOBS}/{done_id}", timeout=180).json()["state"] == "COMPLETED"


def test_ten_concurrent_submissions_from_different_users_all_run_and_are_accounted_for(
    airflow_stack: Any, devfleet: Any
) -> None:
    airflow_stack.wait_for_dag("rackflow_job")
    users = ["alice", "bob", "operator", "admin", "alice", "bob", "operator", "admin", "alice", "bob"]
    sessions = {u: airflow_stack.session(u) for u in set(users)}

    def submit(i: int) -> tuple[str, str]:
        user = users[i]
        resp = sessions[user].post(
            f"{airflow_stack.url}{JOBS}",
            json={"executable": "/bin/sh", "arguments": ["-c", f"exit {i % 2}"]},
            timeout=180,
        )
        assert resp.status_code == 201, resp.text
        return user, resp.json()["job_id"]

    with ThreadPoolExecutor(10) as pool:
        submitted = list(pool.map(submit, range(10)))
    assert len({job_id for _, job_id in submitted}) == 10
    finals = [wait_for_job(airflow_stack, sessions[u], j, job_finished, timeout=400) for u, j in submitted]
    assert [f["state"] for f in finals] == ["COMPLETED" if i % 2 == 0 else "FAILED" for i in range(10)], [
        (f["state"], f["message"], [e["message"] for e in f["events"]]) for f in finals
    ]
    assert [f["properties"]["exit_code"] for f in finals] == [i % 2 for i in range(10)], [
        [e["message"] for e in f["events"]] for f in finals if f["properties"]["exit_code"] is None
    ]
    assert len({f["properties"]["scheduler_job_id"] for f in finals}) == 10
    for user, job_id in submitted:
        listed = sessions[user].get(f"{airflow_stack.url}{JOBS}", timeout=180).json()["jobs"]
        assert job_id in [j["job_id"] for j in listed]
        if user in ("alice", "bob"):  # ordinary users list only their own job-API jobs
            # (and S3 jobs of intakes whose visible_to names them: bob sees the "api" intake's)
            assert {j["owner"] for j in listed if j["source"] != "s3"} == {user}


def test_job_api_reports_cpu_time_and_peak_memory_from_slurm_accounting(
    airflow_stack: Any, devfleet: Any
) -> None:
    """A job burning 2 s of CPU while holding 200 MB: its usage comes from sacct (slurmdbd)."""
    from tests.core.test_slurm_real import BURN

    airflow_stack.wait_for_dag("rackflow_job")
    alice = airflow_stack.session("alice")
    resp = alice.post(
        f"{airflow_stack.url}{JOBS}",
        json={"executable": "/usr/bin/python3", "arguments": ["-c", BURN]},
        timeout=180,
    )
    assert resp.status_code == 201, resp.text
    job = wait_for_job(airflow_stack, alice, resp.json()["job_id"], job_finished)
    assert job["state"] == "COMPLETED", [e["message"] for e in job["events"]]
    props = job["properties"]
    assert props["exit_code"] == 0 and props["nodes"] == ["localhost"]
    assert props["cpu_time"] >= 1, props
    assert props["max_memory"] >= 150 * 10**6, props
    assert props["wall_time"] >= 2, props
    final = next(e for e in job["events"] if "ended COMPLETED" in e["message"])
    assert re.search(r"used \d+ s of CPU, peak memory \d+\.\d MiB, \d+ s wall time", final["message"]), final
