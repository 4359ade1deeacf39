"""S3JobStatusSensor on the real SeaweedFS S3: poke mode returns the ready jobs; deferrable mode polls once,
then defers to S3JobStatusTrigger, and a trigger timeout skips (soft_fail) or fails."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

from rackflow.sensors.s3_job_status import S3JobStatusSensor
from rackflow.triggers.s3_job_status import S3JobStatusTrigger
from tests.dag_factories.s3_intake_support import CONN_ID, new_bucket, upload_job


def _sensor(bucket: str, **kwargs) -> S3JobStatusSensor:  # type: ignore[no-untyped-def]
    return S3JobStatusSensor(task_id="wait", bucket_name=bucket, aws_conn_id=CONN_ID, **kwargs)


def test_poke_returns_ready_jobs_with_their_etags_and_ignores_the_rest(devfleet):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "sensor")
    upload_job(client, bucket, "job0001")
    upload_job(client, bucket, "job0002", status=b"COMPLETED\n5\n")
    upload_job(client, bucket, "job0003", status=b"")
    upload_job(client, bucket, "job0004")
    sensor = _sensor(bucket, max_jobs=1)
    done = sensor.poke({})
    assert done and done.xcom_value == [  # type: ignore[union-attr]
        {
            "prefix": "job0001",
            "etag": client.head_object(Bucket=bucket, Key="job0001/aws-job-stat.txt")["ETag"],
        }
    ]


def test_a_run_started_by_announcements_takes_only_the_announced_jobs(devfleet):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "sensor")
    for prefix in ("job0001", "job0002", "job0003"):
        upload_job(client, bucket, prefix)
    # What Airflow puts in the context of an asset-triggered run: the watcher's events, payload in extra.
    announced = [
        SimpleNamespace(extra={"from_trigger": True, "payload": {"status": "ready", "jobs": jobs}})
        for jobs in ([{"prefix": "job0001", "etag": "x"}], [{"prefix": "job0003", "etag": "y"}])
    ]
    asset_run = {"triggering_asset_events": {"s3_intake": announced}}
    sensor = _sensor(bucket, announced_only=True)
    done = sensor.poke(asset_run)
    assert done and [j["prefix"] for j in done.xcom_value] == ["job0001", "job0003"]  # type: ignore[union-attr]
    # a manual run (no events) takes every ready job
    done = _sensor(bucket, announced_only=True).poke({"triggering_asset_events": {}})
    assert done and len(done.xcom_value) == 3  # type: ignore[union-attr]
    # announced jobs another run already claimed: nothing left for this one
    client.put_object(Bucket=bucket, Key="job0001/aws-job-stat.txt", Body=b"ACCEPTED\n")
    client.put_object(Bucket=bucket, Key="job0003/aws-job-stat.txt", Body=b"ACCEPTED\n")
    assert _sensor(bucket, announced_only=True).poke(asset_run) is False


def test_deferrable_sensor_defers_when_idle_and_returns_the_trigger_jobs(devfleet):
    bucket = new_bucket(devfleet, "sensor")
    sensor = _sensor(bucket, deferrable=True, timeout=30, poke_interval=0.5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, S3JobStatusTrigger)
    assert (trigger.bucket_name, trigger.timeout, trigger.poll_interval) == (bucket, 30, 0.5)
    jobs = [{"prefix": "job0001", "etag": '"x"'}]
    assert sensor.execute_complete({}, {"status": "ready", "jobs": jobs}) == jobs
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, {"status": "timeout"})
    with pytest.raises(AirflowSkipException):
        _sensor(bucket, deferrable=True, soft_fail=True).execute_complete({}, {"status": "timeout"})


def test_deferrable_sensor_returns_at_once_when_jobs_are_waiting(devfleet):
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "sensor")
    upload_job(client, bucket, "job0009")
    assert [j["prefix"] for j in _sensor(bucket, deferrable=True).execute({})] == ["job0009"]
