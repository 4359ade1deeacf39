"""The S3 intake tells the uploader (issue 13, item 6), on the real SeaweedFS and Slurm.

A prefix rackflow will not run -- a name it refuses, a status object it cannot parse -- gets ``FAILED``
with the reason, written by the bucket's watcher trigger as a conditional write; an empty object or a
terminal status is left alone. The uploader's line 2 (a scheduler job id) is never adopted: rackflow
writes, follows and cancels only the job it submitted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from rackflow.core.s3_protocol import StatusCache
from rackflow.core.schedulers import JobState
from rackflow.core.schedulers import JobStatus as SchedulerJobStatus
from rackflow.hooks.s3_jobs import S3JobsHook
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow.operators.s3_intake import (
    S3JobWaitOperator,
    claim_job,
    fail_unfinished_job,
    stage_in_job,
    submit_job,
)
from rackflow.triggers.s3_job_status import S3JobsReadyEventTrigger
from rackflow_devfleet.fleet import INTAKE_ACCOUNT
from tests.dag_factories.s3_intake_support import CONN_ID, new_bucket, read_status, upload_job

LONG_SCRIPT = b"#!/bin/bash\n#SBATCH --ntasks=1\nsleep 300\n"


def _put_status(client: Any, bucket: str, prefix: str, body: bytes) -> None:
    client.put_object(Bucket=bucket, Key=f"{prefix}/aws-job-stat.txt", Body=body)


async def _first_event(trigger: S3JobsReadyEventTrigger) -> Any:
    events = trigger.run()
    try:
        return await asyncio.wait_for(anext(events), timeout=60)
    finally:
        await events.aclose()


def test_watcher_writes_failed_with_the_reason_for_refused_prefixes_and_unreadable_statuses(devfleet):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "refuse")
    upload_job(client, bucket, "bad name")  # a name rackflow refuses, FILE_UPLOAD
    upload_job(client, bucket, "bad name2", status=b"RUNNING\n")  # refused name, not FILE_UPLOAD: left
    upload_job(client, bucket, "garbage", status=b"HELLO\n")
    upload_job(client, bucket, "junk-line2", status=b"FILE_UPLOAD\nnot one token\n")
    upload_job(client, bucket, "empty", status=b"")  # nothing said yet: left
    upload_job(client, bucket, "done", status=b"COMPLETED\n7\n")  # terminal: left
    upload_job(client, bucket, "job0001")  # a good job, so the trigger fires once

    event = asyncio.run(
        _first_event(S3JobsReadyEventTrigger(bucket_name=bucket, aws_conn_id=CONN_ID, poll_interval=0.2))
    )
    assert [j["prefix"] for j in event.payload["jobs"]] == ["job0001"]

    refused = read_status(client, bucket, "bad name").splitlines()
    assert refused[:2] == ["FAILED", ""] and refused[2].startswith("job prefix is not usable: a job prefix")
    garbage = read_status(client, bucket, "garbage").splitlines()
    assert garbage[0] == "FAILED" and "cannot be read (unknown status 'HELLO')" in garbage[2]
    assert "write FILE_UPLOAD alone" in garbage[2]
    junk = read_status(client, bucket, "junk-line2").splitlines()
    assert junk[0] == "FAILED" and "is not one token" in junk[2]
    assert read_status(client, bucket, "bad name2") == "RUNNING\n"
    assert read_status(client, bucket, "empty") == ""
    assert read_status(client, bucket, "done") == "COMPLETED\n7\n"
    assert read_status(client, bucket, "job0001") == "FILE_UPLOAD\n"  # claiming is the DAG run's


def test_refusal_is_conditional_on_what_the_poll_read(devfleet):
    """An uploader who fixes the status between the poll and the write wins: nothing is overwritten."""
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "refuse-race")
    upload_job(client, bucket, "typo", status=b"FILE_UPLAOD\n")
    hook, cache = S3JobsHook(CONN_ID, bucket_name=bucket), StatusCache()
    result = hook.poll(cache)
    assert [u.key for u in result.unrunnable] == ["typo/aws-job-stat.txt"]
    _put_status(client, bucket, "typo", b"FILE_UPLOAD\n")  # the uploader fixes it meanwhile
    assert hook.refuse(cache, result.unrunnable) == {}
    assert read_status(client, bucket, "typo") == "FILE_UPLOAD\n"
    again = hook.poll(cache)
    assert again.unrunnable == [] and [r.prefix for r in again.ready] == ["typo"]


def _slurm(devfleet: Any, *argv: str) -> str:
    out = subprocess.run(
        list(argv), env={**os.environ, **devfleet.slurm.env}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _state(devfleet: Any, job_id: str) -> str:
    return _slurm(devfleet, "squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T")


def test_the_uploaders_job_id_line_is_never_adopted(devfleet, tmp_path: Path, shared_tmp: Path):
    """Line 2 naming another user's Slurm job: rackflow writes, follows and cancels only its own job."""
    victim = _slurm(devfleet, "sbatch", "--parsable", f"--chdir={tmp_path}", "--wrap=sleep 300").split(";")[0]
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "line2")
    prefix = f"line2{uuid.uuid4().hex[:6]}"
    try:
        upload_job(
            client, bucket, prefix, script=LONG_SCRIPT, files={}, status=f"FILE_UPLOAD\n{victim}\n".encode()
        )
        hook = S3JobsHook(CONN_ID, bucket_name=bucket)
        seen = hook.read_status(prefix)
        assert seen is not None and seen[0].scheduler_job_id == victim
        claimed = claim_job(hook, {"prefix": prefix, "etag": seen[1]})
        assert read_status(client, bucket, prefix) == "ACCEPTED\n"
        staged = stage_in_job(hook, claimed, shared_tmp / "base")
        submitted = submit_job(
            hook, staged, BatchSchedulerHook(), f"run-{uuid.uuid4().hex[:6]}", INTAKE_ACCOUNT
        )
        own = submitted["job_id"]
        assert own != victim and read_status(client, bucket, prefix) == f"QUEUED\n{own}\n"

        # The uploader rewrites line 2: rackflow's next write still names its own job.
        _put_status(client, bucket, prefix, f"QUEUED\n{victim}\n".encode())
        waiter = S3JobWaitOperator(task_id="wait", job=submitted, bucket_name=bucket, aws_conn_id=CONN_ID)
        waiter.follower().on_state(own, SchedulerJobStatus(state=JobState.ACTIVE, native_state="RUNNING"))
        assert read_status(client, bucket, prefix) == f"RUNNING\n{own}\n"

        # A crashed task's clean-up cancels the job this run submitted, not the one the object names.
        _put_status(client, bucket, prefix, f"RUNNING\n{victim}\n".encode())
        after = fail_unfinished_job(hook, prefix, "task lost", BatchSchedulerHook(), own, INTAKE_ACCOUNT)
        assert after == "FAILED"
        lines = read_status(client, bucket, prefix).splitlines()
        assert lines[:2] == ["FAILED", own] and f"scheduler job {own} cancelled" in lines[2]
        assert _state(devfleet, own) == "CANCELLED"
        assert _state(devfleet, victim) in ("PENDING", "RUNNING")
    finally:
        _slurm(devfleet, "scancel", victim)


def test_a_task_lost_after_submit_cancels_the_job_it_submitted_not_the_uploaded_id(
    devfleet, airflow_db, intake_buckets, monkeypatch, tmp_path: Path
):
    """The accept task fails right after ``sbatch`` (its QUEUED write fails) in a real intake DAG run;
    the failure callback finds the job id in the run's XCom and cancels that job, and the Slurm job
    the uploader named on line 2 keeps running. Injected fault: SeaweedFS cannot be made to refuse one
    PUT, so the hook's transition to QUEUED is replaced by one that raises."""
    from rackflow.core.s3_protocol import JobStatus
    from rackflow.dag_factories.s3_intake import build_all

    real_transition = S3JobsHook.transition

    def transition(self: S3JobsHook, prefix: str, new: JobStatus, **kwargs: Any) -> str:
        if new is JobStatus.QUEUED:
            raise RuntimeError("simulated failure writing QUEUED")
        return real_transition(self, prefix, new, **kwargs)

    monkeypatch.setattr(S3JobsHook, "transition", transition)
    victim = _slurm(devfleet, "sbatch", "--parsable", f"--chdir={tmp_path}", "--wrap=sleep 300").split(";")[0]
    client = devfleet.s3.client()
    bucket = intake_buckets["e2e"]
    prefix = f"lost{uuid.uuid4().hex[:6]}"
    try:
        upload_job(
            client, bucket, prefix, script=LONG_SCRIPT, files={}, status=f"FILE_UPLOAD\n{victim}\n".encode()
        )
        build_all()["s3_intake_e2e"].test()

        lines = read_status(client, bucket, prefix).splitlines()
        assert lines[0] == "FAILED" and "simulated failure writing QUEUED" in lines[2], lines
        assert victim not in lines[1:2]
        listed = _slurm(devfleet, "squeue", "--noheader", "--states=all", "--format=%i %j %T").splitlines()
        own = [line.split() for line in listed if prefix in line]
        assert len(own) == 1 and own[0][0] != victim and own[0][2] == "CANCELLED", listed
        assert _state(devfleet, victim) in ("PENDING", "RUNNING")
    finally:
        _slurm(devfleet, "scancel", victim)
