"""S3 jobs are rackflow jobs (issue 14, acceptance 3): on a real ``airflow standalone`` with the real
SeaweedFS and Slurm, jobs dropped into an intake bucket are listed and followed through the job API
(owned by the intake's ``run_as``, visible to admins and to the users its ``visible_to`` names, 404 for
anyone else), terminating one there cancels its Slurm job and its status object ends ``CANCELED``, and
clearing a failed ``wait`` through Airflow's ``clearTaskInstances`` resumes that stage without a second
submission."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rackflow_devfleet.fleet import INTAKE_ACCOUNT
from tests.dag_factories.s3_intake_support import read_status, upload_job
from tests.plugins.jobs_support import JOBS

DAG_ID = "s3_intake_api"


def _until(what: str, check: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.5)


def _s3_job(session: Any, url: str, prefix: str) -> dict[str, Any] | None:
    """The job API's entry for the S3 job of ``prefix`` in the listing, if it is there."""
    resp = session.get(f"{url}{JOBS}", params={"limit": 1000}, timeout=180)
    assert resp.status_code == 200, resp.text
    found = [j for j in resp.json()["jobs"] if (j.get("origin") or "").endswith(f"/{prefix}")]
    assert len(found) <= 1, found
    return found[0] if found else None


def _slurm_jobs(devfleet: Any, fragment: str) -> list[tuple[str, str]]:
    """``(id, state)`` of every Slurm job whose name contains ``fragment``."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i %j %T"],
        env={**os.environ, **devfleet.slurm.env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [(line.split()[0], line.split()[2]) for line in out if fragment in line]


@pytest.mark.timeout(1200)
def test_s3_jobs_are_listed_followed_and_terminated_through_the_job_api(
    airflow_stack: Any, devfleet: Any, intake_buckets: dict[str, str]
) -> None:
    url = airflow_stack.url
    client = devfleet.s3.client()
    bucket = intake_buckets["api"]
    airflow_stack.wait_for_dag(DAG_ID)
    tag = uuid.uuid4().hex[:5]
    quick, long = f"quick{tag}", f"long{tag}"
    upload_job(client, bucket, quick)
    upload_job(client, bucket, long, script=b"#!/bin/bash\nsleep 300\n", files={})
    bob, alice, admin = (airflow_stack.session(u) for u in ("bob", "alice", "admin"))

    _until(f"{quick} COMPLETED", lambda: read_status(client, bucket, quick).startswith("COMPLETED"))
    done = _until(
        f"{quick} COMPLETED in the job API",
        lambda: (j := _s3_job(bob, url, quick)) is not None and j["state"] == "COMPLETED" and j,
    )
    assert done["source"] == "s3" and done["owner"] == INTAKE_ACCOUNT
    assert done["origin"] == f"s3://{bucket}/{quick}"
    slurm_id = read_status(client, bucket, quick).splitlines()[1]
    assert done["properties"]["scheduler_job_id"] == slurm_id and done["properties"]["exit_code"] == 0
    job = bob.get(f"{url}{JOBS}/{done['job_id']}", timeout=180).json()
    states = [e["state"] for e in job["events"]]
    assert states[0] == "NEW" and "QUEUED" in states and states[-1] == "COMPLETED", job["events"]
    assert _s3_job(admin, url, quick) is not None
    # Not named by the intake, not an admin: neither listed nor found (404, as for others' jobs).
    assert _s3_job(alice, url, quick) is None
    assert alice.get(f"{url}{JOBS}/{done['job_id']}", timeout=180).status_code == 404
    refused = alice.post(f"{url}{JOBS}/{done['job_id']}/terminate", json={}, timeout=180)
    assert refused.status_code == 404
    assert bob.get(f"{url}{JOBS}/{done['job_id']}/output", timeout=180).status_code == 404

    running = _until(
        f"{long} ACTIVE in the job API",
        lambda: (j := _s3_job(bob, url, long)) is not None and j["state"] == "ACTIVE" and j,
    )
    assert read_status(client, bucket, long).startswith("RUNNING")
    first = bob.post(
        f"{url}{JOBS}/{running['job_id']}/terminate", json={"reason": "wrong input"}, timeout=180
    )
    second = bob.post(f"{url}{JOBS}/{running['job_id']}/terminate", json={}, timeout=180)
    assert first.status_code == 202 and first.json()["acted"] is True, first.text
    assert second.status_code == 200 and second.json()["acted"] is False, second.text
    _until(f"{long} CANCELED", lambda: read_status(client, bucket, long).startswith("CANCELED"))
    lines = read_status(client, bucket, long).splitlines()
    assert lines[1] == running["properties"]["scheduler_job_id"], lines
    assert "terminated at the request of bob" in lines[2], lines
    ended = _until(
        f"{long} CANCELED in the job API",
        lambda: (j := _s3_job(bob, url, long)) is not None and j["state"] == "CANCELED" and j,
    )
    assert ended["terminate_requested_by"] == "bob"
    assert _slurm_jobs(devfleet, f"rf_s3_{long}_") == [(lines[1], "CANCELLED")]
    assert [state for _, state in _slurm_jobs(devfleet, f"rf_s3_{quick}_")] == ["COMPLETED"]


@pytest.mark.timeout(1200)
def test_clearing_a_failed_wait_resumes_the_stage_without_a_second_submission(
    airflow_stack: Any, devfleet: Any, intake_buckets: dict[str, str]
) -> None:
    """Issue 14 item 6 for the S3 front door: the ``wait`` of a job fails (here an operator marks it
    failed after its job ended, before the trigger saw the end: the intake ``clear`` polls Slurm every
    60 s), which leaves the status object non-terminal and cancels nothing; clearing the failed task
    through Airflow's ``clearTaskInstances`` starts the stage again, and it stages out and completes
    the job it submitted -- one Slurm job."""
    dag_id, url = "s3_intake_clear", airflow_stack.url
    client = devfleet.s3.client()
    bucket = intake_buckets["clear"]
    airflow_stack.wait_for_dag(dag_id)
    admin = airflow_stack.session("admin")
    prefix = f"clear{uuid.uuid4().hex[:5]}"
    upload_job(client, bucket, prefix)
    tis = f"{url}/api/v2/dags/{dag_id}/dagRuns/~/taskInstances"

    def deferred_wait() -> dict[str, Any] | None:
        resp = admin.get(tis, params={"task_id": "wait", "state": ["deferred"]}, timeout=180)
        assert resp.status_code == 200, resp.text
        # the intake's only job (a wait started in the triggerer has no rendered label yet)
        found = resp.json()["task_instances"]
        assert len(found) <= 1, found
        return found[0] if found else None

    _until(f"{prefix} QUEUED", lambda: read_status(client, bucket, prefix).startswith("QUEUED"))
    slurm_id = read_status(client, bucket, prefix).splitlines()[1]
    ours = f"rf_s3_{prefix}_"
    _until(f"Slurm job {slurm_id} ended", lambda: _slurm_jobs(devfleet, ours) == [(slurm_id, "COMPLETED")])
    ti = deferred_wait() or _until(f"{prefix}'s wait deferred", deferred_wait)
    run_id, map_index = ti["dag_run_id"], ti["map_index"]
    one = f"{url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/wait/{map_index}"
    marked = admin.patch(one, json={"new_state": "failed"}, timeout=180)
    assert marked.status_code == 200, marked.text
    _until("the wait failed", lambda: admin.get(one, timeout=180).json()["state"] == "failed")
    time.sleep(5)  # a failure callback, if any, has run
    assert read_status(client, bucket, prefix) == f"QUEUED\n{slurm_id}\n"

    cleared = admin.post(
        f"{url}/api/v2/dags/{dag_id}/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": run_id, "only_failed": True},
        timeout=180,
    )
    assert cleared.status_code == 200, cleared.text
    assert [t["task_id"] for t in cleared.json()["task_instances"]] == ["wait"], cleared.text
    _until(f"{prefix} COMPLETED", lambda: read_status(client, bucket, prefix).startswith("COMPLETED"), 300)
    assert read_status(client, bucket, prefix) == f"COMPLETED\n{slurm_id}\n"
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/out.txt")["Body"].read()
    assert body == b"hello from the cloud\ndone\n"
    assert _slurm_jobs(devfleet, ours) == [(slurm_id, "COMPLETED")]
    assert admin.get(one, timeout=180).json()["try_number"] > ti["try_number"]
