"""The intake triggers run against the real SeaweedFS S3 and the real Slurm node."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time

from rackflow.hooks.s3_jobs import S3StatusFollower
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow.triggers.s3_job_status import S3JobsReadyEventTrigger, S3JobStatusTrigger
from rackflow.triggers.scheduler import BatchSchedulerJobTrigger
from rackflow_devfleet.fleet import INTAKE_ACCOUNT
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


async def _events_within(trigger, seconds: float, on_event=None) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every event an endless trigger yields within ``seconds``; ``on_event(payload)`` runs after each."""
    events: list[dict] = []

    async def collect() -> None:
        async for event in trigger.run():
            events.append(event.payload)
            if on_event is not None:
                on_event(event.payload)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), timeout=seconds)
    return events


def _prefixes(events: list[dict]) -> list[list[str]]:
    return [sorted(j["prefix"] for j in e["jobs"]) for e in events]


def test_event_trigger_announces_each_new_upload_once_and_never_a_claimed_job(devfleet):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "watch")
    upload_job(client, bucket, "job0001")
    upload_job(client, bucket, "done0001", status=b"COMPLETED\n")
    trigger = S3JobsReadyEventTrigger(bucket_name=bucket, aws_conn_id=CONN_ID, poll_interval=0.2)
    path, kwargs = trigger.serialize()
    assert path == "rackflow.triggers.s3_job_status.S3JobsReadyEventTrigger"
    assert S3JobsReadyEventTrigger(**kwargs).serialize() == (path, kwargs)

    def after(payload: dict) -> None:
        if _prefixes([payload]) == [["job0001"]]:
            # a run claims job0001; then a new job arrives
            client.put_object(Bucket=bucket, Key="job0001/aws-job-stat.txt", Body=b"ACCEPTED\n")
            upload_job(client, bucket, "job0002")

    events = asyncio.run(_events_within(trigger, 4, after))
    assert _prefixes(events) == [["job0001"], ["job0002"]], events
    assert all(e["status"] == "ready" for e in events)


def test_event_trigger_announces_a_job_again_while_nobody_takes_it(devfleet):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "watch")
    upload_job(client, bucket, "job0001")
    trigger = S3JobsReadyEventTrigger(
        bucket_name=bucket, aws_conn_id=CONN_ID, poll_interval=0.2, refire_after=1.5
    )
    times: list[float] = []
    events = asyncio.run(_events_within(trigger, 5, lambda _: times.append(time.monotonic())))
    # its run crashed before the claim: the job is announced again, but not on every poll
    assert len(events) >= 2 and set(map(tuple, _prefixes(events))) == {("job0001",)}, events
    assert all(later - earlier >= 1.5 for earlier, later in itertools.pairwise(times)), times


def test_intake_job_wait_writes_running_from_the_trigger_and_fires_once_at_the_end(devfleet, shared_tmp):
    """The intake's wait is the shared cluster poller's trigger with the S3 status follower: QUEUED ->
    RUNNING is written to the status object from the triggerer and the task is resumed once, when the
    job has ended (formerly: one event, one task resume, per state change)."""
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "follow")
    upload_job(client, bucket, "job0001", status=b"QUEUED\n")
    (shared_tmp / "aws-job-run.sh").write_text("#!/bin/bash\nsleep 2\n")
    scheduler = BatchSchedulerHook(scheduler_env=devfleet.slurm.env)
    os.environ.update(devfleet.slurm.env)
    name = scheduler.adapter.normalize_job_name(f"rf_trig_{shared_tmp.name}")
    script = str(shared_tmp / "aws-job-run.sh")
    first = scheduler.submit_script(script, job_name=name, workdir=str(shared_tmp), account=INTAKE_ACCOUNT)
    job_id, new = first.scheduler_job_id, not first.existing
    assert new
    follower = S3StatusFollower(bucket_name=bucket, aws_conn_id=CONN_ID, prefix="job0001")
    trigger = BatchSchedulerJobTrigger(
        scheduler_job_id=job_id,
        poll_interval=0.2,
        account=INTAKE_ACCOUNT,
        follower="rackflow.hooks.s3_jobs.S3StatusFollower",
        follower_kwargs=follower.kwargs,
    )
    classpath, kwargs = trigger.serialize()
    assert BatchSchedulerJobTrigger(**kwargs).serialize() == (classpath, kwargs)

    async def all_events() -> list[dict]:
        return [e.payload async for e in BatchSchedulerJobTrigger(**kwargs).run()]

    events = asyncio.run(all_events())
    assert [(e["status"], e["job_status"]["state"], e["job_status"]["exit_code"]) for e in events] == [
        ("done", "COMPLETED", 0)
    ]
    # RUNNING came from the trigger (the end is the resumed task's to write, after its stage-out)
    assert client.get_object(Bucket=bucket, Key="job0001/aws-job-stat.txt")["Body"].read() == (
        f"RUNNING\n{job_id}\n".encode()
    )
    again = scheduler.submit_script(script, job_name=name, workdir=str(shared_tmp), account=INTAKE_ACCOUNT)
    assert (again.scheduler_job_id, not again.existing) == (job_id, False)  # idempotent by job name
