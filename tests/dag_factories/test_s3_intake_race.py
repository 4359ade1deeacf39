"""Two intake pollers at once over the same 20 ready jobs: real SeaweedFS conditional writes and the real
Slurm node decide, and exactly 20 scheduler jobs exist afterwards."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

from airflow.sdk.exceptions import AirflowSkipException

from rackflow.core.s3_protocol import StatusCache
from rackflow.hooks.s3_jobs import S3JobsHook
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow.operators.s3_intake import claim_job, stage_in_job, submit_job
from rackflow_devfleet.fleet import INTAKE_ACCOUNT
from tests.dag_factories.s3_intake_support import CONN_ID, new_bucket, read_status, upload_job


def _poller(bucket: str, base: Path, run_id: str, barrier: threading.Barrier, out: dict[str, list]) -> None:
    """What one intake DAG run does up to submission: poll, then claim/stage-in/submit every ready job."""
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    ready = hook.poll(StatusCache()).ready
    barrier.wait()  # both runs saw all 20 jobs ready before either claims
    for job in ready:
        try:
            claimed = claim_job(hook, job.to_dict())
        except AirflowSkipException:
            out["skipped"].append(job.prefix)
            continue
        staged = stage_in_job(hook, claimed, base)
        submitted = submit_job(hook, staged, BatchSchedulerHook(), run_id, INTAKE_ACCOUNT)
        out["submitted"].append((job.prefix, submitted["job_id"], run_id))


def test_two_concurrent_intake_runs_submit_each_of_20_jobs_exactly_once(devfleet, shared_tmp):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "race")
    tag = uuid.uuid4().hex[:4]
    prefixes = [f"r{tag}{i:02d}" for i in range(20)]
    for prefix in prefixes:
        upload_job(client, bucket, prefix, script=b"#!/bin/bash\ntrue\n")

    results: dict[str, list] = {"submitted": [], "skipped": []}
    barrier = threading.Barrier(2)
    runs = [
        threading.Thread(target=_poller, args=(bucket, shared_tmp, f"run_{n}", barrier, results))
        for n in ("a", "b")
    ]
    for t in runs:
        t.start()
    for t in runs:
        t.join()

    submitted = sorted(p for p, _, _ in results["submitted"])
    assert submitted == prefixes
    assert sorted(results["skipped"]) == prefixes
    squeue = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i %j"],
        env={**os.environ, **devfleet.slurm.env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    ours = [line for line in squeue if f"rf_s3_r{tag}" in line]
    assert len(ours) == 20, ours
    for prefix, job_id, _ in results["submitted"]:
        assert read_status(client, bucket, prefix).splitlines()[:2] in (
            ["QUEUED", job_id],
            ["RUNNING", job_id],
        )
