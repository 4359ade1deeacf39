"""An S3 job's resource usage is in its job record as a job-API job's is (issue 14): its end, on the
real Slurm and SeaweedFS, records CPU time, wall time, peak memory, exit code and nodes from the
scheduler's accounting, and the job API shows them in the same ``cpu_time``, ``wall_time``,
``max_memory`` fields."""

from __future__ import annotations

from typing import Any

from rackflow.operators.s3_intake import S3JobWaitOperator
from tests.core.test_slurm_real import BURN
from tests.dag_factories.s3_intake_support import CONN_ID, accept_one_job, read_status
from tests.plugins.jobs_support import JOBS


def test_an_s3_job_records_its_usage_from_the_schedulers_accounting(
    devfleet: Any, rackflow_db: str, shared_tmp: Any, api: Any, auth: Any
) -> None:
    from rackflow.db import jobs

    script = b"#!/bin/bash\n#SBATCH --ntasks=1\n/usr/bin/python3 burn.py\n"
    accepted = accept_one_job(
        devfleet, "usage", shared_tmp, stem="burn", script=script, files={"burn.py": BURN.encode()}
    )
    bucket, prefix, dag_id, job = accepted.bucket, accepted.prefix, accepted.dag_id, accepted.job

    waited = S3JobWaitOperator(
        task_id="wait", job=job, bucket_name=bucket, aws_conn_id=CONN_ID, poll_interval=0.5, deferrable=False
    ).execute({})

    assert waited["status"] == "COMPLETED", waited
    assert read_status(devfleet.s3.client(), bucket, prefix) == f"COMPLETED\n{job['job_id']}\n"
    row = jobs.get_job(dag_id, job["job_key"])
    assert row is not None and row.state == "COMPLETED" and row.exit_code == 0
    assert row.cpu_time_s is not None and row.cpu_time_s >= 1
    assert row.wall_time_s is not None and row.wall_time_s >= 1
    assert row.max_memory is not None and row.max_memory >= 150 * 10**6
    assert row.nodes
    assert "of CPU, peak memory" in jobs.events(dag_id, job["job_key"])[-1].message
    resp = api.get(f"{JOBS}/{job['job_key']}", headers=auth("admin"))  # the job API shows them
    assert resp.status_code == 200, resp.text
    props = resp.json()["properties"]
    assert (props["cpu_time"], props["wall_time"], props["max_memory"]) == (
        row.cpu_time_s,
        row.wall_time_s,
        row.max_memory,
    ), props
