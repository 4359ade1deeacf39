"""The batch job DAG: submit -> finish, one DAG run per job.

The run's conf is ``{"job": <job description>}`` validated by a JSON-schema ``Param``, so an invalid
description is refused by ``POST /api/v2/dags/<dag_id>/dagRuns`` (400) before any run is recorded.
The job id is the run id; the owner is the run's triggering user, and the job runs as the Unix account
``[rackflow] job_accounts`` maps the owner to: an owner without one fails ``submit`` with that reason
and nothing is staged or submitted. The scheduler job name and the job directory
(``<jobs_directory>/rf-<uuid>``, mode 0700, handed to the account before the submit) are generated
when ``submit`` first records the job, never derived from the run id. Each task is one stage and records
events in the rackflow database (:mod:`rackflow.db.jobs`); clearing a failed task restarts that stage
(submit finds a job it submitted already instead of submitting twice, and stages nothing again).

Task starts: ``submit`` stages the inputs in, submits, and defers: the cluster's shared poller
follows the job in the triggerer, its states (QUEUED, ACTIVE with its node) and its end (exit code
and usage from the scheduler's accounting) are recorded there, and the trigger ends the task itself
(Airflow's end-from-trigger) -- the task never resumes on a worker, so no resumed try can lose
Airflow's defer-exit race (apache/airflow#72716). ``finish`` (stage out, keep the output tails,
remove the job directory) runs on a worker. Two worker task starts per job.

Job states: QUEUED until the scheduler runs it (also while staging in), ACTIVE while it runs, then
COMPLETED, FAILED (the job failed, or staging failed, or the scheduler refused it) or CANCELED
(terminated through the job API). A job that does not end COMPLETED fails the run in ``finish``.
``finish`` first stages out, keeps the tails of the job's stdout and stderr in the rackflow database,
then removes the job directory or keeps it per ``[rackflow] job_directory_retention``
(:mod:`rackflow.services.job_output`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rackflow.core.jobspec import JobDescription, parse_job_description
from rackflow.db import jobs
from rackflow.hooks.job_dirs import open_job_dir
from rackflow.hooks.scheduler import BatchSchedulerHook, JobDirectoryError, SchedulerCommandError
from rackflow.operators.scheduler import (
    WAIT_RETRIES,
    WAIT_RETRY_DELAY,
    MissingJobAccount,
    SubmitToBatchSchedulerOperator,
    resolve_job,
)

JOB_DAG_ID = "rackflow_job"


def create_job_dag(
    dag_id: str = JOB_DAG_ID,
    *,
    scheduler: str = "slurm",
    ssh_conn_id: str | None = None,
    scheduler_env: dict[str, str] | None = None,
    aws_conn_id: str | None = "aws_default",
    poll_interval: float | None = None,
    max_active_runs: int = 256,
    tags: list[str] | None = None,
) -> DAG:
    """Build the job DAG for one cluster.

    :param dag_id: DAG id (the job API works on ``rackflow_job``).
    :param scheduler: ``slurm``, ``pbspro``, ``lsf`` or ``sge``.
    :param ssh_conn_id: SSH connection of the login node; None runs scheduler commands on the worker.
    :param scheduler_env: extra environment for the scheduler commands (e.g. ``SLURM_CONF``).
    :param aws_conn_id: AWS connection used for ``s3://`` staging.
    :param poll_interval: seconds between scheduler status polls.
    :param max_active_runs: jobs that may be in flight at once.
    :param tags: DAG tags.
    """

    def hook() -> BatchSchedulerHook:
        return BatchSchedulerHook(scheduler=scheduler, ssh_conn_id=ssh_conn_id, scheduler_env=scheduler_env)

    def keys(context: Any) -> tuple[str, str, str | None]:
        run = context["dag_run"]
        return run.dag_id, run.run_id, getattr(run, "triggering_user_name", None)

    def workdir_of(context: Any) -> str:
        """The job directory stage_in recorded (never recomputed from the run id)."""
        dag_id_, run_id, owner = keys(context)
        row = jobs.get_job(dag_id_, run_id)
        if row is None or row.workdir is None or row.owner not in (None, owner):
            raise AirflowFailException(f"no job directory recorded for {run_id}")
        return row.workdir

    def description(context: Any) -> JobDescription:
        return parse_job_description(context["params"]["job"])

    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        max_active_runs=max_active_runs,
        max_active_tasks=max_active_runs * 2,
        tags=tags or ["rackflow", "batch"],
        doc_md=__doc__,
        params={
            "job": Param(
                **{
                    **JobDescription.param_schema(),
                    "description": "The job description (PSI/J JobSpec + staging).",
                }
            )
        },
        default_args={"retries": 0, "retry_delay": timedelta(seconds=10)},
    ) as dag:

        def stage_inputs(context: Any) -> None:
            """Record the job and stage its inputs in; nothing again once it was submitted."""
            from rackflow.services.staging import StagingError, stage_in

            dag_id_, run_id, owner = keys(context)
            who = jobs.termination_requested(dag_id_, run_id)
            if who:
                raise AirflowSkipException(f"terminated by {who} before staging")
            try:
                identity = resolve_job(dag_id_, run_id, owner)
            except MissingJobAccount as exc:
                row = jobs.get_job(dag_id_, run_id)
                if row is None or row.owner in (None, owner):  # never write into another owner's record
                    jobs.record_event(dag_id_, run_id, "FAILED", str(exc), owner=owner)
                raise
            row = jobs.get_job(dag_id_, run_id)
            if row is not None and row.scheduler_job_id is not None:
                return  # a cleared submit: the inputs are in, the job was submitted (found again below)
            workdir = identity.workdir
            job = description(context)
            h = hook()
            jobs.record_event(
                dag_id_,
                run_id,
                "QUEUED",
                f"accepted; staging {len(job.stage_in)} input(s) into {workdir} (runs as {identity.account})",
                scheduler=scheduler,
                cluster=h.cluster_key,
            )
            try:
                h.create_job_dir(workdir)
            except (JobDirectoryError, SchedulerCommandError) as exc:
                h.close()
                jobs.record_event(dag_id_, run_id, "FAILED", f"job directory {workdir}: {exc}")
                raise AirflowFailException(f"job directory {workdir}: {exc}") from exc
            try:
                with open_job_dir(workdir, ssh_conn_id, scheduler_hook=h) as job_dir:
                    staged = stage_in(job.stage_in, job_dir=job_dir, aws_conn_id=aws_conn_id)
            except StagingError as exc:
                jobs.record_event(dag_id_, run_id, "FAILED", f"stage_in failed: {exc}")
                raise AirflowFailException(f"stage_in failed: {exc}") from exc
            finally:
                h.close()
            if staged:
                jobs.record_event(dag_id_, run_id, None, "staged in: " + "; ".join(staged))

        submit = SubmitToBatchSchedulerOperator(
            task_id="submit",
            job="{{ params.job | tojson }}",
            scheduler=scheduler,
            ssh_conn_id=ssh_conn_id,
            scheduler_env=scheduler_env,
            poll_interval=poll_interval,
            before_submit=stage_inputs,  # name, directory and account: the ones stage_in recorded
            # The wait: deferred to the cluster's poller; the trigger records the job's states and its
            # end and ends this task itself (no resume on a worker). A cleared submit re-attaches to
            # the recorded scheduler job, never submits again.
            end_from_trigger=True,
            # A try lost to something that is not the job's own (its task process lost, a worker
            # restart) runs again and goes on from the job record; a job that ended FAILED fails its
            # retry at once (its recorded end), without a second submission.
            retries=WAIT_RETRIES,
            retry_delay=WAIT_RETRY_DELAY,
        )

        def stage_outputs(context: Any, job_row: Any) -> str | None:
            """Copy the job's results out; the reason it failed, or None."""
            from rackflow.services.staging import StagingError, stage_out

            dag_id_, run_id, _ = keys(context)
            if job_row is None or job_row.scheduler_job_id is None:
                return None  # nothing was submitted: nothing to stage out
            if job_row.terminate_requested_at is not None or job_row.state not in jobs.FINAL_STATES:
                return None  # terminated, or the job did not finish
            job = description(context)
            if not job.stage_out:
                return None
            h = hook()
            try:
                with open_job_dir(workdir_of(context), ssh_conn_id, scheduler_hook=h) as job_dir:
                    copied = stage_out(job.stage_out, job_dir=job_dir, aws_conn_id=aws_conn_id)
            except StagingError as exc:
                jobs.record_event(dag_id_, run_id, "FAILED", f"stage_out failed: {exc}")
                return f"stage_out failed: {exc}"
            finally:
                h.close()
            if copied:
                jobs.record_event(dag_id_, run_id, None, "staged out: " + "; ".join(copied))
            return None

        # A lost finish runs again: its steps are idempotent (a kept stream is not read twice).
        @task(task_id="finish", trigger_rule="all_done", retries=WAIT_RETRIES, retry_delay=WAIT_RETRY_DELAY)
        def finish_task(**context: Any) -> str:
            dag_id_, run_id, owner = keys(context)
            job_row = jobs.get_job(dag_id_, run_id)
            if job_row is not None and job_row.owner not in (None, owner):
                raise AirflowFailException(f"the job record of {run_id} is not this run's owner's")
            workdir = job_row.workdir if job_row is not None else None
            state = job_row.state if job_row is not None else "FAILED"
            if state not in jobs.FINAL_STATES and (job_row is None or job_row.terminate_requested_at is None):
                # A system failure left the job running or unknown: keep its directory so that clearing
                # the failed stage resumes it.
                raise AirflowFailException(
                    f"job still {state} after a failed stage; clear that task to resume (directory kept)"
                )
            staging_failed = stage_outputs(context, job_row)
            if staging_failed:
                job_row = jobs.get_job(dag_id_, run_id)
                state = "FAILED"
            directory_note = kept = ""
            if workdir is not None:
                from rackflow import settings
                from rackflow.services.job_output import finish_job_directory, keep_output, remove_expired

                h = hook()
                try:
                    if job_row is not None and job_row.scheduler_job_id is not None:
                        with open_job_dir(workdir, ssh_conn_id, scheduler_hook=h) as job_dir:
                            kept = keep_output(
                                job_dir,
                                h.adapter,
                                description(context),
                                dag_id=dag_id_,
                                run_id=run_id,
                                workdir=workdir,
                                max_bytes=settings.job_output_tail_bytes(),
                            )
                    directory_note = finish_job_directory(
                        h, dag_id_, run_id, workdir, settings.job_directory_retention()
                    )
                    remove_expired(h, dag_id_)
                finally:
                    h.close()
            if (
                job_row is not None
                and job_row.terminate_requested_at is not None
                and state not in ("COMPLETED",)
            ) and state != "CANCELED":
                state = "CANCELED"
                jobs.record_event(
                    dag_id_,
                    run_id,
                    "CANCELED",
                    f"terminated at the request of {job_row.terminate_requested_by}",
                )
            if kept:
                jobs.record_event(dag_id_, run_id, None, kept)
            if directory_note:
                jobs.record_event(dag_id_, run_id, None, directory_note)
            if state != "COMPLETED":
                message = job_row.message if job_row is not None and job_row.message else "no job record"
                raise AirflowFailException(f"job {state}: {message}")
            return state

        submit >> finish_task()
    return dag


__all__ = ["JOB_DAG_ID", "create_job_dag"]
