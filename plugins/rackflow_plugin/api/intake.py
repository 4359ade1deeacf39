"""The S3 intakes as the pages see them: each intake's bucket, paused or live, its jobs by status.

Only intakes whose DAG (``s3_intake_<name>``) the caller may read are listed: the same right as
reading that DAG in Airflow. Statuses are read from the bucket itself (the status objects are the
truth of the protocol: a job waiting as ``FILE_UPLOAD`` exists nowhere else), with the intake's own
listing-and-ETag cache so a bucket of finished jobs costs listing pages and no GETs; one bucket read
serves every caller for :data:`FRESH_S` seconds. A bucket job the intake recorded (its job record,
``source: s3``) gets its job id -- only when the caller may see that job, as in the job API -- and,
like its status line, for every reader of the intake its ``FILE_UPLOAD -> QUEUED`` latency: from the
intake run the bucket watcher started when it saw the job ready (the run's ``run_after``: within one
poll interval of the upload) to the job's ``QUEUED`` event.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from rackflow.core.s3_protocol import JobStatus, StatusCache
from rackflow.core.values import as_utc
from rackflow.dag_factories.s3_intake import IntakeConfig, load_intakes
from rackflow.db import jobs as jobs_db
from rackflow_plugin.security import CurrentUser, is_admin, may_read_dag

router = APIRouter(prefix="/intakes", tags=["s3 intake"])

FRESH_S = 5.0
"""Seconds one read of a bucket answers every request."""


class IntakeJobOut(BaseModel):
    prefix: str
    status: str
    scheduler_job_id: str | None = None
    reason: str | None = Field(default=None, description="The status object's third line (why it failed).")
    problem: str | None = Field(default=None, description="Why the status object is unreadable (UNKNOWN).")
    updated_at: datetime | None = Field(default=None, description="When the status object was last written.")
    job_id: str | None = Field(
        default=None, description="Its job in the job API (when the caller may see it)."
    )
    queued_latency_s: float | None = Field(
        default=None, description="Seconds from the watcher seeing it ready (FILE_UPLOAD) to QUEUED."
    )


class IntakeOut(BaseModel):
    name: str
    dag_id: str
    bucket: str
    scheduler: str
    paused: bool | None = Field(description="Whether the intake's DAG is paused (None: not parsed yet).")
    counts: dict[str, int] = Field(description="Jobs by status, every status of the protocol listed.")
    jobs: list[IntakeJobOut] = Field(description="The most recently written jobs first (up to `limit`).")
    total: int
    read_at: datetime | None
    error: str | None = Field(default=None, description="Why the bucket could not be read.")


class IntakeList(BaseModel):
    intakes: list[IntakeOut]


class _Bucket:
    """One intake's status cache and its last read (shared by every request of this process)."""

    def __init__(self, config: IntakeConfig) -> None:
        self.config = config
        self.cache = StatusCache()
        self.lock = threading.Lock()
        self.read_at: datetime | None = None
        self.read_mono = 0.0
        self.error: str | None = None

    def read(self) -> None:
        from rackflow.hooks.s3_jobs import S3JobsHook

        with self.lock:
            if time.monotonic() - self.read_mono < FRESH_S:
                return
            try:
                S3JobsHook(self.config.aws_conn_id, bucket_name=self.config.bucket).poll(self.cache)
                self.error = None
            except Exception as exc:  # an unreachable bucket is shown on the page, not a 500
                self.error = f"{type(exc).__name__}: {exc}"[:500]
            self.read_at = datetime.now(UTC)
            self.read_mono = time.monotonic()


_BUCKETS: dict[tuple[str, str, str], _Bucket] = {}
_BUCKETS_LOCK = threading.Lock()


def _bucket(config: IntakeConfig) -> _Bucket:
    key = (config.name, config.bucket, config.aws_conn_id)
    with _BUCKETS_LOCK:
        if key not in _BUCKETS:
            _BUCKETS[key] = _Bucket(config)
        return _BUCKETS[key]


def _aware(at: Any) -> datetime | None:
    return as_utc(at) if isinstance(at, datetime) else None


@router.get(
    "", response_model=IntakeList, summary="Every S3 intake the caller may read, with its jobs by status"
)
def list_intakes(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=0, le=500, description="Recent jobs listed per intake.")] = 20,
) -> IntakeList:
    from airflow.models.dag import DagModel

    readable = [c for c in load_intakes() if may_read_dag(user, c.dag_id)]
    paused = dict(
        session.execute(
            select(DagModel.dag_id, DagModel.is_paused).where(
                DagModel.dag_id.in_([c.dag_id for c in readable])
            )
        ).all()
    )
    out = []
    for config in readable:
        bucket = _bucket(config)
        bucket.read()
        statuses = bucket.cache.statuses()
        counts = {s.value: 0 for s in JobStatus}
        jobs = []
        for prefix, (status, modified) in statuses.items():
            counts[status.status.value] += 1
            jobs.append(
                IntakeJobOut(
                    prefix=prefix,
                    status=status.status.value,
                    scheduler_job_id=status.scheduler_job_id,
                    reason=status.reason,
                    problem=status.problem,
                    updated_at=_aware(modified),
                )
            )
        jobs.sort(key=lambda j: (j.updated_at or datetime.min.replace(tzinfo=UTC), j.prefix), reverse=True)
        jobs = jobs[:limit]
        _link_records(config, jobs, user, session)
        out.append(
            IntakeOut(
                name=config.name,
                dag_id=config.dag_id,
                bucket=config.bucket,
                scheduler=config.scheduler,
                paused=paused.get(config.dag_id),
                counts=counts,
                jobs=jobs,
                total=len(jobs),
                read_at=bucket.read_at,
                error=bucket.error,
            )
        )
    return IntakeList(intakes=out)


def _link_records(config: IntakeConfig, jobs: list[IntakeJobOut], user: Any, session: Any) -> None:
    """Give each listed bucket job its FILE_UPLOAD -> QUEUED latency from its job record (anyone who
    reads the intake sees it, as the status line), and its job id when ``user`` may see that job."""
    from airflow.models.dagrun import DagRun

    if not jobs:
        return
    latest: dict[str, Any] = {}
    for row in jobs_db.visible_s3_jobs(None, admin=True):  # newest first: a re-used prefix keeps its latest
        if row.dag_id == config.dag_id and row.s3_bucket == config.bucket:
            latest.setdefault(str(row.s3_prefix), row)
    wanted = {j.prefix: latest[j.prefix] for j in jobs if j.prefix in latest}
    run_ids = {row.dag_run_id for row in wanted.values() if row.dag_run_id}
    query = select(DagRun.run_id, DagRun.run_after).where(
        DagRun.dag_id == config.dag_id, DagRun.run_id.in_(run_ids)
    )
    ready_at = {run_id: _aware(at) for run_id, at in session.execute(query).all()}
    admin = is_admin(user)
    for job in jobs:
        found = wanted.get(job.prefix)
        if found is None:
            continue
        if admin or jobs_db.may_see_s3_job(found, user.get_name()):
            job.job_id = found.run_id
        queued = next((e.at for e in jobs_db.events(found.dag_id, found.run_id) if e.state == "QUEUED"), None)
        seen = ready_at.get(found.dag_run_id or "")
        if queued is not None and seen is not None:
            job.queued_latency_s = round((_aware(queued) - seen).total_seconds(), 3)  # type: ignore[operator]
