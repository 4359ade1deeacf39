"""GA4GH Task Execution Service (TES) v1.1 at ``/rackflow/ga4gh/tes/v1``: tasks are rackflow jobs.

A task is a run of the ``rackflow_job`` DAG whose id starts ``tes__`` and whose conf carries the task
as submitted next to the job description it maps to (:mod:`rackflow.core.tes`). Submitting, listing,
reading and cancelling go through the job API's own pieces (:mod:`rackflow_plugin.api.jobs`): the
right is the custom view ``Rackflow Jobs``, owners see their own tasks and admins all, anyone else's
task is 404, and a user without a ``[rackflow] job_accounts`` mapping is refused with 403.

Responses omit absent fields and never carry a key outside the TES schema (py-tes parses strictly).
``POST /tasks`` records a new task each time it succeeds; a client retrying a failed POST on another
base path (py-tes tries ``/ga4gh/tes/v1``, ``/v1`` and ``/`` in turn) meets 404 there, because TES is
mounted at this one prefix only.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.models.dagrun import DagRun
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from rackflow import __version__, settings
from rackflow.core.jobspec import JobDescriptionError
from rackflow.core.tes import (
    BACKEND_PARAMETERS,
    DEFAULT_MARKER,
    TES_VERSION,
    TesExecutorLog,
    TesState,
    TesTask,
    TesTaskError,
    TesTaskLog,
    View,
    executor_logs,
    executor_sections,
    parse_task,
    staging_problems_as_tes,
    tes_state,
    to_job_description,
)
from rackflow.dag_factories.job import JOB_DAG_ID
from rackflow.db import jobs as jobs_db
from rackflow.services.staging import check_staging
from rackflow_plugin.api.jobs import own_run, require_job_account, terminate, trigger_job
from rackflow_plugin.limits import JSON_MEDIA_TYPE, LINE_PATTERN, MAX_NAME, PathName
from rackflow_plugin.security import CurrentUser, can_use_jobs, is_admin

PREFIX = "/ga4gh/tes/v1"
RUN_PREFIX = "tes"
MAX_PAGE = 2048
SERVICE_DESCRIPTION = (
    "GA4GH TES on the site's batch scheduler through Apache Airflow (rackflow jobs). "
    "Inputs and outputs: s3://, sftp:// (and http(s):// inputs) on the site's allow-lists."
)
STORAGE = ["s3://", "sftp://"]

router = APIRouter(prefix=PREFIX, tags=["ga4gh-tes"])


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceType(_Out):
    group: str
    artifact: str
    version: str


class Organization(_Out):
    name: str
    url: str


class ServiceInfo(_Out):
    id: str
    name: str
    type: ServiceType
    description: str | None = None
    organization: Organization
    version: str
    storage: list[str] = []
    tesResources_backend_parameters: list[str] = []


class ServiceInfo10(_Out):
    """TES 1.0's service info (``GET /tasks/service-info``), as py-tes 0.4 reads it."""

    name: str
    doc: str
    storage: list[str] = []


class CreateTaskResponse(_Out):
    id: str


class ListTasksResponse(_Out):
    tasks: list[TesTask]
    next_page_token: str | None = None


class CancelTaskResponse(_Out):
    pass


def _task_runs(user: Any, session: Any) -> Any:

    query = select(DagRun).where(
        DagRun.dag_id == JOB_DAG_ID, DagRun.run_id.like(f"{RUN_PREFIX}\\_\\_%", escape="\\")
    )
    if not is_admin(user):
        query = query.where(DagRun.triggering_user_name == user.get_name())
    return query


def _submitted(run: DagRun) -> TesTask | None:
    conf = run.conf or {}
    raw = conf.get("tes") if isinstance(conf, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        return TesTask.model_validate(raw)
    except ValueError:
        return None


def _view_of(run: DagRun, row: Any, view: View) -> dict[str, Any] | None:
    """The task in ``view`` as JSON, absent fields omitted; None when the run is no TES task."""
    task = _submitted(run)
    if task is None:
        return None
    state = tes_state(
        job_state=row.state if row is not None else None,
        run_state=run.state,
        exit_code=row.exit_code if row is not None else None,
        submitted=row is not None and row.scheduler_job_id is not None,
        terminate_requested=row is not None and row.terminate_requested_at is not None,
    )
    if view == View.MINIMAL:
        return {"id": run.run_id, "state": state.value}
    out = task.model_copy(update={"id": run.run_id, "state": state, "creation_time": run.run_after})
    if view == View.BASIC and out.inputs:
        out.inputs = [i.model_copy(update={"content": None}) for i in out.inputs]
    out.logs = [_task_log(run, row, task, state, view)]
    return _dump(out)


def _marker(run: DagRun) -> str:
    marker = (run.conf or {}).get("tes_marker") if isinstance(run.conf, dict) else None
    return marker if isinstance(marker, str) and marker else DEFAULT_MARKER


def _task_log(run: DagRun, row: Any, task: TesTask, state: TesState, view: View) -> TesTaskLog:
    full = view == View.FULL
    events = jobs_db.events(JOB_DAG_ID, run.run_id)
    started = next((e.at for e in events if e.state == "ACTIVE"), None)
    ended = next((e.at for e in reversed(events) if e.state in jobs_db.FINAL_STATES), None)
    metadata: dict[str, str] = {}
    logs: list[TesExecutorLog] = []
    if row is not None:
        for key, value in (
            ("scheduler", row.scheduler),
            ("scheduler_job_id", row.scheduler_job_id),
            ("exit_code", row.exit_code),
            ("cpu_time", row.cpu_time_s),
            ("wall_time", row.wall_time_s),
            ("max_memory", row.max_memory),
            ("nodes", row.nodes),
        ):
            if value is not None and value != "":
                metadata[key] = str(value)
        out, err = (jobs_db.get_output(JOB_DAG_ID, run.run_id, stream) for stream in ("stdout", "stderr"))
        sections = executor_sections(
            out.content if out is not None else None, err.content if err is not None else None, _marker(run)
        )
        logs = executor_logs(task, state, row.exit_code, sections)
        if not full:  # BASIC: no stdout/stderr
            logs = [log.model_copy(update={"stdout": None, "stderr": None}) for log in logs]
    for log in logs:
        log.start_time, log.end_time = started, ended
    return TesTaskLog(
        logs=logs,
        metadata=metadata or None,
        start_time=started,
        end_time=ended,
        outputs=[],
        system_logs=[f"{e.at.isoformat()} {e.state} {e.message}".strip() for e in events] if full else None,
    )


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


@router.get(
    "/service-info",
    response_model=ServiceInfo,
    response_model_exclude_none=True,
    summary="TES service info",
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def service_info(request: Request, user: CurrentUser) -> ServiceInfo:
    return ServiceInfo(
        id="org.rackflow.tes",
        name="rackflow TES",
        type=ServiceType(group="org.ga4gh", artifact="tes", version=TES_VERSION),
        description=SERVICE_DESCRIPTION,
        organization=Organization(name="rackflow", url=str(request.base_url)),
        version=__version__,
        storage=STORAGE,
        tesResources_backend_parameters=[*BACKEND_PARAMETERS, "<scheduler>.<option>"],
    )


@router.get(
    "/tasks/service-info",
    response_model=ServiceInfo10,
    summary="TES 1.0 service info (TES 1.0 clients such as py-tes 0.4 ask here)",
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def service_info_10(user: CurrentUser) -> ServiceInfo10:
    # Declared before /tasks/{task_id}: task ids start "tes__", so no task is shadowed.
    return ServiceInfo10(name="rackflow TES", doc=SERVICE_DESCRIPTION, storage=STORAGE)


@router.post(
    "/tasks",
    response_model=CreateTaskResponse,
    summary="Create a task (a rackflow job)",
    description="An invalid task, or inputs/outputs the site's staging allow-lists refuse, is refused "
    "with 400 naming each field, and nothing is recorded.",
    responses={
        400: {"description": "Invalid task"},
        403: {"description": "Not allowed, or no job account is mapped for the user"},
    },
    dependencies=[can_use_jobs("POST")],  # type: ignore[list-item]
    openapi_extra={
        "requestBody": {
            "content": {JSON_MEDIA_TYPE: {"schema": {"type": "object"}}},
            "required": True,
        }
    },
)
async def create_task(request: Request, user: CurrentUser, session: SessionDep) -> CreateTaskResponse:
    raw = await request.body()  # bounded by the app's RequestLimits
    return await run_in_threadpool(_create, raw, request, user, session)


def _create(raw: bytes, request: Request, user: Any, session: Any) -> CreateTaskResponse:
    require_job_account(user)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not JSON: {exc}") from exc
    try:
        task = parse_task(data)
        runtime = settings.tes_container_runtime()
        marker = f"{DEFAULT_MARKER}-{uuid.uuid4().hex[:16]}"
        job = to_job_description(task, runtime, marker, settings.tes_executor_path())
        try:
            check_staging(job)
        except JobDescriptionError as exc:
            raise TesTaskError(staging_problems_as_tes(exc.problems, task)) from exc
    except TesTaskError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, {"message": str(exc), "problems": exc.problems}
        ) from exc
    tes = _dump(task)
    tes.pop("state", None)
    conf = {"tes": tes, "tes_marker": marker}
    run_id = trigger_job(job, user, prefix=RUN_PREFIX, extra_conf=conf)
    return CreateTaskResponse(id=run_id)


@router.get(
    "/tasks",
    response_model=ListTasksResponse,
    response_model_exclude_none=True,
    summary="List your tasks (admins: everyone's), newest first",
    responses={400: {"description": "Bad page token"}},
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    name_prefix: Annotated[str | None, Query(max_length=MAX_NAME, pattern=LINE_PATTERN)] = None,
    state: TesState | None = None,
    tag_key: Annotated[list[str] | None, Query(max_length=16)] = None,
    tag_value: Annotated[list[str] | None, Query(max_length=16)] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 256,
    page_token: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]*$")] = None,
    view: View = View.MINIMAL,
) -> Any:
    query = _task_runs(user, session)
    if page_token:
        if int(page_token) > 2**31 - 1:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "page_token: not a token this server gave")
        query = query.where(DagRun.id < int(page_token))
    runs = list(session.scalars(query.order_by(DagRun.id.desc())))
    rows = jobs_db.get_jobs(JOB_DAG_ID, [r.run_id for r in runs])
    wanted = dict(zip(tag_key or [], [*(tag_value or []), *[""] * len(tag_key or [])], strict=False))
    tasks: list[dict[str, Any]] = []
    last_id: int | None = None
    more = False
    for run in runs:
        submitted = _submitted(run)
        if submitted is None:
            continue
        if name_prefix and not (submitted.name or "").startswith(name_prefix):
            continue
        tags = submitted.tags or {}
        if any(k not in tags or (v and tags[k] != v) for k, v in wanted.items()):
            continue
        task = _view_of(run, rows.get(run.run_id), view)
        if task is None or (state and task["state"] != state.value):
            continue
        if len(tasks) == page_size:
            more = True
            break
        tasks.append(task)
        last_id = run.id
    body: dict[str, Any] = {"tasks": tasks}
    if more and last_id is not None:
        body["next_page_token"] = str(last_id)
    return JSONResponse(body)


@router.get(
    "/tasks/{task_id}",
    response_model=TesTask,
    response_model_exclude_none=True,
    summary="One task in the MINIMAL, BASIC (default) or FULL view",
    responses={404: {"description": "No such task (or not yours)"}},
    dependencies=[can_use_jobs("GET")],  # type: ignore[list-item]
)
def get_task(task_id: PathName, user: CurrentUser, session: SessionDep, view: View = View.BASIC) -> Any:
    run = _own_task(task_id, user, session)
    task = _view_of(run, jobs_db.get_job(JOB_DAG_ID, task_id), view)
    if task is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id!r}")
    return JSONResponse(task)


def _own_task(task_id: str, user: Any, session: Any) -> DagRun:
    if not task_id.startswith(f"{RUN_PREFIX}__"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id!r}")
    return own_run(task_id, user, session)


@router.post(
    "/tasks/{task_id}:cancel",
    response_model=CancelTaskResponse,
    summary="Cancel a task (asynchronous: CANCELING, then CANCELED)",
    responses={404: {"description": "No such task (or not yours)"}},
    dependencies=[can_use_jobs("POST")],  # type: ignore[list-item]
)
def cancel_task(task_id: PathName, user: CurrentUser, session: SessionDep) -> CancelTaskResponse:
    terminate(_own_task(task_id, user, session), user, "TES cancel")
    return CancelTaskResponse()
