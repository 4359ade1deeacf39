"""Killing and crashing intake tasks: real SeaweedFS S3 and the real single-node Slurm.

* Killing the wait task (Airflow calls ``on_kill`` on mark-failed/clear; the triggerer calls the
  trigger's ``on_kill`` while the task is deferred) cancels the Slurm job and writes CANCELED.
* A per-job task that crashes without writing a terminal status gets FAILED with a reason from the
  DAG's ``on_failure_callback``; a terminal status is never overwritten and nothing is submitted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from rackflow.hooks.s3_jobs import S3JobsHook
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow.operators.s3_intake import (
    S3JobWaitOperator,
    claim_job,
    end_after_failed_task,
    fail_unfinished_job,
    stage_in_job,
    submit_job,
)
from rackflow.triggers.scheduler import BatchSchedulerJobTrigger
from rackflow_devfleet.fleet import INTAKE_ACCOUNT
from tests.dag_factories.s3_intake_support import (
    CONN_ID,
    accept_one_job,
    new_bucket,
    read_status,
    slurm_jobs_named,
    upload_job,
)

LONG_SCRIPT = b"#!/bin/bash\n#SBATCH --ntasks=1\nsleep 300\n"


def _slurm_state(devfleet: Any, job_id: str) -> str:
    """What squeue says about ``job_id`` (finished jobs included while slurmctld remembers them)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T"],
        env={**os.environ, **devfleet.slurm.env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _submit_long_job(devfleet: Any, tmp_path: Path) -> tuple[S3JobsHook, str, dict[str, Any]]:
    """Upload a ``sleep 300`` job and take it through claim, stage-in and submit (QUEUED <id>)."""
    bucket = new_bucket(devfleet, "kill")
    prefix = f"long{uuid.uuid4().hex[:6]}"
    upload_job(devfleet.s3.client(), bucket, prefix, script=LONG_SCRIPT, files={})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    seen = hook.read_status(prefix)
    assert seen is not None
    claimed = claim_job(hook, {"prefix": prefix, "etag": seen[1]})
    staged = stage_in_job(hook, claimed, tmp_path)
    submitted = submit_job(hook, staged, BatchSchedulerHook(), f"run-{uuid.uuid4().hex[:6]}", INTAKE_ACCOUNT)
    assert read_status(devfleet.s3.client(), bucket, prefix).splitlines()[:2] == [
        "QUEUED",
        submitted["job_id"],
    ]
    assert _slurm_state(devfleet, submitted["job_id"]) in ("PENDING", "RUNNING")
    return hook, bucket, submitted


def _wait_operator(bucket: str, submitted: dict[str, Any], deferrable: bool = False) -> S3JobWaitOperator:
    return S3JobWaitOperator(
        task_id="wait",
        job=submitted,
        bucket_name=bucket,
        aws_conn_id=CONN_ID,
        poll_interval=0.5,
        deferrable=deferrable,
    )


def test_killing_the_wait_task_cancels_the_slurm_job_and_writes_canceled(devfleet, shared_tmp):
    hook, bucket, submitted = _submit_long_job(devfleet, shared_tmp)
    prefix, job_id = submitted["prefix"], submitted["job_id"]

    _wait_operator(bucket, submitted).on_kill()

    assert _slurm_state(devfleet, job_id) == "CANCELLED"
    lines = read_status(devfleet.s3.client(), bucket, prefix).splitlines()
    assert lines[0] == "CANCELED" and lines[1] == job_id, lines
    assert "was killed" in lines[2] and f"scheduler job {job_id} cancelled" in lines[2], lines

    # a second kill, or a late failure callback, never rewrites the terminal status
    body = read_status(devfleet.s3.client(), bucket, prefix)
    _wait_operator(bucket, submitted).on_kill()
    assert (
        fail_unfinished_job(hook, prefix, "late crash", BatchSchedulerHook(), account=INTAKE_ACCOUNT)
        == "CANCELED"
    )
    assert read_status(devfleet.s3.client(), bucket, prefix) == body


def test_killing_the_deferred_wait_task_cancels_through_its_trigger(devfleet, shared_tmp):
    """The intake's wait task is deferred nearly all the time: the triggerer calls the trigger's
    ``on_kill`` on a user's kill, so the trigger the operator defers with must cancel too."""
    _, bucket, submitted = _submit_long_job(devfleet, shared_tmp)
    with pytest.raises(TaskDeferred) as deferred:
        _wait_operator(bucket, submitted)._defer("QUEUED")
    trigger = deferred.value.trigger
    # the trigger is stored serialised; rebuild it from its kwargs as the triggerer does
    classpath, kwargs = trigger.serialize()
    assert isinstance(trigger, BatchSchedulerJobTrigger)  # the shared cluster poller's
    assert classpath == f"{type(trigger).__module__}.{type(trigger).__qualname__}"
    asyncio.run(type(trigger)(**kwargs).on_kill())

    assert _slurm_state(devfleet, submitted["job_id"]) == "CANCELLED"
    lines = read_status(devfleet.s3.client(), bucket, submitted["prefix"]).splitlines()
    assert lines[0] == "CANCELED" and lines[1] == submitted["job_id"], lines


def test_a_crash_after_the_claim_leaves_failed_with_a_reason_and_submits_nothing(
    devfleet, airflow_db, intake_buckets, monkeypatch
):
    """The accept task dies in stage-in, after its claim, without writing any status. Injected fault: the
    real SeaweedFS cannot make the worker process die mid-task (an OOM kill, a lost worker), so the step
    function is replaced by one that raises before touching S3 -- bypassing the step's own FAILED
    handling."""
    import rackflow.operators.s3_intake as intake_ops

    def crash(
        hook: S3JobsHook, claimed: dict[str, Any], base_dir: Any, ssh_conn_id: str | None = None
    ) -> dict[str, Any]:
        raise RuntimeError("simulated worker crash during stage-in")

    monkeypatch.setattr(intake_ops, "stage_in_job", crash)
    from rackflow.dag_factories.s3_intake import build_all

    client = devfleet.s3.client()
    bucket = intake_buckets["e2e"]
    prefix = f"crash{uuid.uuid4().hex[:6]}"
    upload_job(client, bucket, prefix)

    build_all()["s3_intake_e2e"].test()

    lines = read_status(client, bucket, prefix).splitlines()
    assert lines[0] == "FAILED", lines
    assert "accept task failed" in lines[2] and "simulated worker crash" in lines[2], lines
    assert slurm_jobs_named(devfleet, prefix) == []


def test_a_lost_wait_leaves_the_running_job_alone_and_its_retry_reattaches(devfleet, shared_tmp):
    """Issue 14: a wait try lost for a reason that is not the job's (here: its try ends without an error,
    as when the scheduler fails a resumed try on a stale executor event) neither cancels nor marks the
    job; the retry defers on the same scheduler job and nothing is submitted again."""
    hook, bucket, submitted = _submit_long_job(devfleet, shared_tmp)
    prefix, job_id = submitted["prefix"], submitted["job_id"]
    with pytest.raises(TaskDeferred) as first:
        _wait_operator(bucket, submitted, deferrable=True).execute({})
    assert first.value.trigger.serialize()[1]["scheduler_job_id"] == job_id

    reason = "wait task failed: no error reported (task process lost)"
    assert (
        end_after_failed_task(hook, "wait", prefix, reason, BatchSchedulerHook(), job_id, INTAKE_ACCOUNT)
        is None
    )
    assert _slurm_state(devfleet, job_id) in ("PENDING", "RUNNING")
    assert read_status(devfleet.s3.client(), bucket, prefix).splitlines()[0] in ("QUEUED", "RUNNING")

    with pytest.raises(TaskDeferred) as retry:  # the retry re-attaches: same job, no second submission
        _wait_operator(bucket, submitted, deferrable=True).execute({})
    assert retry.value.trigger.serialize()[1]["scheduler_job_id"] == job_id
    assert len(slurm_jobs_named(devfleet, prefix)) == 1
    _wait_operator(bucket, submitted).on_kill()  # a user's kill still cancels a live job
    assert _slurm_state(devfleet, job_id) == "CANCELLED"


def test_killing_a_wait_whose_job_ended_cancels_nothing_and_its_retry_completes_it(devfleet, shared_tmp):
    """The consequence of Airflow's stale defer-exit race (apache/airflow#72716): the resumed try, which
    runs only once the job has ended, is killed by the scheduler. Its ``on_kill`` must not cancel or
    write CANCELED over the job's real end, and the retry completes the job from its end."""
    bucket = new_bucket(devfleet, "raced")
    prefix = f"quick{uuid.uuid4().hex[:6]}"
    upload_job(devfleet.s3.client(), bucket, prefix, script=b"#!/bin/bash\ntrue\n", files={})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    seen = hook.read_status(prefix)
    assert seen is not None
    staged = stage_in_job(hook, claim_job(hook, {"prefix": prefix, "etag": seen[1]}), shared_tmp)
    submitted = submit_job(hook, staged, BatchSchedulerHook(), f"run-{uuid.uuid4().hex[:6]}", INTAKE_ACCOUNT)
    deadline = time.monotonic() + 60
    while _slurm_state(devfleet, submitted["job_id"]) != "COMPLETED":
        assert time.monotonic() < deadline, "the trivial job did not complete within 60 s"
        time.sleep(0.5)

    _wait_operator(bucket, submitted).on_kill()
    assert read_status(devfleet.s3.client(), bucket, prefix).splitlines()[0] == "QUEUED"  # not CANCELED
    waited = _wait_operator(bucket, submitted, deferrable=True).execute(
        {}
    )  # the retry: no defer, the job has ended
    assert (waited["job_id"], waited["end"]["state"], waited["end"]["exit_code"]) == (
        submitted["job_id"],
        "COMPLETED",
        0,
    )
    assert len(slurm_jobs_named(devfleet, prefix)) == 1


def test_killing_the_wait_of_a_recorded_job_cancels_once_through_the_job_record(
    devfleet, rackflow_db, shared_tmp
):
    """A job the accept step recorded: a kill of its wait takes the job record's one cancel claim (as
    a termination through the job API does), so the cancel is sent once and noted in its events."""
    from rackflow.db import jobs

    accepted = accept_one_job(devfleet, "killrec", shared_tmp, stem="long", script=LONG_SCRIPT, files={})
    bucket, prefix, dag_id, job = accepted.bucket, accepted.prefix, accepted.dag_id, accepted.job

    _wait_operator(bucket, job).on_kill()
    _wait_operator(bucket, job).on_kill()  # a second kill sends nothing more

    assert _slurm_state(devfleet, job["job_id"]) == "CANCELLED"
    lines = read_status(devfleet.s3.client(), bucket, prefix).splitlines()
    assert lines[0] == "CANCELED" and lines[1] == job["job_id"], lines
    notes = [e.message for e in jobs.events(dag_id, job["job_key"])]
    assert sum("cancel sent to" in n for n in notes) == 1, notes


def test_a_retried_accept_goes_on_from_the_record_and_neither_loses_nor_doubles_a_job(
    devfleet, rackflow_db, shared_tmp
):
    """Three jobs whose accept try died at different points (what the try left is made here, by the
    step functions the accept task runs, as an OOM kill would leave it): after the claim (half staged
    in), after stage-in, and after the submit but before its record. The retried accept of the same
    run takes each from where it stopped: every job is QUEUED with exactly one Slurm job."""
    from rackflow.db import jobs
    from rackflow.operators.s3_intake import IntakeRun, accept_jobs, scheduler_job_name

    bucket = new_bucket(devfleet, "resume")
    client = devfleet.s3.client()
    tag = uuid.uuid4().hex[:5]
    claimed_only, staged_only, submitted_only = (f"{n}{tag}" for n in ("cl", "st", "sb"))
    for prefix in (claimed_only, staged_only, submitted_only):
        upload_job(client, bucket, prefix, script=LONG_SCRIPT, files={"input.dat": b"x\n"})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    scheduler = BatchSchedulerHook()
    run = IntakeRun(
        dag_id="s3_intake_resume",
        run_id=f"run_{uuid.uuid4().hex[:6]}",
        run_as=INTAKE_ACCOUNT,
        base_dir=str(shared_tmp),
    )

    def claim_and_record(prefix: str) -> tuple[str, dict[str, Any]]:
        seen = hook.read_status(prefix)
        assert seen is not None
        claimed = claim_job(hook, {"prefix": prefix, "etag": seen[1]})
        key = scheduler_job_name(bucket, prefix, run.run_id)
        jobs.record_s3_job(
            run.dag_id, key, dag_run_id=run.run_id, bucket=bucket, prefix=prefix,
            owner=INTAKE_ACCOUNT, account=INTAKE_ACCOUNT, scheduler="slurm",
        )  # fmt: skip
        return key, claimed

    _, claimed = claim_and_record(claimed_only)
    (shared_tmp / claimed_only).mkdir(mode=0o700)  # a stage-in cut short
    (shared_tmp / claimed_only / "input.dat").write_bytes(b"partial")
    key, claimed = claim_and_record(staged_only)
    jobs.s3_job_staged(run.dag_id, key, stage_in_job(hook, claimed, shared_tmp))
    key, claimed = claim_and_record(submitted_only)
    staged = stage_in_job(hook, claimed, shared_tmp)
    jobs.s3_job_staged(run.dag_id, key, staged)
    first = scheduler.submit_script(
        f"{staged['job_dir']}/aws-job-run.sh", job_name=key, workdir=staged["job_dir"], account=INTAKE_ACCOUNT
    )

    accepted = accept_jobs(hook, [], scheduler, run)  # the retry: nothing new announced

    assert [j["prefix"] for j in accepted] == sorted([claimed_only, staged_only, submitted_only])
    by_prefix = {j["prefix"]: j for j in accepted}
    assert by_prefix[submitted_only]["job_id"] == first.scheduler_job_id  # found by name
    for prefix, job in by_prefix.items():
        assert read_status(client, bucket, prefix) == f"QUEUED\n{job['job_id']}\n"
        assert len(slurm_jobs_named(devfleet, prefix)) == 1, prefix
        assert jobs.get_job(run.dag_id, job["job_key"]).state == "QUEUED"
    assert (shared_tmp / claimed_only / "input.dat").read_bytes() == b"x\n"  # staged in afresh
    for job in accepted:
        scheduler.cancel(job["job_id"], account=INTAKE_ACCOUNT)


# The accept task's process, SIGKILLed at exactly one point of its work: the job record's insert right
# after a claim (the injected fault: ``jobs.record_s3_job`` is replaced in that process by a SIGKILL of
# itself; a real SIGKILL cannot be timed to land between two statements otherwise).
_KILLED_AFTER_CLAIM = """
import json, os, signal, sys
from rackflow.db import jobs
from rackflow.hooks.s3_jobs import S3JobsHook
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow.operators.s3_intake import IntakeRun, accept_jobs

args = json.loads(sys.argv[1])
jobs.record_s3_job = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
accept_jobs(
    S3JobsHook(args["conn"], bucket_name=args["bucket"]), args["ready"], BatchSchedulerHook(),
    IntakeRun(**args["run"]),
)
"""


@pytest.mark.parametrize("run_kind", ["announced", "manual"])
def test_an_accept_killed_between_claim_and_record_is_taken_up_by_its_retry_and_completes_once(
    devfleet, rackflow_db, shared_tmp, run_kind
):
    """Issue 14: the accept task's process dies (SIGKILL) right after its claim wrote ACCEPTED, before
    the job record's insert. Nothing else knows the job: another run's accept leaves it alone (not its
    claim), the retried accept of the run finds its own claim (the claim's job key in the status
    object's metadata) and submits it, and the job completes once. The retry of a run the watcher
    started has the announced jobs; a manual run's retry polls again and rechecks the claimed ones."""
    import json
    import signal
    import sys

    from rackflow.core.s3_protocol import StatusCache
    from rackflow.db import jobs
    from rackflow.operators.s3_intake import IntakeRun, accept_jobs, scheduler_job_name

    bucket = new_bucket(devfleet, "clkill")
    client = devfleet.s3.client()
    prefix = f"ck{uuid.uuid4().hex[:6]}"
    upload_job(client, bucket, prefix, files={"input.dat": b"taken once\n"})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    seen = hook.read_status(prefix)
    assert seen is not None
    ready = [{"prefix": prefix, "etag": seen[1]}]  # what the watcher announced to the run
    run = IntakeRun(
        dag_id="s3_intake_clkill", run_id=f"run_{uuid.uuid4().hex[:6]}", run_as=INTAKE_ACCOUNT,
        base_dir=str(shared_tmp),
    )  # fmt: skip
    args = {"conn": CONN_ID, "bucket": bucket, "ready": ready, "run": run.__dict__ | {"viewers": []}}
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_CLAIM, json.dumps(args)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert read_status(client, bucket, prefix) == "ACCEPTED\n"  # claimed, byte-compatible
    key = scheduler_job_name(bucket, prefix, run.run_id)
    assert jobs.get_job(run.dag_id, key) is None and slurm_jobs_named(devfleet, prefix) == []
    scheduler = BatchSchedulerHook()

    def retry(of: IntakeRun) -> list[dict[str, Any]]:
        if run_kind == "announced":
            return accept_jobs(hook, ready, scheduler, of)
        polled = hook.poll(StatusCache())
        return accept_jobs(hook, [j.to_dict() for j in polled.ready], scheduler, of, polled.accepted)

    other = IntakeRun(**{**run.__dict__, "run_id": f"run_{uuid.uuid4().hex[:6]}"})
    assert retry(other) == []  # not its claim: left alone
    assert jobs.s3_jobs_of_run(other.dag_id, other.run_id) == []
    [job] = retry(run)  # the retry of the killed try
    assert retry(run)[0]["job_id"] == job["job_id"]  # and once more

    assert (job["job_key"], read_status(client, bucket, prefix)) == (key, f"QUEUED\n{job['job_id']}\n")
    waited = _wait_operator(bucket, job).execute({})
    assert waited["status"] == "COMPLETED", waited
    assert read_status(client, bucket, prefix) == f"COMPLETED\n{job['job_id']}\n"
    out = client.get_object(Bucket=bucket, Key=f"{prefix}/out.txt")["Body"].read()
    assert out == b"taken once\ndone\n"
    assert slurm_jobs_named(devfleet, prefix) == [key]
    assert jobs.get_job(run.dag_id, key).state == "COMPLETED"
    assert retry(run) == []  # a late retry: nothing left to take
    assert slurm_jobs_named(devfleet, prefix) == [key]


def test_a_wait_killed_in_its_stage_out_or_after_its_final_status_is_completed_once_by_its_retry(
    devfleet, rackflow_db, shared_tmp
):
    """Two recorded jobs whose wait try died after its job ended (what the try left is made here by
    the step functions the wait runs, as a SIGKILL would leave it): one during its stage-out
    (``STAGING_OUT`` written), one after its final status was written but before the job record has
    it. The retried wait completes each once: ``COMPLETED`` in the bucket and in the job record, its
    results uploaded, one Slurm job."""
    from rackflow.core.s3_protocol import StatusCache
    from rackflow.db import jobs
    from rackflow.operators.s3_intake import IntakeRun, accept_jobs, finish_job, stage_out_job

    bucket = new_bucket(devfleet, "waitkill")
    client = devfleet.s3.client()
    tag = uuid.uuid4().hex[:5]
    in_stage_out, after_final = f"so{tag}", f"fi{tag}"
    for prefix in (in_stage_out, after_final):
        upload_job(client, bucket, prefix, files={"input.dat": f"{prefix}\n".encode()})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    scheduler = BatchSchedulerHook()
    run = IntakeRun(
        dag_id="s3_intake_waitkill", run_id=f"run_{uuid.uuid4().hex[:6]}", run_as=INTAKE_ACCOUNT,
        base_dir=str(shared_tmp),
    )  # fmt: skip
    accepted = accept_jobs(hook, [j.to_dict() for j in hook.poll(StatusCache()).ready], scheduler, run)
    by_prefix = {j["prefix"]: j for j in accepted}
    deadline = time.monotonic() + 120
    for job in accepted:
        while not (status := scheduler.statuses([job["job_id"]])[job["job_id"]]).state.is_final:
            assert time.monotonic() < deadline, "the trivial jobs did not end within 120 s"
            time.sleep(0.5)
        waited = _wait_operator(bucket, job)._ended(status)
        staged_out = stage_out_job(hook, waited)  # the killed try got this far ...
        if job["prefix"] == after_final:
            finish_job(hook, staged_out)  # ... or this far
    assert read_status(client, bucket, in_stage_out).startswith("STAGING_OUT\n")
    assert read_status(client, bucket, after_final).startswith("COMPLETED\n")

    for prefix, job in by_prefix.items():
        retried = _wait_operator(bucket, job).execute({})  # the retry of the killed wait
        assert retried["status"] == "COMPLETED", (prefix, retried)
        assert read_status(client, bucket, prefix) == f"COMPLETED\n{job['job_id']}\n"
        out = client.get_object(Bucket=bucket, Key=f"{prefix}/out.txt")["Body"].read()
        assert out == f"{prefix}\ndone\n".encode(), prefix
        assert jobs.get_job(run.dag_id, job["job_key"]).state == "COMPLETED", prefix
        assert len(slurm_jobs_named(devfleet, prefix)) == 1, prefix
