"""The intake DAG under a real ``airflow standalone`` (scheduler, triggerer, LocalExecutor): pausing the
DAG stops intake (as removing the cron job would); unpausing takes each waiting job exactly once."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

from tests.dag_factories.s3_intake_support import read_status, upload_job

DAG_ID = "s3_intake_pause"


def _statuses(client, bucket: str, prefixes: list[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {p: read_status(client, bucket, p).split("\n")[0] for p in prefixes}


def _wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.5)


def _set_paused(stack, paused: bool) -> None:  # type: ignore[no-untyped-def]
    resp = stack.session("admin").patch(
        f"{stack.url}/api/v2/dags/{DAG_ID}", json={"is_paused": paused}, timeout=30
    )
    assert resp.status_code == 200, resp.text


def _active_runs(stack) -> int:  # type: ignore[no-untyped-def]
    resp = stack.session("admin").get(
        f"{stack.url}/api/v2/dags/{DAG_ID}/dagRuns", params={"state": ["running", "queued"]}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total_entries"])


def test_paused_intake_takes_nothing_and_unpaused_runs_each_job_once(
    airflow_stack, devfleet, intake_buckets, job_base
):
    client = devfleet.s3.client()
    bucket = intake_buckets["pause"]
    airflow_stack.wait_for_dag(DAG_ID)  # parsed and unpaused
    _set_paused(airflow_stack, True)

    prefixes = [f"p{uuid.uuid4().hex[:5]}{i}" for i in range(3)]
    for prefix in prefixes:
        upload_job(client, bucket, prefix)
    # Longer than a schedule interval plus several polls: a paused DAG must not touch the jobs.
    time.sleep(30)
    assert _statuses(client, bucket, prefixes) == dict.fromkeys(prefixes, "FILE_UPLOAD")
    assert not any((job_base / "pause" / p).exists() for p in prefixes)

    _set_paused(airflow_stack, False)
    try:
        _wait_until(
            lambda: set(_statuses(client, bucket, prefixes).values()) == {"COMPLETED"},
            240,
            f"all of {prefixes} COMPLETED (see {airflow_stack.log})",
        )
    finally:
        _set_paused(airflow_stack, True)
    squeue = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%j"],
        env={**os.environ, **devfleet.slurm.env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for prefix in prefixes:
        assert len([n for n in squeue if n.startswith(f"rf_s3_{prefix}_")]) == 1, squeue
        assert client.get_object(Bucket=bucket, Key=f"{prefix}/out.txt")["Body"].read().startswith(b"hello")
