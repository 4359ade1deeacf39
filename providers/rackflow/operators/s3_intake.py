"""The per-job steps of the S3 intake: claim, stage-in, submit, wait, stage-out, final status.

Each step is a plain function over :class:`~rackflow.hooks.s3_jobs.S3JobsHook` (the intake DAG wraps
them in tasks), except the wait, which is a deferrable operator. The job directory is on the execution
host: this one, or a login node over SSH/SFTP (``ssh_conn_id``; see :mod:`rackflow.hooks.job_dirs`),
where the scheduler commands then run too. Submit, poll and cancel go through
:class:`~rackflow.hooks.scheduler.LocalSchedulerHook`, like the job API's jobs: the job runs as the
intake's ``run_as`` account (its directory, mode 0700, is handed to that account before the submit),
with no environment but its own, and the options rackflow manages on the submit command line.
A step that fails for a reason the job owner should see writes ``FAILED`` with that reason before
raising; a step that finds the status object changed or deleted under it (another poller, or the
uploader removed the job) stops quietly, so a job never runs twice and rackflow never recreates what
the uploader deleted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from rackflow import settings
from rackflow.core.s3_protocol import (
    JOB_SCRIPT_NAME,
    JobStatus,
    ManifestEntry,
    take_manifest,
)
from rackflow.core.schedulers import JobStatus as SchedulerJobStatus
from rackflow.hooks.job_dirs import job_dir_path, open_job_dir
from rackflow.hooks.s3_jobs import S3JobsHook, S3StatusFollower, StatusConflict, cancel_intake_job
from rackflow.hooks.scheduler import LocalSchedulerHook, SchedulerRejectedJob, check_account
from rackflow.operators.scheduler import job_has_ended
from rackflow.triggers.scheduler import LocalSchedulerJobTrigger

log = logging.getLogger(__name__)


# The intake DAG's per-job task that claims, stages in and submits, and the XCom keys of its claim and
# of the scheduler job it submitted (the only job id rackflow ever acts on: never line 2 of a status
# object, which the uploader can write).
ACCEPT_TASK_ID = "accept"
WAIT_TASK_ID = "wait"
CLAIMED_XCOM_KEY = "claimed"
SUBMITTED_XCOM_KEY = "submitted_job_id"


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


def claim_job(hook: S3JobsHook, job: dict[str, str]) -> dict[str, Any]:
    """Claim one ready job; skip (AirflowSkipException) when another poller won or it changed."""
    prefix = job["prefix"]
    result = hook.claim(prefix, job["etag"])
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
    scheduler: LocalSchedulerHook,
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
        hook.transition(prefix, JobStatus.QUEUED, scheduler_job_id=job_id)
    return {**staged, "job_id": job_id, "job_name": name, "run_as": account}


def accept_job(
    hook: S3JobsHook,
    job: dict[str, str],
    base_dir: str | Path,
    scheduler: LocalSchedulerHook,
    claim_id: str,
    on_claimed: Callable[[dict[str, Any]], None] = lambda claimed: None,
    ssh_conn_id: str | None = None,
    on_submitted: Callable[[str], None] = lambda job_id: None,
    *,
    run_as: str,
) -> dict[str, Any]:
    """Claim -> stage-in -> submit one ready job, in one task: each Airflow task start costs about a
    second, and this keeps ``FILE_UPLOAD`` -> ``QUEUED`` within seconds. ``on_claimed`` records the claim
    (the intake DAG pushes it to XCom) before anything else can fail, so a crash later in the task still
    ends this job with ``FAILED`` (see :func:`job_task_failed`); ``on_submitted`` does the same for the
    scheduler job id."""
    claimed = claim_job(hook, job)
    on_claimed(claimed)
    staged = stage_in_job(hook, claimed, base_dir, ssh_conn_id)
    return submit_job(hook, staged, scheduler, claim_id, run_as, on_submitted)


def stage_out_job(hook: S3JobsHook, waited: dict[str, Any]) -> dict[str, Any]:
    """Write STAGING_OUT and upload what the job created or changed; stops if the job was deleted."""
    prefix = waited["prefix"]
    with failing_job(hook, prefix, "stage-out", waited.get("job_id")):
        job_id = waited.get("job_id")
        hook.mark_running(prefix, job_id)  # a job can end between two polls while still QUEUED
        hook.transition(prefix, JobStatus.STAGING_OUT, scheduler_job_id=job_id)
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


def finish_job(hook: S3JobsHook, staged_out: dict[str, Any]) -> str:
    """The final status from how the scheduler job ended: COMPLETED, FAILED (with reason) or CANCELED."""
    prefix = staged_out["prefix"]
    end = staged_out["end"]
    job_id = staged_out.get("job_id")
    with failing_job(hook, prefix, "final status", job_id):
        if end["state"] == "COMPLETED" and end.get("exit_code") in (0, None):
            hook.transition(prefix, JobStatus.COMPLETED, scheduler_job_id=job_id)
            return JobStatus.COMPLETED.value
        if end["state"] == "CANCELED":
            hook.transition(
                prefix,
                JobStatus.CANCELED,
                scheduler_job_id=job_id,
                reason=f"scheduler job {end['native_state']}",
            )
            return JobStatus.CANCELED.value
        detail = f"exit code {end['exit_code']}" if end.get("exit_code") is not None else end["native_state"]
        reason = f"scheduler job ended {end['state']} ({detail})"
        if end.get("reason"):
            reason += f": {end['reason']}"
        hook.transition(prefix, JobStatus.FAILED, scheduler_job_id=job_id, reason=reason)
    raise JobFailed(f"{prefix}: {reason}")


def fail_unfinished_job(
    hook: S3JobsHook,
    prefix: str,
    reason: str,
    scheduler: LocalSchedulerHook | None = None,
    job_id: str | None = None,
    account: str | None = None,
) -> str | None:
    """After a per-job task died without ending the job: ``FAILED`` with ``reason``, never over a
    terminal status. The scheduler job this run submitted (``job_id``, from XCom -- never the id in the
    status object, which the uploader can write) is cancelled, whatever the status says: no task
    follows it any more (a step that failed after submitting may already have written ``FAILED``).
    Nothing is ever resubmitted.

    Returns the status the object reads afterwards (None when it is gone).
    """
    if job_id and scheduler is not None:
        try:
            if scheduler.cancel(job_id, account=account):
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
    scheduler: LocalSchedulerHook,
    job_id: str | None,
    account: str | None,
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
    return fail_unfinished_job(hook, prefix, reason, scheduler, job_id, account)


def job_task_failed(
    bucket_name: str,
    aws_conn_id: str,
    scheduler: str,
    ssh_conn_id: str | None = None,
    scheduler_env: dict[str, str] | None = None,
    run_as: str | None = None,
) -> Any:
    """An ``on_failure_callback`` for the per-job tasks of an intake run (see :func:`fail_unfinished_job`).

    It acts only for a job this run claimed (the ``accept`` task's ``claimed`` XCom of the same map
    index, pushed right after the claim), so a task that failed before or without the claim never
    touches another poller's job. A scheduler job is cancelled, as ``run_as``, on the login node of
    ``ssh_conn_id`` (None: this host) -- except after a failed ``wait`` while the job still runs: the
    job is the user's, not lost; it is left alone and clearing the ``wait`` task follows it again.
    """

    def callback(context: Any) -> None:
        ti = context["ti"]
        group = ti.task_id.rpartition(".")[0]
        accept_task = f"{group}.{ACCEPT_TASK_ID}" if group else ACCEPT_TASK_ID
        claimed = ti.xcom_pull(task_ids=accept_task, key=CLAIMED_XCOM_KEY, map_indexes=ti.map_index)
        if not claimed or "prefix" not in claimed:
            log.info("%s failed before this run claimed a job; no status to write", ti.task_id)
            return
        job_id = ti.xcom_pull(task_ids=accept_task, key=SUBMITTED_XCOM_KEY, map_indexes=ti.map_index)
        step = ti.task_id.rpartition(".")[2]
        error = context.get("exception")
        reason = f"{step} task failed: {error or 'no error reported (task process lost)'}"
        hook = S3JobsHook(aws_conn_id, bucket_name=bucket_name)
        local = LocalSchedulerHook(scheduler=scheduler, env=scheduler_env, ssh_conn_id=ssh_conn_id)
        try:
            end_after_failed_task(hook, step, claimed["prefix"], reason, local, job_id or None, run_as)
        except Exception:
            log.exception("%s: could not write FAILED after %s", claimed["prefix"], ti.task_id)
        finally:
            local.close()

    return callback


class S3JobWaitOperator(BaseOperator):
    """
    Wait for a submitted intake job to end, on the cluster's shared poller; resumes once, at the end.

    The job is checked once here (one that ended already is returned at once); then the task defers to
    :class:`~rackflow.triggers.scheduler.LocalSchedulerJobTrigger`, whose
    :class:`~rackflow.hooks.s3_jobs.S3StatusFollower` writes ``RUNNING`` to the status object from the
    triggerer when the job starts, so the task resumes only when the job has ended and the stage-out
    has work. The end is what the trigger observed (the live queue, else the scheduler's accounting),
    never asked again of a controller that may have forgotten the job.

    A retried or cleared wait re-attaches to the scheduler job the ``accept`` task submitted (its
    result, from XCom); nothing is ever resubmitted.

    Returns the submitted job's dict with ``end`` set to ``{"state", "native_state", "exit_code",
    "reason"}`` (PSI/J state names).

    :param job: the submit step's result (``prefix``, ``job_id``, ...). (templated)
    :param bucket_name: the intake bucket. (templated)
    :param aws_conn_id: Airflow AWS connection.
    :param scheduler: local scheduler kind.
    :param ssh_conn_id: SSH connection of the login node the scheduler commands run on; None: this host.
    :param scheduler_env: extra environment for the scheduler commands (e.g. ``SLURM_CONF``).
    :param poll_interval: seconds between scheduler polls; default ``[rackflow] scheduler_poll_interval``.
    :param deferrable: wait in the triggerer. Default from ``[operators] default_deferrable``.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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

    def _hook(self) -> S3JobsHook:
        return S3JobsHook(self.aws_conn_id, bucket_name=self.bucket_name)

    def _scheduler(self) -> LocalSchedulerHook:
        return LocalSchedulerHook(
            scheduler=self.scheduler, env=self.scheduler_env, ssh_conn_id=self.ssh_conn_id
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

    def execute(self, context: Any) -> Any:
        job_id = self.job["job_id"]
        status = self._status()
        last = None
        while not status.state.is_final:
            if status.state.value != last:
                with failing_job(self._hook(), self.job["prefix"], "wait", job_id):
                    self.follower().on_state(job_id, status)
                last = status.state.value
            if self.deferrable:
                self._defer(status.state.value)
            time.sleep(self.poll_interval)
            status = self._status()
        return self._ended(status)

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
            cancel_intake_job(
                self._hook(),
                scheduler,
                self.job["prefix"],
                self.job["job_id"],
                f"Airflow task {self.task_id} was killed",
                account=self.job.get("run_as"),
            )
        finally:
            scheduler.close()

    def _defer(self, known_state: str) -> None:
        follower = self.follower()
        self.defer(
            trigger=LocalSchedulerJobTrigger(
                scheduler_job_id=self.job["job_id"],
                scheduler=self.scheduler,
                ssh_conn_id=self.ssh_conn_id,
                env=self.scheduler_env,
                poll_interval=self.poll_interval,
                last_state=known_state,
                account=self.job.get("run_as") or None,
                follower=f"{type(follower).__module__}.{type(follower).__qualname__}",
                follower_kwargs=follower.kwargs,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event.get("status") != "done":
            # Not the job's failure (status polls failed): a retry of this task re-attaches to it.
            raise RuntimeError(f"lost track of scheduler job {self.job['job_id']}: {event.get('message')}")
        return self._ended(SchedulerJobStatus.model_validate(event["job_status"]))
