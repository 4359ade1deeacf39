"""The intake triggers run against the real SeaweedFS S3 and the real Slurm node."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from rackflow.hooks.s3_jobs import LocalScriptScheduler
from rackflow.triggers.s3_job_status import S3JobStatusTrigger, ScriptJobStateTrigger
from tests.dag_factories.s3_intake_support import CONN_ID, new_bucket, upload_job


async def _first_event(trigger):  # type: ignore[no-untyped-def]
    async for event in trigger.run():
        return event.payload
    raise AssertionError("trigger ended without an event")


def test_status_trigger_serializes_and_times_out_on_an_idle_bucket(devfleet):
    bucket = new_bucket(devfleet, "trig")
    trigger = S3JobStatusTrigger(bucket_name=bucket, aws_conn_id=CONN_ID, poll_interval=0.2, timeout=1)
    path, kwargs = trigger.serialize()
    assert path == "rackflow.triggers.s3_job_status.S3JobStatusTrigger"
    assert S3JobStatusTrigger(**kwargs).serialize() == (path, kwargs)
    assert asyncio.run(_first_event(trigger)) == {"status": "timeout", "timeout": 1}


def test_status_trigger_fires_when_an_upload_finishes_while_it_waits(devfleet):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "trig")
    upload_job(client, bucket, "job0001", status=None)  # files there, no status object yet

    def finish_upload() -> None:
        time.sleep(1.5)
        client.put_object(Bucket=bucket, Key="job0001/aws-job-stat.txt", Body=b"FILE_UPLOAD\n")

    uploader = threading.Thread(target=finish_upload)
    uploader.start()
    trigger = S3JobStatusTrigger(bucket_name=bucket, aws_conn_id=CONN_ID, poll_interval=0.3, timeout=60)
    event = asyncio.run(_first_event(trigger))
    uploader.join()
    assert event["status"] == "ready"
    assert [j["prefix"] for j in event["jobs"]] == ["job0001"]


def test_script_job_trigger_fires_on_each_state_change_of_a_real_slurm_job(devfleet, tmp_path):
    (tmp_path / "aws-job-run.sh").write_text("#!/bin/bash\nsleep 2\n")
    scheduler = LocalScriptScheduler("slurm", env=devfleet.slurm.env)
    os.environ.update(devfleet.slurm.env)
    job_id, new = scheduler.submit(tmp_path, scheduler.job_name(f"rf_trig_{tmp_path.name}"))
    assert new
    trigger = ScriptJobStateTrigger(job_id=job_id, scheduler="slurm", known_state="QUEUED", poll_interval=0.2)
    started = asyncio.run(_first_event(trigger))
    assert started["state"] == "ACTIVE"
    trigger = ScriptJobStateTrigger(job_id=job_id, scheduler="slurm", known_state="ACTIVE", poll_interval=0.2)
    ended = asyncio.run(_first_event(trigger))
    assert (ended["state"], ended["exit_code"]) == ("COMPLETED", 0)
    again, new = scheduler.submit(tmp_path, scheduler.job_name(f"rf_trig_{tmp_path.name}"))
    assert (again, new) == (job_id, False)  # idempotent by job name
