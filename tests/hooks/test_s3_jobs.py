"""S3JobsHook against the devfleet's real SeaweedFS S3: polling cost, claims, safe and streamed transfers."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from botocore.exceptions import ClientError

from rackflow.core.s3_protocol import JobStatus, StatusCache, take_manifest
from rackflow.hooks.s3_jobs import S3JobsHook, StatusConflict
from tests.dag_factories.s3_intake_support import CONN_ID, new_bucket, read_status, upload_job


@pytest.fixture
def bucket(devfleet) -> str:  # type: ignore[no-untyped-def]
    return new_bucket(devfleet, "hook")


def test_poll_reads_each_status_once_then_costs_only_listing_pages(devfleet, bucket):
    client = devfleet.s3.client()
    for i in range(5):
        upload_job(client, bucket, f"job{i:04d}", status=b"COMPLETED\n17\n")
    upload_job(client, bucket, "job0100")
    hook = S3JobsHook(CONN_ID, bucket_name=bucket, page_size=4)  # 18 objects: 5 listing pages
    cache = StatusCache()

    first = hook.poll(cache)
    assert [j.prefix for j in first.ready] == ["job0100"]
    assert (first.list_requests, first.get_requests) == (5, 6)

    second = hook.poll(cache)
    assert [j.prefix for j in second.ready] == ["job0100"]
    assert (second.list_requests, second.get_requests) == (5, 0)

    client.put_object(Bucket=bucket, Key="job0003/aws-job-stat.txt", Body=b"FILE_UPLOAD\n")
    third = hook.poll(cache)
    assert [j.prefix for j in third.ready] == ["job0003", "job0100"]
    assert third.get_requests == 1


def test_poll_reports_unreadable_status_objects_and_reads_only_the_head_of_a_huge_one(devfleet, bucket):
    client = devfleet.s3.client()
    upload_job(client, bucket, "empty", status=b"")
    upload_job(client, bucket, "garbage", status=b"HELLO\n")
    upload_job(client, bucket, "huge", status=b"FILE_UPLOAD\n" + b"x" * (2 * 1024 * 1024))
    result = S3JobsHook(CONN_ID, bucket_name=bucket).poll(StatusCache())
    assert result.ready == []
    assert result.invalid["empty"] == "status object is empty (0 bytes)"
    assert result.invalid["garbage"] == "unknown status 'HELLO'"
    assert "too large" in result.invalid["huge"]


def test_claim_is_won_once_and_later_writes_follow_the_protocol(devfleet, bucket):
    client = devfleet.s3.client()
    upload_job(client, bucket, "job0001")
    [ready] = S3JobsHook(CONN_ID, bucket_name=bucket).poll(StatusCache()).ready
    first = S3JobsHook(CONN_ID, bucket_name=bucket).claim("job0001", ready.etag)
    second = S3JobsHook(CONN_ID, bucket_name=bucket).claim("job0001", ready.etag)
    assert first.won and first.status is not None and first.status.status is JobStatus.ACCEPTED
    assert not second.won and "PreconditionFailed" in second.reason
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    hook.transition("job0001", JobStatus.QUEUED, scheduler_job_id="42")
    hook.transition("job0001", JobStatus.RUNNING, scheduler_job_id="42")
    assert read_status(client, bucket, "job0001") == "RUNNING\n42\n"
    client.delete_object(Bucket=bucket, Key="job0001/aws-job-stat.txt")
    with pytest.raises(StatusConflict):  # the uploader deleted the job: rackflow does not recreate it
        hook.transition("job0001", JobStatus.STAGING_OUT)
    assert "job0001/aws-job-stat.txt" not in [
        o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]
    ]


def test_claim_of_a_job_without_script_writes_failed_with_reason(devfleet, bucket):
    client = devfleet.s3.client()
    upload_job(client, bucket, "job0002", script=None)
    [ready] = S3JobsHook(CONN_ID, bucket_name=bucket).poll(StatusCache()).ready
    result = S3JobsHook(CONN_ID, bucket_name=bucket).claim("job0002", ready.etag)
    assert result.won and result.status is not None and result.status.status is JobStatus.FAILED
    assert read_status(client, bucket, "job0002") == "FAILED\n\naws-job-run.sh is missing\n"


def test_stage_in_never_writes_outside_the_job_directory(devfleet, bucket, tmp_path):
    client = devfleet.s3.client()
    # SeaweedFS itself refuses a key with '..' components; AWS S3 stores them. The listing below is
    # therefore injected with such keys, as AWS would return them (the only fake in this test).
    with pytest.raises(ClientError):
        client.put_object(Bucket=bucket, Key="job0002/../../etc/x", Body=b"evil")
    upload_job(client, bucket, "job0002", files={"input.dat": b"in\n", "a b/c d.txt": b"spaced\n"})
    real_keys = S3JobsHook(CONN_ID, bucket_name=bucket).list_job_keys("job0002")
    hostile = ["job0002/../../etc/x", "/etc/y", "job0002/line\nbreak", "job0002/..", "job0002/back\\slash"]
    job_dir = tmp_path / "aws-job" / "job0002"
    result = S3JobsHook(CONN_ID, bucket_name=bucket).stage_in("job0002", job_dir, real_keys + hostile)

    assert sorted(result.skipped) == sorted(hostile)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "aws-job/job0002/a b/c d.txt",
        "aws-job/job0002/aws-job-run.sh",
        "aws-job/job0002/input.dat",
    ]
    with pytest.raises(FileExistsError):  # a second stage-in never reuses a job directory
        S3JobsHook(CONN_ID, bucket_name=bucket).stage_in("job0002", job_dir, real_keys)


def test_stage_out_uploads_new_and_changed_files_only_and_skips_symlinks(devfleet, bucket, tmp_path):
    client = devfleet.s3.client()
    upload_job(client, bucket, "job0003", files={"input.dat": b"in\n", "same.dat": b"same\n"})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    job_dir = tmp_path / "job0003"
    hook.stage_in("job0003", job_dir, hook.list_job_keys("job0003"))
    manifest = take_manifest(job_dir)
    (job_dir / "input.dat").write_bytes(b"changed\n")
    (job_dir / "out.txt").write_bytes(b"new\n")
    (job_dir / "leak").symlink_to("/etc/passwd")
    (job_dir / "aws-job-stat.txt").write_bytes(b"COMPLETED\n")  # the job must not forge its status
    result = hook.stage_out("job0003", job_dir, manifest)
    assert result.keys == ["job0003/input.dat", "job0003/out.txt"]
    assert set(result.skipped) == {"leak", "aws-job-stat.txt"}
    assert read_status(client, bucket, "job0003") == "FILE_UPLOAD\n"


def test_transfers_are_streamed_not_held_in_memory(devfleet, bucket, tmp_path):
    size = 80 * 1024 * 1024
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.truncate(size)  # sparse: no memory or disk cost to make
    client = devfleet.s3.client()
    upload_job(client, bucket, "big", files={})
    client.upload_file(str(src), bucket, "big/big.bin")
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    keys = hook.list_job_keys("big")
    job_dir = tmp_path / "big"
    tracemalloc.start()
    try:
        hook.stage_in("big", job_dir, keys)
        manifest = take_manifest(job_dir)
        os.truncate(job_dir / "big.bin", size + 1)
        hook.stage_out("big", job_dir, manifest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (job_dir / "big.bin").stat().st_size == size + 1
    assert client.head_object(Bucket=bucket, Key="big/big.bin")["ContentLength"] == size + 1
    assert peak < size // 2, f"peak Python allocation {peak} bytes for a {size}-byte file"
