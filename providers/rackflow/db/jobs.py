"""Batch job records in the rackflow database: job rows, chronological events, termination claims.

Written by the job DAG's tasks (worker), the scheduler trigger (triggerer) and the job API (API
server); each call is one short transaction. "First one wins" steps (a termination request, the one
cancel command) are conditional UPDATEs, so concurrent callers cannot both act.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from rackflow.db.models import Job, JobEvent, JobOutput
from rackflow.db.session import session_scope

FINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EventOut:
    at: datetime
    state: str
    message: str
    scheduler_job_id: str | None
    node: str | None


@dataclass(frozen=True)
class JobIdentity:
    """Who a job belongs to and where it lives on the scheduler side, fixed when it is first recorded."""

    owner: str | None
    account: str | None
    job_name: str
    workdir: str


class JobOwnerMismatch(RuntimeError):
    """The job record belongs to another user than the run now asking for it."""


def new_job_name() -> str:
    """A scheduler job name no user chooses: ``rf-<uuid4 hex>`` (also the job directory's name)."""
    return f"rf-{uuid.uuid4().hex}"


def job_identity(
    dag_id: str,
    run_id: str,
    *,
    owner: str | None,
    jobs_directory: str,
    account: str | None = None,
    job_name: str | None = None,
    workdir: str | None = None,
    url: str | None = None,
) -> JobIdentity:
    """The job's owner, account, scheduler job name and directory; the first caller fixes them.

    The name is :func:`new_job_name` (or ``job_name``, chosen by a DAG author), the directory
    ``<jobs_directory>/<name>`` (or ``workdir``); every later call -- a retried or cleared stage --
    gets the same ones, so a resubmission finds the job it submitted. Raises
    :class:`JobOwnerMismatch` when the record was made for another owner (e.g. a deleted run's id
    reused by someone else).
    """
    ensure_job(dag_id, run_id, url=url)
    name = job_name or new_job_name()
    directory = workdir or str(PurePosixPath(jobs_directory) / name)
    where = (Job.dag_id == dag_id, Job.run_id == run_id)
    with session_scope(url) as session:
        session.execute(
            update(Job).where(*where, Job.job_name.is_(None)).values(job_name=name, workdir=directory)
        )
        if owner is not None:
            session.execute(update(Job).where(*where, Job.owner.is_(None)).values(owner=owner))
        if account is not None:
            session.execute(update(Job).where(*where, Job.account.is_(None)).values(account=account))
    row = get_job(dag_id, run_id, url=url)
    assert row is not None and row.job_name is not None and row.workdir is not None
    if owner is not None and row.owner != owner:
        raise JobOwnerMismatch(
            f"job record {dag_id}/{run_id} belongs to {row.owner!r}, not {owner!r}: not touching it"
        )
    return JobIdentity(row.owner, row.account, row.job_name, row.workdir)


def ensure_job(dag_id: str, run_id: str, *, url: str | None = None, **fields: Any) -> None:
    """Create the job row if missing; set ``fields`` that are not None on it."""
    values = {k: v for k, v in fields.items() if v is not None}
    try:
        with session_scope(url) as session:
            job = session.get(Job, (dag_id, run_id))
            if job is None:
                session.add(Job(dag_id=dag_id, run_id=run_id, state=values.pop("state", "QUEUED"), **values))
                return
            for key, value in values.items():
                setattr(job, key, value)
    except IntegrityError:  # created concurrently: update it
        if values:
            with session_scope(url) as session:
                session.execute(
                    update(Job).where(Job.dag_id == dag_id, Job.run_id == run_id).values(**values)
                )


def get_job(dag_id: str, run_id: str, *, url: str | None = None) -> Job | None:
    with session_scope(url) as session:
        return session.get(Job, (dag_id, run_id))


def get_jobs(dag_id: str, run_ids: Iterable[str], *, url: str | None = None) -> dict[str, Job]:
    ids = list(run_ids)
    if not ids:
        return {}
    with session_scope(url) as session:
        rows = session.scalars(select(Job).where(Job.dag_id == dag_id, Job.run_id.in_(ids))).all()
        return {row.run_id: row for row in rows}


def record_event(
    dag_id: str,
    run_id: str,
    state: str | None,
    message: str,
    *,
    scheduler_job_id: str | None = None,
    node: str | None = None,
    at: datetime | None = None,
    url: str | None = None,
    **job_fields: Any,
) -> None:
    """Append one event and move the job row to ``state`` (plus any ``job_fields``).

    ``state=None`` notes something without a state change: the event carries the job's current state.
    A final state also becomes the job's ``message``.
    """
    if state in FINAL_STATES:
        job_fields.setdefault("message", message)
    ensure_job(dag_id, run_id, url=url, state=state, scheduler_job_id=scheduler_job_id, **job_fields)
    with session_scope(url) as session:
        if state is None:
            job = session.get(Job, (dag_id, run_id))
            state = job.state if job is not None else "QUEUED"
        if at is not None:
            # A time the scheduler reported (whole seconds) never goes before what was already recorded.
            last = session.scalar(
                select(JobEvent.at)
                .where(JobEvent.dag_id == dag_id, JobEvent.run_id == run_id)
                .order_by(JobEvent.at.desc())
                .limit(1)
            )
            if last is not None and last > at:
                at = last
        session.add(
            JobEvent(
                dag_id=dag_id,
                run_id=run_id,
                at=at or _now(),
                state=state,
                message=message,
                scheduler_job_id=scheduler_job_id,
                node=node,
            )
        )


def events(dag_id: str, run_id: str, *, url: str | None = None) -> list[EventOut]:
    """The job's events, oldest first (ties in insertion order)."""
    with session_scope(url) as session:
        rows = session.scalars(
            select(JobEvent)
            .where(JobEvent.dag_id == dag_id, JobEvent.run_id == run_id)
            .order_by(JobEvent.at, JobEvent.id)
        ).all()
        return [EventOut(r.at, r.state, r.message, r.scheduler_job_id, r.node) for r in rows]


def states_seen(dag_id: str, run_id: str, *, url: str | None = None) -> list[str]:
    """Event states in order with repeats collapsed: ``["QUEUED", "ACTIVE", "FAILED"]``."""
    seen: list[str] = []
    for event in events(dag_id, run_id, url=url):
        if not seen or seen[-1] != event.state:
            seen.append(event.state)
    return seen


def request_termination(dag_id: str, run_id: str, user: str, *, url: str | None = None) -> bool:
    """Mark the job for termination; True only for the first request (later ones change nothing)."""
    ensure_job(dag_id, run_id, url=url)
    with session_scope(url) as session:
        result = session.execute(
            update(Job)
            .where(Job.dag_id == dag_id, Job.run_id == run_id, Job.terminate_requested_at.is_(None))
            .values(terminate_requested_at=_now(), terminate_requested_by=user)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def termination_requested(dag_id: str, run_id: str, *, url: str | None = None) -> str | None:
    """Who asked to terminate the job, or None."""
    job = get_job(dag_id, run_id, url=url)
    if job is None or job.terminate_requested_at is None:
        return None
    return job.terminate_requested_by or "unknown"


def claim_cancel(dag_id: str, run_id: str, *, url: str | None = None) -> bool:
    """True for exactly one caller: the one that runs the scheduler's cancel command."""
    ensure_job(dag_id, run_id, url=url)
    with session_scope(url) as session:
        result = session.execute(
            update(Job)
            .where(Job.dag_id == dag_id, Job.run_id == run_id, Job.cancel_issued_at.is_(None))
            .values(cancel_issued_at=_now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def pending_terminations(keys: Iterable[tuple[str, str]], *, url: str | None = None) -> set[tuple[str, str]]:
    """Of ``(dag_id, run_id)`` keys, those asked to terminate whose cancel was not issued yet (one query)."""
    keys = list(keys)
    if not keys:
        return set()
    with session_scope(url) as session:
        rows = session.execute(
            select(Job.dag_id, Job.run_id).where(
                or_(*(and_(Job.dag_id == d, Job.run_id == r) for d, r in keys)),
                Job.terminate_requested_at.is_not(None),
                Job.cancel_issued_at.is_(None),
            )
        ).all()
        return {(d, r) for d, r in rows}


STREAMS = ("stdout", "stderr")


def save_output(
    dag_id: str,
    run_id: str,
    stream: str,
    *,
    content: bytes,
    size: int | None,
    truncated: bool,
    path: str | None,
    note: str | None = None,
    url: str | None = None,
) -> None:
    """Keep one stream's tail (replacing an earlier copy, e.g. of a cleared cleanup)."""
    with session_scope(url) as session:
        session.merge(
            JobOutput(
                dag_id=dag_id,
                run_id=run_id,
                stream=stream,
                content=content,
                size=size,
                truncated=truncated,
                path=path,
                note=note,
                captured_at=_now(),
            )
        )


def get_output(dag_id: str, run_id: str, stream: str, *, url: str | None = None) -> JobOutput | None:
    """The kept copy of a job's ``stdout`` or ``stderr``; None when none was kept (yet)."""
    with session_scope(url) as session:
        return session.get(JobOutput, (dag_id, run_id, stream))


def keep_workdir_until(dag_id: str, run_id: str, at: datetime, *, url: str | None = None) -> None:
    """Note that the job's directory stays until ``at`` (``[rackflow] job_directory_retention``)."""
    with session_scope(url) as session:
        session.execute(
            update(Job).where(Job.dag_id == dag_id, Job.run_id == run_id).values(workdir_remove_after=at)
        )


def workdir_removed(dag_id: str, run_id: str, *, url: str | None = None) -> None:
    with session_scope(url) as session:
        session.execute(
            update(Job)
            .where(Job.dag_id == dag_id, Job.run_id == run_id)
            .values(workdir_removed_at=_now(), workdir_remove_after=None)
        )


def expired_workdirs(
    dag_id: str, *, now: datetime | None = None, limit: int = 50, url: str | None = None
) -> list[tuple[str, str]]:
    """``(run_id, workdir)`` of the DAG's kept job directories whose retention has run out, oldest first."""
    with session_scope(url) as session:
        rows = session.execute(
            select(Job.run_id, Job.workdir)
            .where(
                Job.dag_id == dag_id,
                Job.workdir.is_not(None),
                Job.workdir_removed_at.is_(None),
                Job.workdir_remove_after.is_not(None),
                Job.workdir_remove_after <= (now or _now()),
            )
            .order_by(Job.workdir_remove_after)
            .limit(limit)
        ).all()
        return [(r, w) for r, w in rows if w]


# -- S3 intake jobs ----------------------------------------------------------------------------------
# One intake DAG run carries many S3 jobs: each has its own row, keyed by the intake DAG and its job
# key (kept in ``run_id``), with ``dag_run_id`` the run carrying it. Everything keyed by
# ``(dag_id, run_id)`` above (events, termination, the cancel claim, the cluster poller) works on it.

S3_SOURCE = "s3"


def record_s3_job(
    dag_id: str,
    job_key: str,
    *,
    dag_run_id: str,
    bucket: str,
    prefix: str,
    owner: str,
    account: str,
    viewers: Iterable[str] = (),
    scheduler: str | None = None,
    cluster: str | None = None,
    workdir: str | None = None,
    url: str | None = None,
) -> None:
    """Record an S3 job this run claimed (state ``NEW``, one event); a second call changes nothing."""
    if get_job(dag_id, job_key, url=url) is not None:
        return
    ensure_job(
        dag_id,
        job_key,
        url=url,
        state="NEW",
        source=S3_SOURCE,
        dag_run_id=dag_run_id,
        s3_bucket=bucket,
        s3_prefix=prefix,
        owner=owner,
        account=account,
        viewers=",".join(viewers) or None,
        scheduler=scheduler,
        cluster=cluster,
        job_name=job_key,
        workdir=workdir,
    )
    record_event(dag_id, job_key, "NEW", f"claimed s3://{bucket}/{prefix} (ACCEPTED)", url=url)


def s3_job_staged(dag_id: str, job_key: str, staged: dict[str, Any], *, url: str | None = None) -> None:
    """Keep what the S3 job's stage-in left (job directory, manifest): a retried accept submits from it."""
    import json

    ensure_job(dag_id, job_key, url=url, s3_staged=json.dumps(staged), workdir=staged.get("job_dir"))


def s3_jobs_of_run(dag_id: str, dag_run_id: str, *, url: str | None = None) -> list[Job]:
    """The S3 jobs one intake run claimed, by prefix."""
    with session_scope(url) as session:
        return list(
            session.scalars(
                select(Job)
                .where(Job.dag_id == dag_id, Job.dag_run_id == dag_run_id, Job.source == S3_SOURCE)
                .order_by(Job.s3_prefix)
            ).all()
        )


def s3_job_by_key(job_key: str, *, url: str | None = None) -> Job | None:
    """The S3 job with key ``job_key`` (keys are unique across intakes: they carry a digest of the
    bucket, prefix and claim)."""
    with session_scope(url) as session:
        return session.scalars(
            select(Job).where(Job.run_id == job_key, Job.source == S3_SOURCE).limit(1)
        ).first()


def visible_s3_jobs(user: str | None, *, admin: bool, url: str | None = None) -> list[Job]:
    """S3 jobs ``user`` may see, newest first: every one for an admin; otherwise those it owns or its
    intake names it in (``visible_to``)."""
    with session_scope(url) as session:
        rows = session.scalars(
            select(Job).where(Job.source == S3_SOURCE).order_by(Job.created_at.desc())
        ).all()
    return [row for row in rows if admin or may_see_s3_job(row, user)]


def may_see_s3_job(row: Job, user: str | None) -> bool:
    """Whether a non-admin ``user`` may see the S3 job ``row`` (owner, or named by its intake)."""
    return user is not None and (row.owner == user or user in (row.viewers or "").split(","))


__all__ = [
    "FINAL_STATES",
    "S3_SOURCE",
    "STREAMS",
    "EventOut",
    "JobIdentity",
    "JobOwnerMismatch",
    "claim_cancel",
    "ensure_job",
    "events",
    "expired_workdirs",
    "get_job",
    "get_jobs",
    "get_output",
    "job_identity",
    "keep_workdir_until",
    "may_see_s3_job",
    "new_job_name",
    "pending_terminations",
    "record_event",
    "record_s3_job",
    "request_termination",
    "s3_job_by_key",
    "s3_job_staged",
    "s3_jobs_of_run",
    "save_output",
    "states_seen",
    "termination_requested",
    "visible_s3_jobs",
    "workdir_removed",
]
