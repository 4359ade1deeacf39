"""The intake DAG end to end with dag.test(): real SeaweedFS S3 and the real single-node Slurm."""

from __future__ import annotations

import os
import uuid

from tests.dag_factories.s3_intake_support import keys, read_status, upload_job


def _dag(name: str):  # type: ignore[no-untyped-def]
    from rackflow.dag_factories.s3_intake import build_all

    return build_all()[f"s3_intake_{name}"]


def test_round_trip_job_moves_to_completed_and_results_come_back(
    devfleet, airflow_db, intake_buckets, job_base
):
    client = devfleet.s3.client()
    bucket = intake_buckets["e2e"]
    prefix = f"job{uuid.uuid4().hex[:6]}"
    upload_job(client, bucket, prefix)
    dag = _dag("e2e")
    dag.test()
    status = read_status(client, bucket, prefix)
    assert status.splitlines()[0] == "COMPLETED", status
    assert f"{prefix}/out.txt" in keys(client, bucket, prefix)
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/out.txt")["Body"].read()
    assert body == b"hello from the cloud\ndone\n"
    job_dir = job_base / "e2e" / prefix
    assert sorted(os.listdir(job_dir))[:3] == ["aws-job-run.sh", "input.dat", "out.txt"]
