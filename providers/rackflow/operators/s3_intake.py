"""The per-job steps of the S3 intake: claim, stage-in, submit, wait, stage-out, final status.

Each step is a plain function over :class:`~rackflow.hooks.s3_jobs.S3JobsHook` (the intake DAG wraps
them in tasks), except the wait, which is a deferrable operator. The job directory is on the execution
host: this one, or a login node over SSH/SFTP (``ssh_conn_id``; see :mod:`rackflow.hooks.job_dirs`),
where the scheduler commands then run too. Submit, poll and cancel go through
:class:`~rackflow.hooks.scheduler.BatchSchedulerHook`, like the job API's jobs: the job runs as the
intake's ``run_as`` account (its directory, mode 0700, is handed to that account before the submit),
with no environment but its own, and the options rackflow manages on the submit command line.
A step that fails for a reason the job owner should see writes ``FAILED`` with that reason before
raising; a step that finds the status object changed or deleted under it (another poller, or the
uploader removed the job) stops quietly, so a job never runs twice and rackflow never recreates what
the uploader deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.triggers.base import StartTriggerArgs

from rackflow import settings
from rackflow.core.s3_protocol import (
    JOB_SCRIPT_NAME,
    TERMINAL_STATUSES,
    JobStatus,
    ManifestEntry,
    take_manifest,
)
from rackflow.core.schedulers import JobStatus as SchedulerJobStatus
from rackflow.db import jobs
from rackflow.hooks.job_dirs import job_dir_path, open_job_dir
from rackflow.hooks.s3_jobs import (
    S3JobsHook,
    S3StatusFollower,
    StatusConflict,
    cancel_intake_job,
    write_canceled,
)
from rackflow.hooks.scheduler import BatchSchedulerHook, SchedulerRejectedJob, check_account
from rackflow.operators.scheduler import job_has_ended
from rackflow.triggers.s3_job_status import S3JobWaitTrigger
from rackflow.triggers.scheduler import cancel_claimed_job, job_accounting, usage_text

log = logging.getLogger(__name__)


# The intake DAG's task that claims, stages in and submits a run's jobs, whose result (XCom) names the
# scheduler job of each (the only job id rackflow ever acts on: never line 2 of a status object, which
# the uploader can write), and the per-job task mapped over it.
ACCEPT_TASK_ID = "accept"
WAIT_TASK_ID = "wait"
# Retries of the accept task: a try lost mid-batch (its process killed, a worker restart) goes on from
# the job record (see accept_jobs).
ACCEPT_RETRIES = 2


class ScriptRefused(RuntimeError):
    """The scheduler refused the job script; the message carries what it said."""


class JobFailed(RuntimeError):
    """The job cannot go on; its status object already says FAILED with the reason."""


@contextmanager
def failing_job(hook: S3JobsHook, prefix: str, step: str, job_id: str | None = None) -> Iterator[None]:
    """Turn an unexpected error in ``step`` into ``FAILED`` with a reason; a status conflict into a skip."""
    try:
        yield
    except (AirflowSkipException, JobFailed):
        raise
    except StatusConflict as err:
        raise AirflowSkipException(
            f"{prefix}: status object changed under rackflow, leaving it: {err}"
        ) from err
    except Exception as err:
        hook.fail(prefix, f"{step} failed: {err}", scheduler_job_id=job_id)
        raise


def scheduler_job_name(bucket: str, prefix: str, claim_id: str) -> str:
    """A name unique per claim (so a retried submit finds its job, and a new upload is a new job)."""
    digest = hashlib.sha1(f"{bucket}/{prefix}/{claim_id}".encode()).hexdigest()[:8]
    return f"rf_s3_{prefix}_{digest}"


def claim_job(hook: S3JobsHook, job: dict[str, str], token: str | None = None) -> dict[str, Any]:
    """Claim one ready job (``token``, the claimant's job key, stored with the claim); skip
    (AirflowSkipException) when another poller won or it changed."""
    prefix = job["prefix"]
    result = hook.claim(prefix, job["etag"], token=token)
    if not result.won:
        raise AirflowSkipException(f"{prefix}: not claimed here: {result.reason}")
    assert result.status is not None
    if result.status.status is JobStatus.FAILED:
        raise JobFailed(f"{prefix}: refused: {result.status.reason}")
    log.info("claimed s3://%s/%s (%d objects)", hook.bucket_name, prefix, len(result.keys))
    return {"prefix": prefix, "keys": result.keys}


def stage_in_job(
    hook: S3JobsHook, claimed: dict[str, Any], base_dir: str | Path, ssh_conn_id: str | None = None
) -> dict[str, Any]:
    """Download the job into a fresh ``<base>/<prefix>`` on the execution host (this one, or the login
    node of ``ssh_conn_id`` over SFTP, where ``~`` is the remote user's home); FAILED when that
    directory already exists (a job of this name ran there before: nothing is deleted automatically)
    or the script is missing."""
    prefix = claimed["prefix"]
    with (
        failing_job(hook, prefix, "stage-in"),
        open_job_dir(job_dir_path(base_dir, prefix), ssh_conn_id) as job_dir,
    ):
        if job_dir.lexists():
            hook.fail(prefix, f"job directory {job_dir} already exists; remove it to run this job")
            raise JobFailed(f"{prefix}: {job_dir} exists")
        result = hook.stage_in(prefix, job_dir, list(claimed["keys"]))
        if not job_dir.is_regular_file(JOB_SCRIPT_NAME):
            reason = result.skipped.get(f"{prefix}/{JOB_SCRIPT_NAME}", "not staged")
            hook.fail(prefix, f"{JOB_SCRIPT_NAME} could not be staged: {reason}")
            raise JobFailed(f"{prefix}: no job script")
        manifest = take_manifest(job_dir.list_dir)
    log.info(
        "staged %s: %d object(s), %d byte(s), skipped %s",
        prefix,
        len(result.keys),
        result.bytes,
        result.skipped,
    )
    return {
        "prefix": prefix,
        "job_dir": job_dir.path,
        # stage-out goes back to the host the job was staged on, whatever the config says by then
        "ssh_conn_id": ssh_conn_id,
        "manifest": {rel: list(entry) for rel, entry in manifest.items()},
        "skipped": result.skipped,
    }


def submit_job(
    hook: S3JobsHook,
    staged: dict[str, Any],
    scheduler: BatchSchedulerHook,
    claim_id: str,
    run_as: str,
    on_submitted: Callable[[str], None] = lambda job_id: None,
) -> dict[str, Any]:
    """Submit the job script from its directory as ``run_as`` (idempotent by job name) and write
    ``QUEUED <id>``; ``on_submitted`` records the id before the status write can fail."""
    prefix = staged["prefix"]
    with failing_job(hook, prefix, "submit"):
        account = check_account(run_as)
        name = scheduler.adapter.normalize_job_name(scheduler_job_name(hook.bucket_name, prefix, claim_id))
        script = str(PurePosixPath(staged["job_dir"]) / JOB_SCRIPT_NAME)
        try:
            submitted = scheduler.submit_script(
                script, job_name=name, workdir=staged["job_dir"], account=account, comment=f"s3 {prefix}"
            )
        except SchedulerRejectedJob as exc:
            client = "bsub" if scheduler.adapter.kind == "lsf" else exc.argv[0]  # lsf runs through sh
            said = (exc.stderr or exc.stdout).strip()
            raise ScriptRefused(f"{client} refused the job script: {said}") from exc
        job_id = submitted.scheduler_job_id
        on_submitted(job_id)
        log.info(
            "%s: scheduler job %s (%s, as %s)",
            prefix,
            job_id,
            "found by name" if submitted.existing else "submitted",
            account,
        )
        # a retried accept finds the QUEUED its earlier try wrote for the same job: it stands
        hook.transition(prefix, JobStatus.QUEUED, scheduler_job_id=job_id, repeat_ok=True)
    return {**staged, "job_id": job_id, "job_name": name, "run_as": account}


@dataclass(frozen=True)
class IntakeRun:
    """Who and where for the S3 jobs one intake DAG run accepts: the intake DAG and the run, the
    account the jobs run as (also their owner in the job record), the users besides admins who may
    see them, and the execution host's job directory base."""

    dag_id: str
    run_id: str
    run_as: str
    base_dir: str
    viewers: tuple[str, ...] = ()
    ssh_conn_id: str | None = None


def accept_jobs(
    hook: S3JobsHook,
    ready: Sequence[dict[str, str]],
    scheduler: BatchSchedulerHook,
    run: IntakeRun,
    recheck: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Claim, stage in and submit every job of ``ready`` in one task, each recorded in the job record
    (``rackflow_job``: one row per job, keyed by the intake DAG and its job key); the submitted jobs,
    by prefix, for the per-job waits.

    A retried try of the same run first goes on with what an earlier try claimed (the job record says
    which): a job staged in is submitted from what its stage-in left, one whose stage-in was cut short
    is staged again into a fresh directory, and a submit always looks for the job by name first, so a
    crash between claim and submit, or between submit and record, neither loses nor doubles a job. A
    try that died between its claim and the job record left the claim's ``ACCEPTED`` with this run's
    job key (S3 user metadata): the retry's claim of the same announced job loses to it, reads the key
    and goes on with the job; another claimant's ``ACCEPTED`` is left alone. ``recheck``: prefixes
    whose status read ``ACCEPTED`` when a retry without announced jobs (a manual run) polled, looked
    at the same way.
    One job that fails (refused, no script, the scheduler said no) gets ``FAILED`` with its reason and
    the batch goes on.
    """
    accepted: dict[str, dict[str, Any]] = {}
    for row in jobs.s3_jobs_of_run(run.dag_id, run.run_id):
        if row.state in jobs.FINAL_STATES or not row.s3_prefix:
            continue
        earlier: dict[str, Any] = {"prefix": row.s3_prefix, "keys": None, "job_key": row.run_id}
        done = _take(hook, earlier, scheduler, run, row=row)
        if done is not None:
            accepted[row.s3_prefix] = done
    for job in [*ready, *({"prefix": prefix, "etag": ""} for prefix in recheck)]:
        if job["prefix"] in accepted:
            continue
        key = scheduler_job_name(hook.bucket_name, job["prefix"], run.run_id)
        try:
            if not job["etag"]:  # claimed already by someone: this run's earlier try?
                raise AirflowSkipException(f"{job['prefix']}: claimed already")
            claimed = claim_job(hook, job, token=key)
        except AirflowSkipException as skip:
            taken_up = _own_unrecorded_claim(hook, job["prefix"], key)
            if taken_up is None:
                log.info("%s", skip)
                continue
            claimed = taken_up
        except JobFailed as refused:  # claimed with FAILED (no job script): nothing to run
            log.info("%s", refused)
            continue
        jobs.record_s3_job(
            run.dag_id,
            key,
            dag_run_id=run.run_id,
            bucket=hook.bucket_name,
            prefix=claimed["prefix"],
            owner=run.run_as,
            account=run.run_as,
            viewers=run.viewers,
            scheduler=scheduler.adapter.kind,
            cluster=scheduler.cluster_key,
        )
        done = _take(hook, {**claimed, "job_key": key}, scheduler, run)
        if done is not None:
            accepted[claimed["prefix"]] = done
    return [accepted[prefix] for prefix in sorted(accepted)]


def _own_unrecorded_claim(hook: S3JobsHook, prefix: str, key: str) -> dict[str, Any] | None:
    """The claim an earlier try of this run made on ``prefix`` and died before recording (its
    ``ACCEPTED`` carries this run's job key ``key``), to go on with; None when the status is anything
    else or another claimant's (left alone). Nothing was staged from it: the record comes first."""
    if hook.claim_token(prefix) != key:
        return None
    log.info("%s: claimed by an earlier try of this run, not recorded: taking it up", prefix)
    return {"prefix": prefix, "keys": hook.list_job_keys(prefix)}


def _take(
    hook: S3JobsHook,
    claimed: dict[str, Any],
    scheduler: BatchSchedulerHook,
    run: IntakeRun,
    row: Any = None,
) -> dict[str, Any] | None:
    """Stage in (unless an earlier try did) and submit one claimed job, recording both; None when the
    job cannot go on (its status and its record say why)."""
    prefix, key = claimed["prefix"], claimed["job_key"]
    try:
        staged = json.loads(row.s3_staged) if row is not None and row.s3_staged else None
        if staged is None:
            if claimed.get("keys") is None:  # an earlier try claimed it: stage it in afresh
                with failing_job(hook, prefix, "stage-in"):
                    claimed = {**claimed, "keys": hook.list_job_keys(prefix)}
                    _remove_partial_stage_in(scheduler, run, prefix)
            staged = stage_in_job(hook, claimed, run.base_dir, run.ssh_conn_id)
            jobs.s3_job_staged(run.dag_id, key, staged)
        submitted = submit_job(
            hook,
            staged,
            scheduler,
            run.run_id,
            run.run_as,
            # recorded before the QUEUED write can fail: the job to cancel if this one goes no further
            on_submitted=lambda job_id: jobs.ensure_job(run.dag_id, key, scheduler_job_id=job_id),
        )
    except AirflowSkipException as skip:  # the uploader changed or deleted it: rackflow lets go
        log.warning("%s: %s", prefix, skip)
        jobs.record_event(run.dag_id, key, "CANCELED", f"left alone: {skip}")
        return None
    except Exception as exc:
        # The step wrote FAILED with its reason where it could (failing_job); whatever happened, the
        # job ends here: FAILED over anything rackflow owns, and a job it submitted is cancelled.
        reason = f"accept task failed: {exc}"
        log.warning("%s: %s", prefix, reason)
        row = jobs.get_job(run.dag_id, key)
        job_id = row.scheduler_job_id if row is not None else None
        try:
            fail_unfinished_job(hook, prefix, reason, scheduler, job_id, run.run_as)
        except Exception:
            log.exception("%s: could not write FAILED", prefix)
        jobs.record_event(run.dag_id, key, "FAILED", reason, scheduler_job_id=job_id)
        return None
    job_id = submitted["job_id"]
    jobs.record_event(
        run.dag_id,
        key,
        "QUEUED",
        f"submitted {scheduler.adapter.kind} job {job_id} ({submitted['job_name']}, as {run.run_as})",
        scheduler_job_id=job_id,
    )
    return {**submitted, "job_key": key, "dag_id": run.dag_id}


def _remove_partial_stage_in(scheduler: BatchSchedulerHook, run: IntakeRun, prefix: str) -> None:
    """Remove the directory a stage-in of this run's claim left unfinished (the job record proves
    rackflow made it for this claim; nothing was submitted from it)."""
    with open_job_dir(job_dir_path(run.base_dir, prefix), run.ssh_conn_id) as job_dir:
        if job_dir.lexists():
            log.info("%s: removing the unfinished stage-in at %s", prefix, job_dir.path)
            scheduler.remove_tree(job_dir.path)


def stage_out_job(hook: S3JobsHook, waited: dict[str, Any]) -> dict[str, Any]:
    """Write STAGING_OUT and upload what the job created or changed; stops if the job was deleted.

    A retried wait (its earlier try killed mid-stage-out, or after the final status) goes on: a
    STAGING_OUT of the same scheduler job is uploaded again (the same keys), and a final status of it
    stands -- nothing is uploaded over it (``uploaded`` empty) and :func:`finish_job` keeps it."""
    prefix = waited["prefix"]
    with failing_job(hook, prefix, "stage-out", waited.get("job_id")):
        job_id = waited.get("job_id")
        current = hook.read_status(prefix)
        if (
            job_id
            and current is not None
            and current[0].status in TERMINAL_STATUSES
            and current[0].scheduler_job_id == job_id
        ):
            log.info("%s: its final status %s is written already", prefix, current[0].status)
            return {"prefix": prefix, "job_id": job_id, "end": waited["end"], "uploaded": []}
        hook.mark_running(prefix, job_id)  # a job can end between two polls while still QUEUED
        hook.transition(prefix, JobStatus.STAGING_OUT, scheduler_job_id=job_id, repeat_ok=True)
        manifest = {rel: ManifestEntry(*entry) for rel, entry in waited["manifest"].items()}
        with open_job_dir(waited["job_dir"], waited.get("ssh_conn_id")) as job_dir:
            result = hook.stage_out(prefix, job_dir, manifest)
    log.info(
        "stage-out of %s: %d key(s), %d byte(s), skipped %s",
        prefix,
        len(result.keys),
        result.bytes,
        result.skipped,
    )
    return {"prefix": prefix, "job_id": waited.get("job_id"), "end": waited["end"], "uploaded": result.keys}


def finish_job(hook: S3JobsHook, staged_out: dict[str, Any], canceled_by: str | None = None) -> str:
    """The final status from how the scheduler job ended: COMPLETED, FAILED (with reason) or CANCELED
    (``canceled_by``: the user who terminated it through the job API, named in the reason). The same
    final status of the same scheduler job, written by an earlier try, stands."""
    prefix = staged_out["prefix"]
    end = staged_out["end"]
    job_id = staged_out.get("job_id")
    with failing_job(hook, prefix, "final status", job_id):
        if end["state"] == "COMPLETED" and end.get("exit_code") in (0, None):
            hook.transition(prefix, JobStatus.COMPLETED, scheduler_job_id=job_id, repeat_ok=True)
            return JobStatus.COMPLETED.value
        if end["state"] == "CANCELED":
            hook.transition(
                prefix,
                JobStatus.CANCELED,
                scheduler_job_id=job_id,
                repeat_ok=True,
                reason=f"scheduler job {end['native_state']}"
                + (f"; terminated at the request of {canceled_by}" if canceled_by else ""),
            )
            return JobStatus.CANCELED.value
        detail = f"exit code {end['exit_code']}" if end.get("exit_code") is not None else end["native_state"]
        reason = f"scheduler job ended {end['state']} ({detail})"
        if end.get("reason"):
            reason += f": {end['reason']}"
        hook.transition(prefix, JobStatus.FAILED, scheduler_job_id=job_id, reason=reason, repeat_ok=True)
    raise JobFailed(f"{prefix}: {reason}")


def fail_unfinished_job(
    hook: S3JobsHook,
    prefix: str,
    reason: str,
    scheduler: BatchSchedulerHook | None = None,
    job_id: str | None = None,
    account: str | None = None,
    job_key: tuple[str, str] | None = None,
) -> str | None:
    """After a per-job task died without ending the job: ``FAILED`` with ``reason``, never over a
    terminal status. The scheduler job this run submitted (``job_id``, from XCom -- never the id in the
    status object, which the uploader can write) is cancelled, whatever the status says: no task
    follows it any more (a step that failed after submitting may already have written ``FAILED``).
    Nothing is ever resubmitted. With the job's record (``job_key``: dag id, job key) the cancel goes
    through the record's cancel claim, as every other cancel of a recorded job does.

    Returns the status the object reads afterwards (None when it is gone).
    """
    if job_id and scheduler is not None:
        try:
            if job_key is not None:
                if cancel_claimed_job(scheduler, job_key, job_id, reason):
                    reason += f"; scheduler job {job_id} cancelled"
            elif scheduler.cancel(job_id, account=account):
                reason += f"; scheduler job {job_id} cancelled"
        except Exception as err:  # the status must still say FAILED
            log.warning("%s: could not cancel scheduler job %s: %s", prefix, job_id, err)
    after = hook.end_unless_terminal(prefix, JobStatus.FAILED, reason=reason, scheduler_job_id=job_id)
    return None if after is None else after.status.value


def end_after_failed_task(
    hook: S3JobsHook,
    step: str,
    prefix: str,
    reason: str,
    scheduler: BatchSchedulerHook,
    job_id: str | None,
    account: str | None,
    job_key: tuple[str, str] | None = None,
) -> str | None:
    """What a per-job task that failed for good leaves behind (see :func:`fail_unfinished_job`), except
    after a failed ``wait`` while its job still runs: the wait failed, not the job, so the job is neither
    cancelled nor marked (rackflow cancels only on a kill or a terminate) and clearing the ``wait`` task
    follows it again. Returns the status afterwards; None when nothing was written or it is gone."""
    if step == WAIT_TASK_ID and job_id and not job_has_ended(scheduler, job_id):
        log.warning(
            "%s: %s; scheduler job %s still runs: clear the wait task to follow it again",
            prefix,
            reason,
            job_id,
        )
        return None
    return fail_unfinished_job(hook, prefix, reason, scheduler, job_id, account, job_key)


def job_task_failed(
    bucket_name: str,
    aws_conn_id: str,
    scheduler: str,
    ssh_conn_id: str | None = None,
    scheduler_env: dict[str, str] | None = None,
    run_as: str | None = None,
) -> Any:
    """An ``on_failure_callback`` for the tasks of an intake run (see :func:`fail_unfinished_job`).

    It acts only for jobs this run claimed, as the job record says: after the ``accept`` task failed
    for good, every job of the run that has not ended; after a per-job ``wait`` task failed, its job
    (the accept task's result at the same map index) -- except while that job still runs: the job is
    the user's, not lost; it is left alone and clearing the ``wait`` task follows it again. A scheduler
    job is cancelled, as ``run_as``, on the login node of ``ssh_conn_id`` (None: this host).
    """

    def callback(context: Any) -> None:
        ti = context["ti"]
        dag_id = ti.dag_id
        step = ti.task_id.rpartition(".")[2]
        error = context.get("exception")
        reason = f"{step} task failed: {error or 'no error reported (task process lost)'}"
        if step == ACCEPT_TASK_ID:
            rows = jobs.s3_jobs_of_run(dag_id, ti.run_id)
            targets: list[tuple[str | None, str, str | None]] = [
                (r.run_id, r.s3_prefix, r.scheduler_job_id)
                for r in rows
                if r.state not in jobs.FINAL_STATES and r.s3_prefix
            ]
        else:
            accepted = ti.xcom_pull(task_ids=ACCEPT_TASK_ID, map_indexes=-1) or []
            job = accepted[ti.map_index] if 0 <= ti.map_index < len(accepted) else None
            if not isinstance(job, dict) or "prefix" not in job:
                log.info("%s failed without a job of this run; no status to write", ti.task_id)
                return
            row = jobs.get_job(dag_id, job["job_key"]) if job.get("job_key") else None
            if row is not None and row.state in jobs.FINAL_STATES:
                log.info("%s: its job ended %s already; nothing to write", ti.task_id, row.state)
                return
            targets = [(job.get("job_key"), job["prefix"], job.get("job_id"))]
        if not targets:
            log.info("%s failed before this run claimed a job; no status to write", ti.task_id)
            return
        hook = S3JobsHook(aws_conn_id, bucket_name=bucket_name)
        local = BatchSchedulerHook(scheduler=scheduler, scheduler_env=scheduler_env, ssh_conn_id=ssh_conn_id)
        try:
            for key, prefix, job_id in targets:
                try:
                    after = end_after_failed_task(
                        hook,
                        step,
                        prefix,
                        reason,
                        local,
                        job_id or None,
                        run_as,
                        (dag_id, key) if key else None,
                    )
                    if key and after is not None:
                        jobs.record_event(dag_id, key, "FAILED", reason, scheduler_job_id=job_id or None)
                except Exception:
                    log.exception("%s: could not write FAILED after %s", prefix, ti.task_id)
        finally:
            local.close()

    return callback


class S3JobWaitOperator(BaseOperator):
    """
    Wait for a submitted intake job to end on the cluster's shared poller, then stage out its results
    and write its final status: one task per job that resumes once, when there is work for a worker.

    In the intake DAG the task is mapped over the accept task's result and starts in the triggerer
    (``start_from_trigger``, see :meth:`start_args`):
    :class:`~rackflow.triggers.s3_job_status.S3JobWaitTrigger` records intermediate states
    (``RUNNING`` in the status object, ``ACTIVE`` in the job record) and
    a termination asked through the job API there, and the task first runs in a worker once the job
    has ended, for the stage-out. Run without it (e.g. ``dag.test()``) the task checks the job once
    and defers to the same trigger. The end is what the trigger observed (the live queue, else the
    scheduler's accounting), never asked again of a controller that may have forgotten the job.

    A retried or cleared wait re-attaches to the scheduler job the ``accept`` task submitted (its
    result, from XCom); nothing is ever resubmitted. A job that ended ``FAILED`` fails the task
    without a retry.

    Returns what was staged out (``prefix``, ``job_id``, ``end``: ``{"state", "native_state",
    "exit_code", "reason"}`` in PSI/J state names, ``uploaded``) and the final ``status``.

    :param job: the accept task's dict for the job (``prefix``, ``job_id``, ``job_key``, ...). (templated)
    :param bucket_name: the intake bucket. (templated)
    :param aws_conn_id: Airflow AWS connection.
    :param scheduler: local scheduler kind.
    :param ssh_conn_id: SSH connection of the login node the scheduler commands run on; None: this host.
    :param scheduler_env: extra environment for the scheduler commands (e.g. ``SLURM_CONF``).
    :param poll_interval: seconds between scheduler polls; default ``[rackflow] scheduler_poll_interval``.
    :param deferrable: wait in the triggerer. Default from ``[operators] default_deferrable``.
    :param start_from_trigger: start in the triggerer with ``start_trigger_args`` (see :meth:`start_args`).
    :param start_trigger_args: the trigger the task starts with.
    """

    template_fields: Sequence[str] = ("job", "bucket_name")

    def __init__(
        self,
        *,
        job: Any,
        bucket_name: str,
        aws_conn_id: str = "aws_default",
        scheduler: str = "slurm",
        ssh_conn_id: str | None = None,
        scheduler_env: dict[str, str] | None = None,
        poll_interval: float | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        start_from_trigger: bool = False,
        start_trigger_args: StartTriggerArgs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.start_from_trigger = start_from_trigger
        self.start_trigger_args = start_trigger_args
        self.job = job
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id
        self.scheduler = scheduler
        self.ssh_conn_id = ssh_conn_id or None
        self.scheduler_env = dict(scheduler_env or {})
        self.poll_interval = (
            poll_interval if poll_interval is not None else settings.poll_interval("scheduler", 5.0)
        )
        self.deferrable = deferrable

    @staticmethod
    def start_args(
        *,
        accept_task_id: str,
        dag_id: str,
        bucket_name: str,
        aws_conn_id: str,
        scheduler: str,
        ssh_conn_id: str | None,
        scheduler_env: dict[str, str],
        poll_interval: float,
    ) -> StartTriggerArgs:
        """How a mapped wait over ``accept_task_id``'s result starts in the triggerer: the trigger's
        ``job`` is that result at the task's map index, rendered in the triggerer (as JSON; pulled
        with ``map_indexes=-1``, a single XCom, which is what the triggerer can serve)."""
        pull = f"ti.xcom_pull(task_ids={accept_task_id!r}, map_indexes=-1)[ti.map_index]"
        return StartTriggerArgs(
            trigger_cls=f"{S3JobWaitTrigger.__module__}.{S3JobWaitTrigger.__qualname__}",
            trigger_kwargs={
                "job": "{{ " + pull + " | tojson }}",
                "bucket_name": bucket_name,
                "aws_conn_id": aws_conn_id,
                "dag_id": dag_id,
                "scheduler": scheduler,
                "ssh_conn_id": ssh_conn_id,
                "scheduler_env": scheduler_env,
                "poll_interval": poll_interval,
            },
            next_method="execute_complete",
            next_kwargs=None,
            timeout=None,
        )

    def _hook(self) -> S3JobsHook:
        return S3JobsHook(self.aws_conn_id, bucket_name=self.bucket_name)

    def _scheduler(self) -> BatchSchedulerHook:
        return BatchSchedulerHook(
            scheduler=self.scheduler, scheduler_env=self.scheduler_env, ssh_conn_id=self.ssh_conn_id
        )

    def follower(self) -> S3StatusFollower:
        """What writes this job's intermediate states to its status object."""
        return S3StatusFollower(
            bucket_name=self.bucket_name, aws_conn_id=self.aws_conn_id, prefix=self.job["prefix"]
        )

    def _status(self) -> SchedulerJobStatus:
        scheduler = self._scheduler()
        try:
            return scheduler.statuses([self.job["job_id"]])[self.job["job_id"]]
        finally:
            scheduler.close()

    def _ended(self, status: SchedulerJobStatus) -> dict[str, Any]:
        end = {
            "state": status.state.value,
            "native_state": status.native_state,
            "exit_code": status.exit_code,
            "reason": status.reason,
        }
        return {**self.job, "end": end}

    def _trigger(self, known_state: str) -> S3JobWaitTrigger:
        return S3JobWaitTrigger(
            job=self.job,
            bucket_name=self.bucket_name,
            aws_conn_id=self.aws_conn_id,
            dag_id=self.job.get("dag_id"),
            scheduler=self.scheduler,
            ssh_conn_id=self.ssh_conn_id,
            scheduler_env=self.scheduler_env,
            poll_interval=self.poll_interval,
            last_state=known_state,
        )

    def execute(self, context: Any) -> Any:
        status = self._status()
        last = "QUEUED"  # what the accept task recorded
        while not status.state.is_final:
            if status.state.value != last:  # record what the trigger would have
                with failing_job(self._hook(), self.job["prefix"], "wait", self.job["job_id"]):
                    self._trigger(last)._record(status, self.follower())
                last = status.state.value
            if self.deferrable:
                self._defer(last)
            time.sleep(self.poll_interval)
            status = self._status()
        return self._complete(status)

    def _defer(self, known_state: str) -> None:
        self.defer(trigger=self._trigger(known_state), method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event.get("status") != "done":
            # Not the job's failure (status polls failed): a retry of this task re-attaches to it.
            raise RuntimeError(f"lost track of scheduler job {self.job['job_id']}: {event.get('message')}")
        return self._complete(SchedulerJobStatus.model_validate(event["job_status"]))

    def _complete(self, status: SchedulerJobStatus) -> dict[str, Any]:
        """Stage out, then the final status in the bucket and in the job record; what was staged out
        (``prefix``, ``job_id``, ``end``, ``uploaded``) and the final ``status``."""
        hook = self._hook()
        key, dag_id = self.job.get("job_key"), self.job.get("dag_id")
        canceled_by = jobs.termination_requested(dag_id, key) if key and dag_id else None
        staged_out = stage_out_job(hook, self._ended(status))
        try:
            final = finish_job(hook, staged_out, canceled_by=canceled_by)
        except JobFailed as failed:
            self._record_end("FAILED", str(failed), status)
            raise AirflowFailException(str(failed)) from failed
        message = f"{self.scheduler} job {self.job['job_id']} ended {status.native_state}"
        if canceled_by:
            message += f"; terminated at the request of {canceled_by}"
        self._record_end(final, message, status)
        return {**staged_out, "status": final}

    def _record_end(self, state: str, message: str, status: SchedulerJobStatus) -> None:
        """The final event in the job record, with the job's usage from the scheduler's accounting
        (the job API's usage fields), as the job API's jobs record theirs."""
        key, dag_id = self.job.get("job_key"), self.job.get("dag_id")
        if not (key and dag_id):
            return
        scheduler = self._scheduler()
        try:
            accounting = job_accounting(scheduler, self.job["job_id"], status, log_=self.log)
        finally:
            scheduler.close()
        exit_code = accounting.result["exit_code"]
        if exit_code is not None and "exit code" not in message:
            message += f", exit code {exit_code}"
        fields = accounting.usage_fields
        jobs.record_event(
            dag_id,
            key,
            state,
            message + usage_text(accounting.result),
            scheduler_job_id=self.job["job_id"],
            node=fields["nodes"],
            **fields,
        )

    def on_kill(self) -> None:
        """The task was killed (marked failed, cleared): cancel the scheduler job and write CANCELED,
        unless the job has ended already (its end stands; a retry or a clear completes it).

        While the task is deferred, the trigger's ``on_kill`` does the same in the triggerer.
        """
        if not isinstance(self.job, dict) or not self.job.get("job_id"):
            self.log.info("on_kill: no submitted job known; nothing to cancel")
            return
        scheduler = self._scheduler()
        try:
            if job_has_ended(scheduler, self.job["job_id"]):
                self.log.info("on_kill: scheduler job %s has ended; nothing to cancel", self.job["job_id"])
                return
            why = f"Airflow task {self.task_id} was killed"
            key, dag_id = self.job.get("job_key"), self.job.get("dag_id")
            if key and dag_id:  # the one cancel path of recorded jobs (claimed once, an event)
                cancel_claimed_job(scheduler, (dag_id, key), self.job["job_id"], why)
                write_canceled(self._hook(), self.job["prefix"], self.job["job_id"], why)
            else:  # the intake's steps used without a job record (no claim to take)
                cancel_intake_job(
                    self._hook(),
                    scheduler,
                    self.job["prefix"],
                    self.job["job_id"],
                    why,
                    account=self.job.get("run_as"),
                )
        finally:
            scheduler.close()
