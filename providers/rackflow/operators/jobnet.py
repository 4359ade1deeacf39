"""The operators of a jobnet DAG besides its steps (``operators/ssh_step.py``): the revert plan, the
report, and destroying a build environment's VMs when its jobnet failed.

:class:`JobnetTaskIds` says where each step and revert lives in the DAG; the DAG factory
(:mod:`rackflow.dag_factories.jobnet`) and the plugin's report route use it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rackflow.core.jobnet import (
    Reverted,
    Stage,
    StepResult,
    StepState,
    build_report,
    format_report,
    plan_revert,
)
from rackflow.operators.libvirt import DestroyVMsOperator
from rackflow.operators.ssh_step import RESULT_KEY

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

PLAN_TASK_ID = "revert_plan"
REPORT_TASK_ID = "report"
REVERT_GROUP_ID = "revert"
_TASK_STATE_TO_STEP = {
    "success": StepState.SUCCEEDED,
    "failed": StepState.FAILED,
    "skipped": StepState.SKIPPED,
}


def stage_group_id(stage_number: int) -> str:
    return f"parallel_{stage_number}"


@dataclass(frozen=True)
class JobnetTaskIds:
    """Where each step and revert lives in a jobnet DAG; shared by the factory and the report route."""

    steps: dict[str, str]
    reverts: dict[str, str]
    plan: str = PLAN_TASK_ID
    report: str = REPORT_TASK_ID

    @classmethod
    def for_stages(cls, stages: Sequence[Stage]) -> JobnetTaskIds:
        steps: dict[str, str] = {}
        reverts: dict[str, str] = {}
        for number, stage in enumerate(stages, start=1):
            group = f"{stage_group_id(number)}." if len(stage) > 1 else ""
            for step in stage:
                steps[step.id] = f"{group}{step.id}"
                if step.revert is not None:
                    reverts[step.id] = f"{REVERT_GROUP_ID}.{group}{step.id}"
        return cls(steps=steps, reverts=reverts)


class _AfterTheStepsOperator(BaseOperator):
    """A task that reads the jobnet's steps once they have all ended, whatever their states."""

    def __init__(self, *, stages: Sequence[Stage], task_ids: JobnetTaskIds, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.stages = list(stages)
        self.task_ids = task_ids


class JobnetRevertPlanOperator(_AfterTheStepsOperator):
    """Decide what to undo: :func:`plan_revert` on the forward steps' states and recorded end times.

    Pushes ``{"failed": bool, "groups": [[step ids]], "without_revert": [...], "never_reverted": {...}}``.
    Nothing failed: no groups, and every revert task skips itself.
    """

    ui_color = "#fde9d9"

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        states = _task_states(context, list(self.task_ids.steps.values()))
        step_states = {
            step_id: _TASK_STATE_TO_STEP.get(str(states.get(task_id)), StepState.NOT_RUN)
            for step_id, task_id in self.task_ids.steps.items()
        }
        failed = [step_id for step_id, state in step_states.items() if state is not StepState.SUCCEEDED]
        if not failed:
            self.log.info("Every step succeeded: nothing to revert")
            return {"failed": False, "groups": [], "without_revert": [], "never_reverted": {}}
        results = _pull_results(ti, self.task_ids.steps)
        position = {step.id: i for i, stage in enumerate(self.stages) for step in stage}
        completion = {
            step_id: float(results.get(step_id, {}).get("finished_at") or position[step_id])
            for step_id, state in step_states.items()
            if state is StepState.SUCCEEDED
        }
        plan = plan_revert(self.stages, step_states, completion)
        self.log.info("Steps not succeeded: %s", ", ".join(failed))
        self.log.info("Revert order (group by group): %s", plan.order() or "nothing to revert")
        if plan.without_revert:
            self.log.info("Succeeded without a revert, left in place: %s", ", ".join(plan.without_revert))
        return {
            "failed": True,
            "groups": plan.order(),
            "without_revert": list(plan.without_revert),
            "never_reverted": {k: v.value for k, v in plan.never_reverted.items()},
        }


class JobnetReportOperator(_AfterTheStepsOperator):
    """The run's table (state, server, exit code, duration, output tail, reverted?) in the log and XCom.

    Fails the task, and so the run, when a step did not succeed or a revert failed.
    """

    ui_color = "#e4ecf7"

    def execute(self, context: Context) -> list[dict[str, Any]]:
        ti = context["ti"]
        every = [*self.task_ids.steps.values(), *self.task_ids.reverts.values()]
        states = _task_states(context, every)
        results = _pull_results(ti, {**self.task_ids.steps})
        revert_results = _pull_results(ti, self.task_ids.reverts)
        rows = collect_report(self.stages, self.task_ids, states, results, revert_results)
        self.log.info("Jobnet report\n%s", format_report(_core_rows(self.stages, rows)))
        ti.xcom_push(key="report", value=rows)
        bad = [row["step_id"] for row in rows if row["state"] != StepState.SUCCEEDED.value]
        revert_failed = [row["step_id"] for row in rows if row["reverted"] == Reverted.FAILED.value]
        if bad or revert_failed:
            message = f"jobnet failed: steps not succeeded: {', '.join(bad) or 'none'}"
            if revert_failed:
                message += f"; reverts FAILED for: {', '.join(revert_failed)}"
            raise AirflowFailException(message)
        return rows


def _task_states(context: Context, task_ids: list[str]) -> dict[str, str | None]:
    ti = context["ti"]
    answer = ti.get_task_states(dag_id=ti.dag_id, task_ids=task_ids, run_ids=[ti.run_id])
    per_run = answer.get(ti.run_id, answer) if isinstance(answer, dict) else {}
    return {task_id: per_run.get(task_id) for task_id in task_ids}


def _pull_results(ti: Any, task_ids: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    results = {}
    for step_id, task_id in task_ids.items():
        value = ti.xcom_pull(task_ids=task_id, key=RESULT_KEY)
        if isinstance(value, dict):
            results[step_id] = value
    return results


def _output(result: Mapping[str, Any] | None) -> str:
    if not result:
        return ""
    parts = [result.get("stdout_tail") or "", result.get("stderr_tail") or ""]
    return "\n".join(part for part in parts if part)


def collect_report(
    stages: Sequence[Stage],
    task_ids: JobnetTaskIds,
    states: Mapping[str, str | None],
    results: Mapping[str, Mapping[str, Any]],
    revert_results: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Report rows (JSON-ready) from task states by task id and step/revert results by step id."""
    step_results = {}
    for step_id, task_id in task_ids.steps.items():
        result = results.get(step_id)
        step_results[step_id] = StepResult(
            state=_TASK_STATE_TO_STEP.get(str(states.get(task_id)), StepState.NOT_RUN),
            exit_code=(result or {}).get("exit_code"),
            duration_s=(result or {}).get("duration_s"),
            output=_output(result),
        )
    reverted: dict[str, bool] = {}
    for step_id, task_id in task_ids.reverts.items():
        state = states.get(task_id)
        if state in ("success", "failed"):
            reverted[step_id] = state == "success"
    rows = []
    for row in build_report(stages, step_results, reverted):
        revert_task = task_ids.reverts.get(row.step_id)
        revert_result = revert_results.get(row.step_id) or {}
        rows.append(
            {
                **row.model_dump(mode="json"),
                "task_id": task_ids.steps[row.step_id],
                "task_state": states.get(task_ids.steps[row.step_id]),
                "timed_out": bool((results.get(row.step_id) or {}).get("timed_out")),
                "finished_at": (results.get(row.step_id) or {}).get("finished_at"),
                "revert_task_id": revert_task,
                "revert_task_state": states.get(revert_task) if revert_task else None,
                "revert_exit_code": revert_result.get("exit_code"),
                "revert_finished_at": revert_result.get("finished_at"),
                "revert_output_tail": _output(revert_result),
            }
        )
    return rows


def _core_rows(stages: Sequence[Stage], rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    from rackflow.core.jobnet import ReportRow

    return [ReportRow(**{k: row[k] for k in ReportRow.model_fields}) for row in rows]


class DestroyVMsOnFailureOperator(DestroyVMsOperator):
    """Destroy the launched VMs, but only when the jobnet failed and the run asks for it."""

    def __init__(self, *, launch_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.launch_task_id = launch_task_id

    def execute(self, context: Context) -> dict[str, list[str]]:
        plan = context["ti"].xcom_pull(task_ids=PLAN_TASK_ID) or {}
        if not plan.get("failed"):
            raise AirflowSkipException("the jobnet succeeded: the VMs stay")
        if not context["params"].get("destroy_on_failure"):
            raise AirflowSkipException("destroy_on_failure is off: the VMs stay for inspection")
        if not self.names and not self.plan:
            raise AirflowSkipException("the launch produced no VMs (it rolls its own back)")
        return super().execute(context)
