"""The S3 job intake DAGs: one ``s3_intake_<name>`` per configured bucket, replacing aws-jobmanager's cron.

Event-driven: the DAG is scheduled on an asset ``s3://<bucket>/`` whose
:class:`~airflow.sdk.AssetWatcher` runs :class:`~rackflow.triggers.s3_job_status.S3JobsReadyEventTrigger`
in the triggerer. The trigger polls the bucket every ``poll_interval`` seconds (listing pages, a GET only
for a changed status object) and each time jobs become ready (``FILE_UPLOAD``) a run starts::

    accept (claim -> stage-in -> submit, every announced job) -> wait (mapped: one per job)

``accept`` is one task per run, whatever the number of jobs: every Airflow task start costs about a
second, and a burst of 100 jobs is submitted in the time of one. It takes the jobs the run's events
announced (a manual run: every ready job) -- a claim is a conditional write on the ``FILE_UPLOAD`` the
watcher read, so a job another run claimed meanwhile is simply lost here -- and records each in the job
record (``rackflow_job``, where the job API lists it); each step still writes its status
(``ACCEPTED``, ``QUEUED``) and fails its job alone with its own reason. A retried ``accept`` goes on
from the record: nothing claimed is lost, nothing submitted twice (a submit finds its job by name; a
claim a killed try made but had not recorded is found by the job key the claim stored with it; a
manual run's retry looks at every job that reads ``ACCEPTED`` for it).
Nothing runs while the bucket is idle.

``wait`` is mapped over the submitted jobs (Airflow shows one task instance per job, labelled with
its prefix) and starts in the triggerer (``start_from_trigger``): it takes a worker only once, when
the job has ended, to stage out its results and write its final status.

Pausing the DAG stops the intake (as removing the cron job does for the shell version): a paused DAG
gets no runs (its watcher stops with the next parse of the DAG file), so a job that is ready stays
``FILE_UPLOAD``; after unpausing, the watcher's first poll sees it and it is claimed -- once, because
every claim is a conditional write.

The ``wait`` task waits on the cluster's shared poller (one status query per cluster and interval for
all waiting jobs, the job API's included); ``RUNNING`` (and ``ACTIVE`` in the job record) is written
from the triggerer, and so is a termination asked through the job API (the scheduler job is cancelled;
the task then stages out and writes ``CANCELED``). It has retries: a try lost for a reason that is not
the job's own (its process lost, a stale executor event, a worker restart) re-attaches to the same
scheduler job. Clearing a failed ``wait`` (``clearTaskInstances``) starts it again at that stage: it
re-attaches to the job, or stages out and finishes a job that has ended, with no second submission.

Killing the ``wait`` task (mark failed/clear, deferred or not) cancels a live scheduler job and writes
``CANCELED``; a per-job task that fails without ending its job (a crash, a lost worker) gets ``FAILED``
with the reason from the DAG's ``on_failure_callback`` -- except a ``wait`` whose job still runs: that
job is neither cancelled nor marked, and clearing the ``wait`` task re-attaches to it. Nothing
overwrites a terminal status or resubmits anything.

Configuration: a YAML file (``[rackflow] s3_intake_file``, default ``s3_intake.yaml`` under
AIRFLOW_HOME)::

    intakes:
      - name: fleet                 # DAG id s3_intake_fleet
        bucket: rackflow-jobs
        aws_conn_id: aws_fleet_s3
        run_as: rf-intake           # the unprivileged Unix account its jobs run as (required)
        job_base_dir: /var/lib/rackflow/s3-jobs  # job directories: <job_base_dir>/<prefix> (mode 0700,
                                    # owned by run_as) on the execution host; the base must not be
                                    # group/world-writable and must let run_as through (0711)
        scheduler: slurm
        ssh_conn_id: login1         # execution host: this login node over SSH/SFTP (omit: this host);
                                    # ~ is the remote user's home, scheduler commands run there too
        scheduler_env:              # extra environment of the scheduler commands (optional)
          SLURM_CONF: /etc/slurm/slurm.conf
        poll_interval: 1            # seconds between bucket polls
        visible_to: [alice]         # users besides admins who see its jobs in the job API (optional;
                                    # the jobs' owner is run_as)

Without the file, one intake ``rackflow_jobs`` reads bucket ``rackflow-jobs`` on ``aws_fleet_s3`` (the
demo fleet's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

DEFAULT_INTAKES: list[dict[str, Any]] = [
    {"name": "rackflow_jobs", "bucket": "rackflow-jobs", "aws_conn_id": "aws_fleet_s3", "run_as": "rf-intake"}
]
DEFAULT_JOB_BASE_DIR = "/var/lib/rackflow/s3-jobs"
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,100}$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,250}$")


@dataclass(frozen=True)
class IntakeConfig:
    """One intake bucket and how it is served."""

    name: str
    bucket: str
    aws_conn_id: str = "aws_default"
    # The Unix account the intake's jobs run as (never the service account): required.
    run_as: str = ""
    job_base_dir: str = DEFAULT_JOB_BASE_DIR
    scheduler: str = "slurm"
    # Execution host: None stages, submits and stages out here; an SSH connection id does it all on
    # that login node (files over SFTP, scheduler commands over SSH).
    ssh_conn_id: str | None = None
    scheduler_env: dict[str, str] = field(default_factory=dict, hash=False)
    poll_interval: float = 1.0
    scheduler_poll_interval: float = 5.0
    max_active_runs: int = 16
    max_jobs_per_run: int = 100
    # Users besides admins who see the intake's jobs in the job API (the owner is run_as).
    visible_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"intake name {self.name!r}: letters, digits and '_' only")
        if not self.run_as:
            raise ValueError(f"intake {self.name}: run_as (the Unix account its jobs run as) is required")
        from rackflow.hooks.scheduler import check_account

        try:
            check_account(self.run_as)
        except ValueError as exc:
            raise ValueError(f"intake {self.name}: run_as: {exc}") from exc
        if self.poll_interval <= 0 or self.scheduler_poll_interval <= 0:
            raise ValueError(f"intake {self.name}: poll intervals must be positive")
        viewers = self.visible_to or ()
        if isinstance(viewers, str) or not all(isinstance(v, str) and _USER_RE.match(v) for v in viewers):
            raise ValueError(f"intake {self.name}: visible_to must be a list of user names")
        object.__setattr__(self, "visible_to", tuple(viewers))
        # YAML gives None for an empty key; the DAG wants "no SSH" and "no extra environment".
        object.__setattr__(self, "ssh_conn_id", self.ssh_conn_id or None)
        object.__setattr__(
            self, "scheduler_env", {str(k): str(v) for k, v in (self.scheduler_env or {}).items()}
        )

    @property
    def dag_id(self) -> str:
        return f"s3_intake_{self.name}"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IntakeConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"intake {raw.get('name')!r}: unknown keys {sorted(unknown)}")
        return cls(**raw)


def intake_file() -> Path:
    from rackflow import settings

    return Path(settings._get("s3_intake_file", str(settings.airflow_home() / "s3_intake.yaml")))


def load_intakes(path: Path | None = None) -> list[IntakeConfig]:
    """The configured intakes (the demo's default when the file does not exist)."""
    path = path or intake_file()
    if not path.exists():
        return [IntakeConfig.from_dict(d) for d in DEFAULT_INTAKES]
    data = yaml.safe_load(path.read_text()) or {}
    return [IntakeConfig.from_dict(d) for d in data.get("intakes", [])]


def build_s3_intake_dag(config: IntakeConfig) -> Any:
    """The intake DAG for one bucket."""
    from airflow.sdk import DAG, Asset, AssetWatcher, get_current_context, task

    from rackflow.core.s3_protocol import StatusCache
    from rackflow.hooks.s3_jobs import S3JobsHook
    from rackflow.hooks.scheduler import BatchSchedulerHook
    from rackflow.operators.s3_intake import (
        ACCEPT_RETRIES,
        ACCEPT_TASK_ID,
        WAIT_TASK_ID,
        IntakeRun,
        S3JobWaitOperator,
        accept_jobs,
        job_task_failed,
    )
    from rackflow.operators.scheduler import WAIT_RETRIES, WAIT_RETRY_DELAY
    from rackflow.sensors.s3_job_status import announced_ready_jobs
    from rackflow.triggers.s3_job_status import S3JobsReadyEventTrigger

    def hook() -> S3JobsHook:
        return S3JobsHook(config.aws_conn_id, bucket_name=config.bucket)

    bucket_asset = Asset(
        name=config.dag_id,
        uri=f"s3://{config.bucket}/",
        watchers=[
            AssetWatcher(
                name=f"{config.dag_id}_ready_jobs",
                trigger=S3JobsReadyEventTrigger(
                    bucket_name=config.bucket,
                    aws_conn_id=config.aws_conn_id,
                    poll_interval=config.poll_interval,
                ),
            )
        ],
    )

    with DAG(
        dag_id=config.dag_id,
        description=f"Take jobs from s3://{config.bucket} to {config.scheduler} and back",
        schedule=[bucket_asset],
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=config.max_active_runs,
        # A task that fails for good without ending its jobs (crash, lost worker) writes FAILED for them.
        default_args={
            "retries": 0,
            "on_failure_callback": job_task_failed(
                config.bucket,
                config.aws_conn_id,
                config.scheduler,
                config.ssh_conn_id,
                config.scheduler_env,
                config.run_as,
            ),
        },
        tags=["rackflow", "s3-intake"],
        doc_md=__doc__,
    ) as dag:

        @task(task_id=ACCEPT_TASK_ID, retries=ACCEPT_RETRIES, retry_delay=WAIT_RETRY_DELAY)
        def accept() -> list[dict[str, Any]]:
            """Claim, stage in and submit the jobs announced to this run (a manual run: every ready job)."""
            context = get_current_context()
            s3 = hook()
            ready = announced_ready_jobs(context)
            recheck: list[str] = []
            if ready is None:  # a manual run: every ready job; a retry also looks for its own claims
                polled = s3.poll(StatusCache())
                ready = [job.to_dict() for job in polled.ready]
                if context["ti"].try_number > 1:
                    recheck = polled.accepted
            scheduler = BatchSchedulerHook(
                scheduler=config.scheduler, scheduler_env=config.scheduler_env, ssh_conn_id=config.ssh_conn_id
            )
            run = IntakeRun(
                dag_id=config.dag_id,
                run_id=context["run_id"],
                run_as=config.run_as,
                base_dir=config.job_base_dir,
                viewers=config.visible_to,
                ssh_conn_id=config.ssh_conn_id,
            )
            try:
                return accept_jobs(s3, ready[: config.max_jobs_per_run], scheduler, run, recheck)
            finally:
                scheduler.close()

        S3JobWaitOperator.partial(
            task_id=WAIT_TASK_ID,
            bucket_name=config.bucket,
            aws_conn_id=config.aws_conn_id,
            scheduler=config.scheduler,
            ssh_conn_id=config.ssh_conn_id,
            scheduler_env=config.scheduler_env,
            poll_interval=config.scheduler_poll_interval,
            deferrable=True,
            # Starts in the triggerer: no worker until the job has ended and its results go back.
            start_from_trigger=True,
            start_trigger_args=S3JobWaitOperator.start_args(
                accept_task_id=ACCEPT_TASK_ID,
                dag_id=config.dag_id,
                bucket_name=config.bucket,
                aws_conn_id=config.aws_conn_id,
                scheduler=config.scheduler,
                ssh_conn_id=config.ssh_conn_id,
                scheduler_env=config.scheduler_env,
                poll_interval=config.scheduler_poll_interval,
            ),
            map_index_template="{{ task.job['prefix'] }}",
            # a lost try re-attaches to the submitted job (accept's result), never resubmits
            retries=WAIT_RETRIES,
            retry_delay=WAIT_RETRY_DELAY,
        ).expand(job=accept())
    return dag


def build_all(path: Path | None = None) -> dict[str, Any]:
    """``{dag_id: DAG}`` for every configured intake (a DAG file puts them in its globals)."""
    return {c.dag_id: build_s3_intake_dag(c) for c in load_intakes(path)}
