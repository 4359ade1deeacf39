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
        time.sleep(1)


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
