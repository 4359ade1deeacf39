"""The job API: submit a batch job, list and follow your jobs, terminate one.

A job is a run of the ``rackflow_job`` DAG: its id is the run id and its owner the run's triggering
user. Owners see their own jobs, admins see all; anyone else's job is 404 (its existence is not
revealed). Submitting and terminating need the job API's right to POST, reading its right to GET (the
custom view ``Rackflow Jobs``, see :mod:`rackflow_plugin.security`); the run is then triggered on the
user's behalf through Airflow's REST API (:mod:`rackflow_plugin.runs`), so the user needs no right on
the DAG itself.
Termination is asynchronous and idempotent: the first request marks the job, the DAG's stages and
the scheduler trigger act on it (one cancel command), later requests change nothing and say so.

Jobs the S3 intake took are listed here too (``source: s3``; their id is the job key the intake
recorded): owned by the intake's ``run_as`` account and visible to admins and to the users the intake
names (``visible_to``), who may also terminate them -- the cluster poller cancels the scheduler job and
the bucket's status object ends ``CANCELED``. Their results are in their bucket, not in ``/output``.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.models.dagrun import DagRun
from fastapi import APIRouter, Body, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select

from rackflow import settings
from rackflow.core.jobspec import JobDescription, JobDescriptionError, parse_job_description
from rackflow.dag_factories.job import JOB_DAG_ID
from rackflow.db import jobs as jobs_db
from rackflow.services.staging import check_staging
from rackflow_plugin.limits import JSON_MEDIA_TYPE, LINE_PATTERN, XML_MEDIA_TYPES, PathName
from rackflow_plugin.runs import trigger_run
from rackflow_plugin.security import CurrentUser, can_use_jobs, is_admin

router = APIRouter(prefix="/jobs", tags=["jobs"])

FINISHED_RUN_STATES = ("success", "failed")
MAX_REASON = 500
"""Characters of a termination reason (recorded in the job's events)."""


class JobSubmitted(BaseModel):
    job_id: str = Field(description="The job id (the rackflow_job DAG run id).")
    state: str
    owner: str


class JobEventOut(BaseModel):
    time: datetime
    state: str
    message: str
    scheduler_job_id: str | None = None
    node: str | None = None


class JobProperties(BaseModel):
    scheduler: str | None = None
    scheduler_job_id: str | None = None
    exit_code: int | None = None
    cpu_time: int | None = Field(default=None, description="Seconds of CPU, where the scheduler reports it.")
    wall_time: int | None = Field(default=None, description="Seconds from start to end.")
    max_memory: int | None = Field(default=None, description="Peak memory in bytes, where reported.")
    nodes: list[str] = []
    workdir: str | None = None


class StagingOut(BaseModel):
    source: str
    target: str


class JobOut(BaseModel):
    job_id: str
    owner: str | None
    state: str = Field(
        description="PSI/J state: QUEUED, ACTIVE, COMPLETED, FAILED or CANCELED (NEW: an S3 job claimed, "
        "not yet submitted)."
    )
    source: Literal["api", "s3"] = Field(
        default="api", description="What brought the job: this API (a rackflow_job run) or the S3 intake."
    )
    origin: str | None = Field(default=None, description="Where an S3 job came from: s3://bucket/prefix.")
    message: str | None = None
    submitted_at: datetime | None = None
    run_state: str | None = Field(default=None, description="The Airflow DAG run's state.")
    terminate_requested_by: str | None = None
    properties: JobProperties = JobProperties()
    events: list[JobEventOut] = []
    stage_in: list[StagingOut] = Field(default=[], description="One job's view only: what is copied in.")
    stage_out: list[StagingOut] = Field(default=[], description="One job's view only: what is copied out.")


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int


class JobOutputOut(BaseModel):
    job_id: str
    stream: Literal["stdout", "stderr"]
    content: str = Field(description="The kept text (UTF-8; undecodable bytes as U+FFFD).")
    truncated: bool = Field(
        description="True when content is not the whole stream: the file was longer than the kept "
        "tail ([rackflow] job_output_tail_size), or `tail` cut it."
    )
    size: int | None = Field(default=None, description="Bytes the stream's file had when the job ended.")
    path: str | None = Field(default=None, description="The file, relative to the job directory.")
    note: str | None = Field(default=None, description="Why nothing was kept (no file, a symlink...).")


class TerminateOut(BaseModel):
    job_id: str
    state: str
    acted: bool = Field(description="True only for the request that started the termination.")
    message: str


def job_state(run_state: str | None, row: Any) -> str:
    """The job's PSI/J state from its record and its DAG run's state."""
    if row is not None and row.state in jobs_db.FINAL_STATES:
        return str(row.state)
    if run_state == "success":
        return "COMPLETED"
    if run_state == "failed":
        return "CANCELED" if row is not None and row.terminate_requested_at is not None else "FAILED"
    return str(row.state) if row is not None else "QUEUED"


def _properties(row: Any) -> JobProperties:
    """What the scheduler side recorded of a job (either front door's): its scheduler job, exit code,
    usage and nodes."""
    return JobProperties(
        scheduler=row.scheduler,
        scheduler_job_id=row.scheduler_job_id,
        exit_code=row.exit_code,
        cpu_time=row.cpu_time_s,
        wall_time=row.wall_time_s,
        max_memory=row.max_memory,
        nodes=[n for n in (row.nodes or "").split(",") if n],
        workdir=row.workdir,
    )


def _out(run: DagRun, row: Any, with_events: bool = False) -> JobOut:
    props = _properties(row) if row is not None else JobProperties()
    events = []
    staging: dict[str, list[StagingOut]] = {}
    if with_events:
        job = (run.conf or {}).get("job") or {}
        staging = {
            key: [
                StagingOut(source=str(e.get("source")), target=str(e.get("target")))
                for e in job.get(key) or []
            ]
            for key in ("stage_in", "stage_out")
        }
        events = [
            JobEventOut(
                time=e.at, state=e.state, message=e.message, scheduler_job_id=e.scheduler_job_id, node=e.node
            )
            for e in jobs_db.events(JOB_DAG_ID, run.run_id)
        ]
    return JobOut(
        job_id=run.run_id,
        owner=run.triggering_user_name,
        state=job_state(run.state, row),
        message=row.message if row is not None else None,
        submitted_at=run.run_after or run.start_date,
        run_state=run.state,
        terminate_requested_by=row.terminate_requested_by if row is not None else None,
        properties=props,
        events=events,
        stage_in=staging.get("stage_in", []),
        stage_out=staging.get("stage_out", []),
    )


def own_run(job_id: str, user: Any, session: Any) -> DagRun:
    """The run of job ``job_id`` if ``user`` owns it or is an admin; 404 otherwise (never 403)."""
    run = session.scalar(select(DagRun).where(DagRun.dag_id == JOB_DAG_ID, DagRun.run_id == job_id))
    if run is None or (run.triggering_user_name != user.get_name() and not is_admin(user)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return run


def _s3_out(row: Any, with_events: bool = False) -> JobOut:
    """An S3 intake job from its record (its state is the record's: no DAG run is its own)."""
    events = []
    if with_events:
        events = [
            JobEventOut(
                time=e.at, state=e.state, message=e.message, scheduler_job_id=e.scheduler_job_id, node=e.node
            )
            for e in jobs_db.events(row.dag_id, row.run_id)
        ]
    return JobOut(
        job_id=row.run_id,
        owner=row.owner,
        state=str(row.state),
        source="s3",
        origin=f"s3://{row.s3_bucket}/{row.s3_prefix}",
        message=row.message,
        submitted_at=row.created_at,
        terminate_requested_by=row.terminate_requested_by,
        properties=_properties(row),
        events=events,
    )


def _visible_s3_job(job_id: str, user: Any) -> Any:
    """The S3 job ``job_id`` if ``user`` is an admin, owns it or is named by its intake; else None."""
    row = jobs_db.s3_job_by_key(job_id)
    if row is None or not (is_admin(user) or jobs_db.may_see_s3_job(row, user.get_name())):
        return None
    return row


def _find_job(job_id: str, user: Any, session: Any) -> tuple[DagRun | None, Any]:
    """``(run, None)`` for a job API job, ``(None, row)`` for a visible S3 job; 404 otherwise."""
    try:
        return own_run(job_id, user, session), None
    except HTTPException:
        row = _visible_s3_job(job_id, user)
        if row is None:
            raise
        return None, row


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobSubmitted,
    summary="Submit a job",
    description="Body: a job description (PSI/J JobSpec JSON with stage_in/stage_out), or JSDL 1.0 XML "
    "with the HPC Profile Application extension (Content-Type application/xml). An invalid description, "
    "or staging the site does not allow (see the README's staging allow-lists), is refused with 400 "
    "naming each field, and no job is recorded.",
    responses={
        400: {"description": "Invalid job description"},
        403: {"description": "Not allowed, or no job account is mapped for the user"},
    },
    dependencies=[can_use_jobs("POST")],  # type: ignore[list-item]
    # The media types declared here are the ones the request limits let through (others: 415).
    openapi_extra={
        "requestBody": {
            "content": {
                JSON_MEDIA_TYPE: {"schema": JobDescription.param_schema()},
                **{xml: {"schema": {"type": "string"}} for xml in XML_MEDIA_TYPES},
            },
            "required": True,
        }
    },
)
async def submit_job(request: Request, user: CurrentUser, session: SessionDep) -> JobSubmitted:
    # The body is already bounded (size, media type, JSON depth) by the app's RequestLimits.
    raw = (await request.body()).decode("utf-8", "replace")
    # Everything else touches the metadata DB synchronously: never on the event loop (a SQLite lock
    # wait there would stall every request of the API server).
    return await run_in_threadpool(_submit, raw, request, user, session)


def require_job_account(user: Any) -> None:
    """403 naming ``[rackflow] job_accounts`` when ``user`` has no Unix account to run jobs as."""
    if settings.job_account(user.get_name()) is None:  # jobs never run as the service account
        raise HTTPException(status.HTTP_403_FORBIDDEN, settings.missing_job_account(user.get_name()))


def trigger_job(
    job: JobDescription,
    user: Any,
    *,
    prefix: str = "job",
    extra_conf: dict[str, Any] | None = None,
) -> str:
    """Start a run of the job DAG for ``job`` (already validated and staging-checked) on ``user``'s
    behalf; its id is ``<prefix>__<time>__<random>``. ``extra_conf`` rides along in the run's conf."""
    run_id = f"{prefix}__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}__{uuid.uuid4().hex[:12]}"
    trigger_run(JOB_DAG_ID, run_id, {**(extra_conf or {}), "job": job.to_dict()}, user)
    return run_id


def _submit(raw: str, request: Request, user: Any, session: Any) -> JobSubmitted:
    require_job_account(user)
    try:
        if "xml" not in request.headers.get("content-type", ""):
            try:
                data: Any = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not JSON: {exc}") from exc
            if isinstance(data, dict) and set(data) == {"job"}:
                data = data["job"]  # also accept the DAG's own conf shape
            job = parse_job_description(data)
        else:
            job = parse_job_description(raw)
        check_staging(job)
    except JobDescriptionError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, {"message": str(exc), "problems": exc.problems}
        ) from exc
    run_id = trigger_job(job, user)
    return JobSubmitted(job_id=run_id, state="QUEUED", owner=user.get_name())


@router.get(
    "",
    response_model=JobList,
    summary="List your jobs (admins: everyone's)",
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    state: Annotated[str | None, Query(max_length=16, description="Only jobs in this PSI/J state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    all_users: Annotated[bool, Query(description="Admins: include every user's jobs (default).")] = True,
) -> JobList:
    query = select(DagRun).where(DagRun.dag_id == JOB_DAG_ID)
    if not (is_admin(user) and all_users):
        query = query.where(DagRun.triggering_user_name == user.get_name())
    runs = list(session.scalars(query.order_by(DagRun.id.desc())))
    rows = jobs_db.get_jobs(JOB_DAG_ID, [r.run_id for r in runs])
    out = [_out(r, rows.get(r.run_id)) for r in runs]
    s3_jobs = jobs_db.visible_s3_jobs(user.get_name(), admin=is_admin(user) and all_users)
    if s3_jobs:  # newest first, both front doors together
        out = sorted(
            [*out, *(_s3_out(row) for row in s3_jobs)],
            key=lambda j: j.submitted_at or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
    if state:
        out = [j for j in out if j.state == state.upper()]
    return JobList(jobs=out[offset : offset + limit], total=len(out))


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="One job: state, chronological events and properties",
    responses={404: {"description": "No such job (or not yours)"}},
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def get_job(job_id: PathName, user: CurrentUser, session: SessionDep) -> JobOut:
    run, s3_row = _find_job(job_id, user, session)
    if run is None:
        return _s3_out(s3_row, with_events=True)
    return _out(run, jobs_db.get_job(JOB_DAG_ID, job_id), with_events=True)


@router.get(
    "/{job_id}/events",
    response_model=list[JobEventOut],
    summary="A job's events, oldest first",
    responses={404: {"description": "No such job (or not yours)"}},
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def get_job_events(job_id: PathName, user: CurrentUser, session: SessionDep) -> list[JobEventOut]:
    run, s3_row = _find_job(job_id, user, session)
    if run is None:
        return _s3_out(s3_row, with_events=True).events
    return _out(run, None, with_events=True).events


MAX_TAIL_LINES = 100_000


@router.get(
    "/{job_id}/output",
    response_model=JobOutputOut,
    summary="A job's stdout or stderr, kept when it ended",
    description="The last bytes of the job's stdout or stderr ([rackflow] job_output_tail_size, 64 KiB "
    "by default), copied into the rackflow database when the job ended, so readable after its job "
    "directory is removed. JSON: `content` is the text, `truncated` says whether it is only the end of "
    "the stream. `tail=N` gives only the last N lines. While the job has not finished (it runs, or its "
    "output is being collected) the answer is 409: output is not read from a running job.",
    responses={
        404: {"description": "No such job (or not yours), or the job ended without running"},
        409: {"description": "The job has not finished: its output is not available yet"},
    },
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def get_job_output(
    job_id: PathName,
    user: CurrentUser,
    session: SessionDep,
    stream: Annotated[Literal["stdout", "stderr"], Query(description="Which stream.")] = "stdout",
    tail: Annotated[
        int | None, Query(ge=1, le=MAX_TAIL_LINES, description="Only the last N lines of what was kept.")
    ] = None,
) -> JobOutputOut:
    run, s3_row = _find_job(job_id, user, session)
    if run is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"job {job_id!r} came from s3://{s3_row.s3_bucket}/{s3_row.s3_prefix}: "
            "its output goes back there",
        )
    kept = jobs_db.get_output(JOB_DAG_ID, job_id, stream)
    if kept is None:
        if run.state not in FINISHED_RUN_STATES:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"job {job_id!r} has not finished: its {stream} is kept when it ends, not yet available",
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} kept no {stream}: it never ran")
    text = kept.content.decode("utf-8", "replace")
    truncated = bool(kept.truncated)
    if tail is not None:
        lines = text.splitlines(keepends=True)
        if len(lines) > tail:
            text, truncated = "".join(lines[-tail:]), True
    return JobOutputOut(
        job_id=job_id,
        stream=stream,
        content=text,
        truncated=truncated,
        size=kept.size,
        path=kept.path,
        note=kept.note,
    )


@router.post(
    "/{job_id}/terminate",
    response_model=TerminateOut,
    summary="Terminate a job (asynchronous, idempotent)",
    description="The first request marks the job for termination and returns 202: the scheduler job is "
    "cancelled (once), remaining stages are skipped and the job directory is removed. Later requests, "
    "and requests on a finished job, change nothing and return 200 saying why.",
    responses={
        202: {"description": "Termination started"},
        404: {"description": "No such job (or not yours)"},
    },
    dependencies=[can_use_jobs("POST")],  # type: ignore[list-item]
)
def terminate_job(
    job_id: PathName,
    user: CurrentUser,
    session: SessionDep,
    reason: Annotated[str | None, Body(embed=True, max_length=MAX_REASON, pattern=LINE_PATTERN)] = None,
) -> Any:
    from fastapi.responses import JSONResponse

    run, s3_row = _find_job(job_id, user, session)
    out = terminate(run, user, reason) if run is not None else terminate_s3_job(s3_row, user, reason)
    if not out.acted:
        return out
    return JSONResponse(out.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


def terminate_s3_job(row: Any, user: Any, reason: str | None = None) -> TerminateOut:
    """Mark an S3 intake job for termination (once): the cluster poller waiting for it cancels the
    scheduler job, and its wait task writes ``CANCELED`` to the bucket's status object."""
    job_id = row.run_id
    if row.state in jobs_db.FINAL_STATES:
        finished = f"job already finished ({row.state}): ignored"
        return TerminateOut(job_id=job_id, state=row.state, acted=False, message=finished)
    if not jobs_db.request_termination(row.dag_id, job_id, user.get_name()):
        row = jobs_db.get_job(row.dag_id, job_id)
        return TerminateOut(
            job_id=job_id,
            state=row.state if row else "QUEUED",
            acted=False,
            message=f"already terminating (requested by {row.terminate_requested_by if row else 'someone'})",
        )
    jobs_db.record_event(
        row.dag_id,
        job_id,
        None,
        f"termination requested by {user.get_name()}" + (f": {reason}" if reason else ""),
    )
    return TerminateOut(job_id=job_id, state=row.state, acted=True, message="terminating")


def terminate(run: DagRun, user: Any, reason: str | None = None) -> TerminateOut:
    """Mark ``run``'s job for termination (once); ``acted`` says whether this request started it."""
    job_id = run.run_id
    row = jobs_db.get_job(JOB_DAG_ID, job_id)
    state = job_state(run.state, row)
    if state in jobs_db.FINAL_STATES or run.state in FINISHED_RUN_STATES:
        return TerminateOut(
            job_id=job_id, state=state, acted=False, message=f"job already finished ({state}): ignored"
        )
    if not jobs_db.request_termination(JOB_DAG_ID, job_id, user.get_name()):
        row = jobs_db.get_job(JOB_DAG_ID, job_id)
        return TerminateOut(
            job_id=job_id,
            state=job_state(run.state, row),
            acted=False,
            message=f"already terminating (requested by {row.terminate_requested_by if row else 'someone'})",
        )
    jobs_db.record_event(
        JOB_DAG_ID,
        job_id,
        None,
        f"termination requested by {user.get_name()}" + (f": {reason}" if reason else ""),
    )
    return TerminateOut(job_id=job_id, state=state, acted=True, message="terminating")
