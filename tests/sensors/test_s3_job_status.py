"""S3JobStatusSensor on the real SeaweedFS S3: poke mode returns the ready jobs; deferrable mode polls once,
then defers to S3JobStatusTrigger, and a trigger timeout skips (soft_fail) or fails."""

from __future__ import annotations

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
