"""Following a job through the job API of a running Airflow stack (shared by the end-to-end tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

JOBS = "/rackflow/api/jobs"


def wait_for_job(
    stack: Any, session: Any, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 180
) -> dict[str, Any]:
    """Poll ``GET /rackflow/api/jobs/{job_id}`` until ``until(job)`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = session.get(f"{stack.url}{JOBS}/{job_id}", timeout=180).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.5)


def job_finished(job: dict[str, Any]) -> bool:
    """The job's DAG run has ended (its stages are done, whatever the job's state)."""
    return job.get("run_state") in ("success", "failed")
