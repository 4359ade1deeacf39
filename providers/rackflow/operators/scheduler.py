"""Submit a batch job to the site's scheduler (Slurm, PBS Pro, LSF, Grid Engine) and wait for it.

Submission is idempotent: the scheduler job gets a name rackflow generates when the job is first
recorded (``rf-<uuid>``, kept in the job record with the job directory), never one derived from the
run id, and an existing job of that name is taken over instead of submitting again, so a retry, a
cleared task or a worker crash never runs the job twice, and a crafted run id never adopts someone
else's job. The job runs as the Unix account ``[rackflow] job_accounts`` maps its owner to (the run's
triggering user); without one nothing is submitted. Waiting happens in the triggerer
(:class:`~rackflow.triggers.scheduler.BatchSchedulerJobTrigger`), holding no worker slot.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from rackflow.core.jobspec import JobDescription, JobDescriptionError, parse_job_description
from rackflow.core.schedulers import JobStatus
from rackflow.db import jobs
from rackflow.hooks.scheduler import BatchSchedulerHook, SchedulerRejectedJob, check_account
from rackflow.triggers.scheduler import (
    ENDED_FAILED,
    ENDED_TERMINATED,
    BatchSchedulerJobTrigger,
    cancel_claimed_job,
    record_job_end,
    usage_text,
)


def default_poll_interval() -> float:
    from rackflow import settings

    return settings.poll_interval("scheduler", 5.0)


# Retries of a wait task: a wait that fails for a reason that is not the job's own (its task process
# lost, a stale executor event failing a resumed try, a worker restart) tries again and re-attaches to
# the same scheduler job (its id from XCom); nothing is resubmitted and nothing is cancelled.
WAIT_RETRIES = 3
WAIT_RETRY_DELAY = timedelta(seconds=5)


def job_has_ended(hook: BatchSchedulerHook, job_id: str) -> bool:
    """Whether ``job_id`` has ended (the queue, else the accounting): a kill then cancels nothing.

    A task killed while it completes an ended job -- e.g. a resumed try the scheduler fails on a stale
    event -- must not cancel anything or write CANCELED over the job's real end."""
    try:
        return hook.statuses([job_id])[job_id].state.is_final
    except Exception:  # the scheduler cannot answer: cancel, as a kill asks
        return False


def jobs_directory() -> str:
    """Where job directories go on the cluster side: ``[rackflow] jobs_directory``."""
    from rackflow import settings

    return settings.jobs_directory()


def unrecorded_job_name(dag_id: str, run_id: str) -> str:
    """The scheduler job name of a job without a record (``record_events=False``): a digest of the
    exact run, so two runs never share a name (no normalisation collapses distinct run ids)."""
    return "rf-" + hashlib.sha256(f"{dag_id}\0{run_id}".encode()).hexdigest()[:32]


class MissingJobAccount(AirflowFailException):
    """The run's owner has no Unix account in ``[rackflow] job_accounts``: nothing is submitted."""


def job_account(owner: str | None, run_as: str | None = None) -> str:
    """The account a job runs as: ``run_as`` or the mapped account of ``owner``; never the service's."""
    from rackflow import settings

    account = run_as or settings.job_account(owner)
    if account is None:
        raise MissingJobAccount(settings.missing_job_account(owner))
    try:
        return check_account(account)
    except ValueError as exc:
        raise MissingJobAccount(f"job account of {owner!r}: {exc}") from exc


def resolve_job(
    dag_id: str,
    run_id: str,
    owner: str | None,
    *,
    run_as: str | None = None,
    job_name: str | None = None,
    workdir: str | None = None,
    record: bool = True,
) -> jobs.JobIdentity:
    """Account, scheduler job name and directory of the run's job (recorded on first use).

    Raises :class:`MissingJobAccount` for an owner without an account, and fails (without touching
    anything) when the job record belongs to someone else.
    """
    account = job_account(owner, run_as)
    if not record:
        name = job_name or unrecorded_job_name(dag_id, run_id)
        return jobs.JobIdentity(owner, account, name, workdir or str(PurePosixPath(jobs_directory()) / name))
    try:
        identity = jobs.job_identity(
            dag_id,
            run_id,
            owner=owner,
            jobs_directory=jobs_directory(),
            account=account,
            job_name=job_name,
            workdir=workdir,
        )
    except jobs.JobOwnerMismatch as exc:
        raise AirflowFailException(str(exc)) from exc
    if identity.account is None:  # recorded before accounts existed
        raise MissingJobAccount(f"job record {dag_id}/{run_id} has no account")
    return identity


def _run_keys(context: Any) -> tuple[str, str, str | None]:
    dag_run = context["dag_run"]
    return dag_run.dag_id, dag_run.run_id, getattr(dag_run, "triggering_user_name", None)


class _SchedulerJobMixin:
    """What submitting and waiting share: the hook, the trigger, and the completion step."""

    scheduler: str
    ssh_conn_id: str | None
    scheduler_env: dict[str, str] | None
    poll_interval: float
    record_events: bool
    fail_on_job_failure: bool
    log: Any

    def hook(self) -> BatchSchedulerHook:
        return BatchSchedulerHook(
            scheduler=self.scheduler, ssh_conn_id=self.ssh_conn_id, scheduler_env=self.scheduler_env
        )

    def _trigger(self, job_id: str, context: Any, last_state: str = "QUEUED") -> BatchSchedulerJobTrigger:
        dag_id, run_id, _ = _run_keys(context)
        return BatchSchedulerJobTrigger(
            scheduler_job_id=job_id,
            scheduler=self.scheduler,
            ssh_conn_id=self.ssh_conn_id,
            scheduler_env=self.scheduler_env,
            poll_interval=self.poll_interval,
            dag_id=dag_id if self.record_events else None,
            run_id=run_id if self.record_events else None,
            last_state=last_state,
            end_from_trigger=getattr(self, "end_from_trigger", False),
        )

    def _finished_already(self, job_id: str, context: Any) -> dict[str, Any] | None:
        """Check once before deferring: a job that already ended is completed here, not in the triggerer.

        (A trigger that fires before the executor has reported the deferral can race the scheduler.)
        """
        hook = self.hook()
        try:
            status = hook.statuses([job_id])[job_id]
        finally:
            hook.close()
        if not status.state.is_final:
            return None
        event = {"status": "done", "scheduler_job_id": job_id, "job_status": status.model_dump(mode="json")}
        return self._complete(context, event)

    def _poll_in_worker(self, job_id: str, context: Any) -> dict[str, Any]:
        hook = self.hook()
        last = "QUEUED"
        trigger = self._trigger(job_id, context, last)
        while True:
            status = hook.statuses([job_id])[job_id]
            if status.state.value != last and not status.state.is_final:
                trigger._record(status)
                last = status.state.value
            if status.state.is_final:
                event = {
                    "status": "done",
                    "scheduler_job_id": job_id,
                    "job_status": status.model_dump(mode="json"),
                }
                return self._complete(context, event)
            time.sleep(self.poll_interval)

    def _complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The resumed task's end: :func:`~rackflow.triggers.scheduler.record_job_end` of the job the
        trigger saw end, then the task's outcome (a terminated job skips it, a failed one fails it)."""
        job_id = str(event.get("scheduler_job_id"))
        if event.get("status") != "done":
            raise AirflowException(f"lost track of scheduler job {job_id}: {event.get('message')}")
        status = JobStatus.model_validate(event["job_status"])
        dag_id, run_id, _ = _run_keys(context)
        hook = self.hook()
        try:
            end = record_job_end(
                hook, job_id, status, (dag_id, run_id) if self.record_events else None, log_=self.log
            )
        finally:
            hook.close()
        if end.outcome == ENDED_TERMINATED:
            raise AirflowSkipException(end.message)
        if self.fail_on_job_failure and end.outcome == ENDED_FAILED:
            raise AirflowFailException(end.message)
        return end.result


class SubmitToBatchSchedulerOperator(_SchedulerJobMixin, BaseOperator):
    """Submit a job description to the local batch scheduler once, then wait for it in the triggerer.

    Returns (XCom) a dict: ``scheduler_job_id``, ``state`` (PSI/J), ``native_state``, ``exit_code``,
    ``signal``, ``reason``, ``nodes``, ``cpu_time``/``wall_time`` (seconds), ``max_memory`` (bytes),
    plus ``job_name`` and ``workdir``. A job that ends FAILED or CANCELED fails the task (unless
    ``fail_on_job_failure=False``); one canceled through the job API skips it.

    :param job: the job description: a dict, a :class:`JobDescription`, JSON text or JSDL XML (templated).
    :param scheduler: ``slurm`` (default), ``pbspro``, ``lsf`` or ``sge``.
    :param ssh_conn_id: SSH connection of the cluster's login node; None runs commands on the worker.
    :param scheduler_env: extra environment for the scheduler commands, e.g. ``{"SLURM_CONF": ...}``
        (templated).
    :param workdir: job directory on the cluster side (templated); default
        ``<[rackflow] jobs_directory>/<job name>``.
    :param job_name: scheduler job name (templated); default ``rf-<uuid>`` generated when the job is
        first recorded. It must be unique per run: it is how a resubmission finds the job.
    :param run_as: Unix account the job runs as (templated); default the account ``[rackflow]
        job_accounts`` maps the run's triggering user to. Never root or the service account.
    :param poll_interval: seconds between status polls; default ``[rackflow] scheduler_poll_interval``.
    :param wait_for_completion: False returns right after submitting (state QUEUED).
    :param deferrable: wait in the triggerer (default) instead of polling in the worker.
    :param record_events: write the job's record and events to the rackflow database.
    :param fail_on_job_failure: fail the task when the job ends FAILED/CANCELED.
    :param before_submit: called with the task's context on the worker before anything is submitted
        (the job DAG stages the inputs in there); it may raise to stop the task.
    :param end_from_trigger: the trigger completes the job and ends this task itself (success when
        the job COMPLETED, failed otherwise, skipped when terminated through the job API): the task
        never resumes on a worker after deferring, so it costs one task start. It resumes only when
        the trigger lost track of the job, to re-attach to it (up to ``WAIT_RETRIES`` times).
    """

    template_fields: Sequence[str] = ("job", "job_name", "workdir", "ssh_conn_id", "scheduler_env", "run_as")
    template_fields_renderers = {"job": "json", "scheduler_env": "json"}
    ui_color = "#d9ecf2"

    def __init__(
        self,
        *,
        job: dict[str, Any] | JobDescription | str,
        scheduler: str = "slurm",
        ssh_conn_id: str | None = None,
        scheduler_env: dict[str, str] | None = None,
        workdir: str | None = None,
        job_name: str | None = None,
        run_as: str | None = None,
        poll_interval: float | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        record_events: bool = True,
        fail_on_job_failure: bool = True,
        before_submit: Callable[[Any], None] | None = None,
        end_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if end_from_trigger and not fail_on_job_failure:
            raise ValueError("end_from_trigger ends the task from the trigger: a failed job fails it")
        self.before_submit = before_submit
        self.end_from_trigger = end_from_trigger
        self.job = job.to_dict() if isinstance(job, JobDescription) else job
        self.scheduler = scheduler
        self.ssh_conn_id = ssh_conn_id
        self.scheduler_env = scheduler_env
        self.workdir = workdir
        self.job_name = job_name
        self.run_as = run_as
        self.poll_interval = poll_interval if poll_interval is not None else default_poll_interval()
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.record_events = record_events
        self.fail_on_job_failure = fail_on_job_failure
        self._scheduler_job_id: str | None = None
        self._account: str | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            job = parse_job_description(self.job)  # type: ignore[arg-type]
        except JobDescriptionError as exc:
            raise AirflowFailException(str(exc)) from exc
        if self.before_submit is not None:
            self.before_submit(context)
        dag_id, run_id, owner = _run_keys(context)
        identity = resolve_job(
            dag_id,
            run_id,
            owner,
            run_as=self.run_as,
            job_name=self.job_name,
            workdir=self.workdir,
            record=self.record_events,
        )
        hook = self.hook()
        job_name = hook.adapter.normalize_job_name(identity.job_name)
        workdir = identity.workdir
        account = self._account = identity.account
        assert account is not None
        if self.record_events:
            jobs.ensure_job(dag_id, run_id, scheduler=self.scheduler, cluster=hook.cluster_key)
            who = jobs.termination_requested(dag_id, run_id)
            if who:
                raise AirflowSkipException(f"not submitting: termination requested by {who}")
        row = jobs.get_job(dag_id, run_id) if self.record_events else None
        if row is not None and row.scheduler_job_id is not None and row.state in jobs.FINAL_STATES:
            # A retry (or clear) after the job's end was recorded -- e.g. the trigger ended this task
            # failed, which Airflow retries: the job's own end stands, nothing is submitted again.
            self._scheduler_job_id = row.scheduler_job_id
            hook.close()
            return self._recorded_end(row)
        if row is not None and row.scheduler_job_id is not None:
            # A retried or cleared submit: the job was submitted and recorded; re-attach to it even if
            # the scheduler has forgotten its name (the record, not the live queue, says it exists).
            job_id, how, note = row.scheduler_job_id, "found existing", "; recorded, not submitted again"
        else:
            try:
                submitted = hook.submit(
                    job,
                    job_name=job_name,
                    comment=f"airflow {dag_id} {run_id}",
                    workdir=workdir,
                    account=account,
                )
            except SchedulerRejectedJob as exc:
                if self.record_events:
                    jobs.record_event(dag_id, run_id, "FAILED", f"{self.scheduler} refused the job: {exc}")
                raise AirflowFailException(f"{self.scheduler} refused the job: {exc}") from exc
            job_id = submitted.scheduler_job_id
            how, note = ("found existing" if submitted.existing else "submitted"), ""
        self._scheduler_job_id = job_id
        context["ti"].xcom_push(key="scheduler_job_id", value=job_id)
        if self.record_events:
            jobs.record_event(
                dag_id,
                run_id,
                "QUEUED" if how == "submitted" else None,  # a re-attached job keeps its state
                f"{how} {self.scheduler} job {job_id} ({job_name}, as {account}){note}",
                scheduler_job_id=job_id,
            )
            if jobs.termination_requested(dag_id, run_id):  # asked while we were submitting
                cancel_claimed_job(hook, (dag_id, run_id), job_id, "termination requested")
        hook.close()
        if not self.wait_for_completion:
            return {"scheduler_job_id": job_id, "job_name": job_name, "workdir": workdir, "state": "QUEUED"}
        if self.deferrable:
            done = self._finished_already(job_id, context)
            if done is not None:
                return {**done, "job_name": job_name, "workdir": workdir}
            self.defer(
                trigger=self._trigger(job_id, context),
                method_name="execute_complete",
                kwargs={"job_name": job_name, "workdir": workdir},
            )
        return {**self._poll_in_worker(job_id, context), "job_name": job_name, "workdir": workdir}

    def execute_complete(
        self,
        context: Any,
        event: dict[str, Any] | str,
        job_name: str = "",
        workdir: str = "",
        attached: int = 1,
    ) -> dict[str, Any]:
        if isinstance(event, str):
            return self._ended_by_trigger(context, event)
        job_id = str(event.get("scheduler_job_id"))
        if event.get("status") == "error" and self.end_from_trigger and attached <= WAIT_RETRIES:
            # The trigger lost track of the job (its status polls failed), not the job itself: follow
            # the same job again (nothing is submitted or cancelled), up to WAIT_RETRIES times.
            self.log.warning("Re-attaching to job %s: %s", job_id, event.get("message"))
            self.defer(
                trigger=self._trigger(job_id, context),
                method_name="execute_complete",
                kwargs={"job_name": job_name, "workdir": workdir, "attached": attached + 1},
            )
        return {**self._complete(context, event), "job_name": job_name, "workdir": workdir}

    def _recorded_end(self, row: Any) -> dict[str, Any]:
        """End the task as the job's recorded end says (a failed job fails it, with no retry)."""
        message = row.message or f"job {row.state}"
        if row.state == "CANCELED" and row.terminate_requested_at is not None:
            raise AirflowSkipException(message)
        if row.state != "COMPLETED" and self.fail_on_job_failure:
            raise AirflowFailException(message)
        return {"scheduler_job_id": row.scheduler_job_id, "state": row.state, "exit_code": row.exit_code}

    def _ended_by_trigger(self, context: Any, state: str) -> dict[str, Any]:
        """An inline runner (``dag.test()``) resumes a task its trigger ended, with the end event's
        state as the event: the trigger recorded the job's end already; end the task the same way."""
        dag_id, run_id, _ = _run_keys(context)
        row = jobs.get_job(dag_id, run_id) if self.record_events else None
        message = row.message if row is not None and row.message else f"the trigger ended the task: {state}"
        if state.endswith("skipped"):
            raise AirflowSkipException(message)
        if not state.endswith("success"):
            raise AirflowFailException(message)
        return {"scheduler_job_id": self._scheduler_job_id, "state": row.state if row else "COMPLETED"}

    def on_kill(self) -> None:
        """Cancel the scheduler job this task submitted (the trigger's on_kill covers a deferred task)."""
        if self._scheduler_job_id is None:
            return
        try:
            hook = self.hook()
            if job_has_ended(hook, self._scheduler_job_id):
                self.log.info("on_kill: job %s has ended; nothing to cancel", self._scheduler_job_id)
                return
            hook.cancel(self._scheduler_job_id, account=self._account)
        except Exception:
            self.log.exception("Could not cancel scheduler job %s", self._scheduler_job_id)


class WaitForBatchSchedulerJobOperator(_SchedulerJobMixin, BaseOperator):
    """Wait (deferred) for a job submitted earlier, e.g. with ``wait_for_completion=False``.

    :param scheduler_job_id: the scheduler's job id (templated).
    :param scheduler: adapter kind.
    :param ssh_conn_id: SSH connection of the login node; None: this host.
    :param scheduler_env: extra environment for the scheduler commands (templated).
    :param poll_interval: seconds between status polls.
    :param deferrable: wait in the triggerer (default) instead of polling in the worker.
    :param record_events: write state changes to the rackflow job record.
    :param fail_on_job_failure: fail the task when the job ends FAILED/CANCELED.
    """

    template_fields: Sequence[str] = ("scheduler_job_id", "ssh_conn_id", "scheduler_env")

    def __init__(
        self,
        *,
        scheduler_job_id: str,
        scheduler: str = "slurm",
        ssh_conn_id: str | None = None,
        scheduler_env: dict[str, str] | None = None,
        poll_interval: float | None = None,
        deferrable: bool = True,
        record_events: bool = True,
        fail_on_job_failure: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.scheduler_job_id = scheduler_job_id
        self.scheduler = scheduler
        self.ssh_conn_id = ssh_conn_id
        self.scheduler_env = scheduler_env
        self.poll_interval = poll_interval if poll_interval is not None else default_poll_interval()
        self.deferrable = deferrable
        self.record_events = record_events
        self.fail_on_job_failure = fail_on_job_failure

    _keys: tuple[str, str] | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        self._keys = _run_keys(context)[:2]
        job_id = str(self.scheduler_job_id)
        if not job_id or job_id == "None":
            raise AirflowFailException("no scheduler job id to wait for")
        if self.deferrable:
            done = self._finished_already(job_id, context)
            if done is not None:
                return done
            last = "QUEUED"
            if self.record_events:
                job = jobs.get_job(*_run_keys(context)[:2])
                last = job.state if job is not None else last
            self.defer(trigger=self._trigger(job_id, context, last), method_name="execute_complete")
        return self._poll_in_worker(job_id, context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        return self._complete(context, event)

    def on_kill(self) -> None:
        """Cancel the job waited for, unless it has ended (see :func:`job_has_ended`)."""
        try:
            hook = self.hook()
            if job_has_ended(hook, str(self.scheduler_job_id)):
                self.log.info("on_kill: job %s has ended; nothing to cancel", self.scheduler_job_id)
                return
            row = jobs.get_job(*self._keys) if self.record_events and self._keys else None
            hook.cancel(str(self.scheduler_job_id), account=row.account if row else None)
        except Exception:
            self.log.exception("Could not cancel scheduler job %s", self.scheduler_job_id)


__all__ = [
    "WAIT_RETRIES",
    "WAIT_RETRY_DELAY",
    "MissingJobAccount",
    "SubmitToBatchSchedulerOperator",
    "WaitForBatchSchedulerJobOperator",
    "job_account",
    "job_has_ended",
    "jobs_directory",
    "resolve_job",
    "unrecorded_job_name",
    "usage_text",
]
