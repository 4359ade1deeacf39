"""Jobnet run reports: the table of a run's steps and reverts, live from Airflow's metadata DB.

``GET /rackflow/api/jobnets/{dag_id}/runs/{run_id}/report`` needs read access to that DAG's runs
(Airflow's auth manager decides, as for ``GET /api/v2/dags/{dag_id}/dagRuns/{run_id}``): a report holds
each step's output, so a user who may see the DAG but not its runs gets 403.

The DAG names its jobnet by the tag ``jobnet:<name>``; the jobnet's stages come from the jobnets folder
and the rows from task states and the steps' ``step_result`` XComs,
through the same :func:`rackflow.operators.jobnet.collect_report` the report task uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from rackflow_plugin.limits import PathName
from rackflow_plugin.security import CurrentUser

router = APIRouter(tags=["jobnets"])


class ReportRowOut(BaseModel):
    step_id: str
    server: str
    state: str
    exit_code: int | None
    duration_s: float | None
    output_tail: str
    reverted: str
    task_id: str
    task_state: str | None
    timed_out: bool
    finished_at: float | None
    revert_task_id: str | None
    revert_task_state: str | None
    revert_exit_code: int | None
    revert_finished_at: float | None
    revert_output_tail: str
    stage: int = Field(description="1-based position of the step's stage; steps of one stage run in parallel")
    started_at: datetime | None = Field(description="when the step's task started (its last try)")
    ended_at: datetime | None
    revert_started_at: datetime | None
    revert_ended_at: datetime | None


class ReportOut(BaseModel):
    dag_id: str
    run_id: str
    jobnet: str
    run_state: str | None
    steps: list[ReportRowOut]
    revert_order: list[list[str]]
    """Step ids per revert group as the revert_plan task decided (empty: nothing to revert yet)."""
    stages: list[list[str]] = Field(description="step ids per stage in run order (parallel groups together)")
    run_started_at: datetime | None
    run_ended_at: datetime | None


def jobnet_of(dag_id: str, session: Any) -> str | None:
    """The jobnet a DAG runs, from its ``jobnet:<name>`` tag."""
    from airflow.models.dag import DagTag
    from sqlalchemy import select

    from rackflow.dag_factories.jobnet import JOBNET_TAG_PREFIX

    tags = session.scalars(select(DagTag.name).where(DagTag.dag_id == dag_id)).all()
    for tag in tags:
        if tag.startswith(JOBNET_TAG_PREFIX):
            return str(tag[len(JOBNET_TAG_PREFIX) :])
    return None


def report_from_db(dag_id: str, run_id: str, session: Any, library: Any = None) -> ReportOut:
    """The run report of ``run_id``; 404 when the DAG is not a jobnet DAG or the run does not exist.

    ``library`` is the jobnet library to read the jobnet from; default: the configured jobnets folder.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    from rackflow import settings
    from rackflow.dag_factories.jobnet import cached_library
    from rackflow.operators.jobnet import JobnetTaskIds, collect_report
    from rackflow.operators.ssh_step import RESULT_KEY

    name = jobnet_of(dag_id, session)
    if name is None:
        raise HTTPException(404, f"DAG {dag_id!r} does not run a jobnet")
    library = library if library is not None else cached_library(settings.jobnets_folder())
    if name not in library.jobnets:
        raise HTTPException(404, f"jobnet {name!r} is not in the jobnets folder (or has errors)")
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} of {dag_id!r}")
    stages = library.stages(name)
    ids = JobnetTaskIds.for_stages(stages)
    states: dict[str, str | None] = {}
    times: dict[str, tuple[datetime | None, datetime | None]] = {}
    for task_id, state, started, ended in session.execute(
        select(
            TaskInstance.task_id, TaskInstance.state, TaskInstance.start_date, TaskInstance.end_date
        ).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    ).all():
        states[task_id] = str(state) if state is not None else None
        times[task_id] = (started, ended)  # Airflow's UtcDateTime columns: aware
    by_task: dict[str, Any] = {}
    plan: dict[str, Any] = {}
    for row in session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id)).all():
        if row.key == RESULT_KEY:
            by_task[row.task_id] = XComModel.deserialize_value(row)
        elif row.task_id == ids.plan and row.key == "return_value":
            plan = XComModel.deserialize_value(row) or {}
    results = {step: by_task[task] for step, task in ids.steps.items() if task in by_task}
    reverts = {step: by_task[task] for step, task in ids.reverts.items() if task in by_task}
    rows = collect_report(stages, ids, states, results, reverts)
    stage_of = {step.id: number for number, stage in enumerate(stages, start=1) for step in stage}
    for row in rows:
        row["stage"] = stage_of[row["step_id"]]
        row["started_at"], row["ended_at"] = times.get(row["task_id"], (None, None))
        revert = row["revert_task_id"]
        row["revert_started_at"], row["revert_ended_at"] = (
            times.get(revert, (None, None)) if revert else (None, None)
        )
    return ReportOut(
        dag_id=dag_id,
        run_id=run_id,
        jobnet=name,
        run_state=str(run.state) if run.state is not None else None,
        steps=[ReportRowOut(**row) for row in rows],
        revert_order=list(plan.get("groups") or []),
        stages=[[step.id for step in stage] for stage in stages],
        run_started_at=run.start_date,
        run_ended_at=run.end_date,
    )


@router.get(
    "/jobnets/{dag_id}/runs/{run_id}/report",
    response_model=ReportOut,
    summary="A jobnet run's steps: state, server, exit code, duration, output tail, reverted?",
    # Read access to the runs of the DAG named in the path, decided by Airflow's auth manager.
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))],
)
def run_report(dag_id: PathName, run_id: PathName, user: CurrentUser) -> ReportOut:
    from airflow.utils.session import create_session

    with create_session() as session:
        return report_from_db(dag_id, run_id, session)
