"""Helpers shared by the S3 intake tests: a fresh bucket on the devfleet's SeaweedFS, job uploads, an
accepted job."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

from rackflow_devfleet.fleet import INTAKE_ACCOUNT, S3_CONN_ID

CONN_ID = S3_CONN_ID
OUT_SCRIPT = b"#!/bin/bash\n#SBATCH --ntasks=1\ncat input.dat > out.txt\necho done >> out.txt\n"


def new_bucket(devfleet: Any, tag: str = "t") -> str:
    """A fresh, empty bucket (S3 names: lowercase, digits, dashes)."""
    name = f"rf-{tag}-{uuid.uuid4().hex[:10]}"
    devfleet.s3.client().create_bucket(Bucket=name)
    return name


def upload_job(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    script: bytes | None = OUT_SCRIPT,
    files: dict[str, bytes] | None = None,
    status: bytes | None = b"FILE_UPLOAD\n",
) -> None:
    """What an uploader does: the script, the inputs, and last the status object."""
    if script is not None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/aws-job-run.sh", Body=script)
    for name, body in (files if files is not None else {"input.dat": b"hello from the cloud\n"}).items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)
    if status is not None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/aws-job-stat.txt", Body=status)


@dataclass(frozen=True)
class AcceptedJob:
    """One job an intake run accepted: its bucket, prefix, the run's DAG id and the accept's dict."""

    bucket: str
    prefix: str
    dag_id: str
    job: dict[str, Any]


def accept_one_job(
    devfleet: Any, tag: str, base_dir: Any, *, stem: str, script: bytes, files: dict[str, bytes]
) -> AcceptedJob:
    """Upload one job into a fresh bucket and accept it as a run of ``s3_intake_<tag>`` does: claimed,
    staged in, recorded in the job record and submitted as the intake's account."""
    from rackflow.core.s3_protocol import StatusCache
    from rackflow.hooks.s3_jobs import S3JobsHook
    from rackflow.hooks.scheduler import BatchSchedulerHook
    from rackflow.operators.s3_intake import IntakeRun, accept_jobs

    bucket = new_bucket(devfleet, tag)
    prefix = f"{stem}{uuid.uuid4().hex[:6]}"
    upload_job(devfleet.s3.client(), bucket, prefix, script=script, files=files)
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    run = IntakeRun(
        dag_id=f"s3_intake_{tag}", run_id=f"run_{uuid.uuid4().hex[:6]}", run_as=INTAKE_ACCOUNT,
        base_dir=str(base_dir),
    )  # fmt: skip
    [job] = accept_jobs(
        hook, [j.to_dict() for j in hook.poll(StatusCache()).ready], BatchSchedulerHook(), run
    )
    return AcceptedJob(bucket, prefix, run.dag_id, job)


def read_status(client: Any, bucket: str, prefix: str) -> str:
    return client.get_object(Bucket=bucket, Key=f"{prefix}/aws-job-stat.txt")["Body"].read().decode()


def keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(found)


def slurm_jobs_named(devfleet: Any, fragment: str) -> list[str]:
    """Names of every job the devfleet's Slurm remembers whose name contains ``fragment``."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%j"],
        env={**os.environ, **devfleet.slurm.env},
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in out.stdout.split() if fragment in name]
