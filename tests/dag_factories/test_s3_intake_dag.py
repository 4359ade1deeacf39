"""The intake DAG end to end with dag.test(): real SeaweedFS S3 and the real single-node Slurm."""

from __future__ import annotations

import os
import uuid

from tests.dag_factories.s3_intake_support import keys, read_status, slurm_jobs_named, upload_job


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


def test_each_hostile_or_broken_job_gets_a_defined_outcome(devfleet, airflow_db, intake_buckets, job_base):
    """One intake run over six jobs: spaces, symlink and sub-directory results; a missing script; a
    script sbatch refuses; a non-zero exit; an empty and an unknown status object."""
    client = devfleet.s3.client()
    bucket = intake_buckets["e2e"]
    tag = uuid.uuid4().hex[:5]
    ok, missing, refused, exits, empty, unknown = (f"{n}{tag}" for n in ("ok", "ms", "rf", "ex", "em", "un"))
    upload_job(
        client,
        bucket,
        ok,
        script=(
            b"#!/bin/bash\ncat 'my input.dat' > 'my output.txt'\n"
            b"mkdir -p sub/deeper && echo x > sub/deeper/f\nln -s /etc/passwd leak\nmkdir empty-dir\n"
        ),
        files={"my input.dat": b"spaced\n", "data/nested.txt": b"n\n"},
    )
    upload_job(client, bucket, missing, script=None)
    upload_job(client, bucket, refused, script=b"#!/bin/bash\n#SBATCH --partition=no-such-partition\ntrue\n")
    upload_job(client, bucket, exits, script=b"#!/bin/bash\necho partial > partial.txt\nexit 3\n")
    upload_job(client, bucket, empty, status=b"")
    upload_job(client, bucket, unknown, status=b"PLEASE_RUN\n")

    _dag("e2e").test()

    # spaces, nested inputs, sub-directories come back; the symlink does not; an empty dir is a marker
    assert read_status(client, bucket, ok).splitlines()[0] == "COMPLETED"
    got = keys(client, bucket, ok)
    assert f"{ok}/my output.txt" in got
    assert f"{ok}/sub/deeper/f" in got
    assert f"{ok}/empty-dir/" in got
    assert f"{ok}/leak" not in got
    assert (job_base / "e2e" / ok / "data" / "nested.txt").read_bytes() == b"n\n"

    # missing script: FAILED with the reason, nothing submitted, no local directory
    assert read_status(client, bucket, missing) == "FAILED\n\naws-job-run.sh is missing\n"
    assert slurm_jobs_named(devfleet, missing) == []
    assert not (job_base / "e2e" / missing).exists()

    # the scheduler refuses the script: FAILED with sbatch's words
    lines = read_status(client, bucket, refused).splitlines()
    assert lines[0] == "FAILED" and "sbatch refused the job script" in lines[2], lines

    # a non-zero exit: results still come back, then FAILED with the exit code and the job id
    lines = read_status(client, bucket, exits).splitlines()
    assert lines[0] == "FAILED" and lines[1].isdigit() and "exit code 3" in lines[2], lines
    assert f"{exits}/partial.txt" in keys(client, bucket, exits)

    # unreadable status objects are left exactly as the uploader wrote them
    assert read_status(client, bucket, empty) == ""
    assert read_status(client, bucket, unknown) == "PLEASE_RUN\n"
    assert not (job_base / "e2e" / empty).exists()


def test_new_upload_over_an_existing_job_directory_fails_instead_of_running_again(
    devfleet, airflow_db, intake_buckets, job_base
):
    """S3 objects deleted but the local directory kept, then the same prefix uploaded again: the job
    does not run a second time (nothing is deleted automatically, so rackflow refuses the old dir)."""
    client = devfleet.s3.client()
    bucket = intake_buckets["e2e"]
    prefix = f"again{uuid.uuid4().hex[:5]}"
    upload_job(client, bucket, prefix)
    _dag("e2e").test()
    assert read_status(client, bucket, prefix).startswith("COMPLETED")
    for key in keys(client, bucket, prefix):
        client.delete_object(Bucket=bucket, Key=key)
    upload_job(client, bucket, prefix)
    _dag("e2e").test()
    lines = read_status(client, bucket, prefix).splitlines()
    assert lines[0] == "FAILED" and "already exists" in lines[2], lines
    assert len(slurm_jobs_named(devfleet, prefix)) == 1
