"""From a jobnet to what runs: flat stages for the DAG factory, the revert plan, the run report.

Jipper's zipper: stages close one after another; when one fails, the finished ones open again in
exact reverse order of completion. Everything here is a pure function of the model and of observed
outcomes, so the Airflow layer only reports what happened and executes what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rackflow.core.jobnet.model import (
    LOCAL_SERVER,
    Jobnet,
    JobnetError,
    ParamSpec,
    ServerSpec,
    Step,
    _Action,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoundAction(_Frozen):
    """A step's command or its revert, ready to run: server resolved, script path absolute."""

    server_name: str = Field(description=f"As written in the jobnet; {LOCAL_SERVER!r} is the worker.")
    server: ServerSpec | None = Field(description=f"None for {LOCAL_SERVER!r}: run on the worker itself.")
    command: str | None
    script: Path | None = Field(description="File on the worker to ship to the server and run there.")
    env: dict[str, str]
    workdir: str | None
    timeout: float | None
    retries: int

    @property
    def is_local(self) -> bool:
        return self.server is None


class FlatStep(_Frozen):
    """One step after includes are expanded; ``id`` is unique across the whole expanded jobnet."""

    id: str = Field(description="Step id, prefixed by include names: 'base.install'.")
    jobnet: str = Field(description="The jobnet that declared the step (the included one for includes).")
    run: BoundAction
    revert: BoundAction | None


Stage = tuple[FlatStep, ...]
"""Steps that start together; more than one means a parallel group."""


def flatten_stages(
    jobnet: Jobnet,
    *,
    includes: Mapping[str, Jobnet] | None = None,
    base_dirs: Mapping[str, Path] | None = None,
) -> list[Stage]:
    """The ordered stages the DAG factory builds tasks from.

    Included jobnets' stages come first, in ``include`` order, their step ids prefixed with
    ``<include name>.``; a server name an included jobnet uses is bound to the including jobnet's
    server of that name when it defines one, else to the included jobnet's own. ``base_dirs`` maps a
    jobnet name to the folder its ``script`` paths are relative to (its YAML file's folder).
    """
    return _flatten(jobnet, includes or {}, base_dirs or {}, prefix="", outer_servers={}, chain=())


def _flatten(
    jobnet: Jobnet,
    includes: Mapping[str, Jobnet],
    base_dirs: Mapping[str, Path],
    *,
    prefix: str,
    outer_servers: Mapping[str, ServerSpec],
    chain: tuple[str, ...],
) -> list[Stage]:
    chain = (*chain, jobnet.name)
    servers = {name: outer_servers.get(name, spec) for name, spec in jobnet.servers.items()}
    stages: list[Stage] = []
    for name in jobnet.include:
        if name in chain:
            raise JobnetError.single(f"include cycle: {' -> '.join((*chain, name))}")
        if name not in includes:
            raise JobnetError.single(f"jobnet {jobnet.name!r} includes {name!r}, which is not known")
        stages += _flatten(
            includes[name],
            includes,
            base_dirs,
            prefix=f"{prefix}{name}.",
            outer_servers={**outer_servers, **servers},
            chain=chain,
        )
    base_dir = base_dirs.get(jobnet.name)
    for stage in jobnet.steps:
        members = [stage] if isinstance(stage, Step) else stage
        stages.append(tuple(_flat_step(step, jobnet.name, prefix, servers, base_dir) for step in members))
    return stages


def _flat_step(
    step: Step, jobnet: str, prefix: str, servers: Mapping[str, ServerSpec], base_dir: Path | None
) -> FlatStep:
    revert = None
    if step.revert is not None:
        revert = _bind(step.revert, step.revert.server or step.server, servers, base_dir)
        # A revert undoes its step, so it sees the step's env and workdir unless it sets its own.
        revert = revert.model_copy(
            update={
                "env": {**step.env, **step.revert.env},
                "workdir": step.revert.workdir if step.revert.workdir is not None else step.workdir,
            }
        )
    return FlatStep(
        id=prefix + step.id, jobnet=jobnet, run=_bind(step, step.server, servers, base_dir), revert=revert
    )


def _bind(
    action: _Action, server_name: str, servers: Mapping[str, ServerSpec], base_dir: Path | None
) -> BoundAction:
    script = None
    if action.script is not None:
        script = Path(action.script)
        if base_dir is not None and not script.is_absolute():
            script = base_dir / script
    return BoundAction(
        server_name=server_name,
        server=None if server_name == LOCAL_SERVER else servers[server_name],
        command=action.command,
        script=script,
        env=dict(action.env),
        workdir=action.workdir,
        timeout=action.timeout,
        retries=action.retries,
    )


def merged_params(
    jobnet: Jobnet, includes: Mapping[str, Jobnet] | None = None, *, _chain: tuple[str, ...] = ()
) -> dict[str, ParamSpec]:
    """The params a run of ``jobnet`` takes: its own plus its includes'; the including one wins a name."""
    includes = includes or {}
    merged: dict[str, ParamSpec] = {}
    for name in jobnet.include:
        if name in _chain or name == jobnet.name:
            raise JobnetError.single(f"include cycle: {' -> '.join((*_chain, jobnet.name, name))}")
        if name not in includes:
            raise JobnetError.single(f"jobnet {jobnet.name!r} includes {name!r}, which is not known")
        merged.update(merged_params(includes[name], includes, _chain=(*_chain, jobnet.name)))
    merged.update(jobnet.params)
    return merged


class StepState(StrEnum):
    """What became of a step in a run, in the core's words; the Airflow layer maps task states to these."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_RUN = "not_run"
    SKIPPED = "skipped"


class RevertPlan(_Frozen):
    """What to undo after a run, and what is left as it is and why."""

    groups: tuple[Stage, ...] = Field(
        description="Run in this order; the steps of one group together (a parallel group's finished "
        "members, latest finished first)."
    )
    without_revert: tuple[str, ...] = Field(description="Succeeded but declare no revert: left in place.")
    never_reverted: dict[str, StepState] = Field(
        description="Did not succeed (failed, not run, skipped), so there is nothing of theirs to undo; "
        "a failed step's own revert never runs."
    )

    def order(self) -> list[list[str]]:
        """Step ids per group, in execution order: what tests and logs compare."""
        return [[step.id for step in group] for group in self.groups]


def plan_revert(
    stages: Sequence[Stage],
    states: Mapping[str, StepState],
    completion: Sequence[str] | Mapping[str, datetime | float],
) -> RevertPlan:
    """The reverts to run after a run ended with ``states``, finished in ``completion`` order.

    Only steps that succeeded and declare a revert are reverted. Stages are undone in exact reverse
    order of their completion (a stage completes when its last succeeded member does); the members of
    a parallel group are undone together as one group, listed latest-finished first. A step missing
    from ``states`` did not run. ``completion`` is the finished step ids in order, or a step id ->
    finish time mapping; every succeeded step must be in it.
    """
    known = {step.id for stage in stages for step in stage}
    unknown = sorted(set(states) - known)
    if unknown:
        raise ValueError(f"states name steps that are not in the stages: {unknown}")
    if isinstance(completion, Mapping):
        order = sorted(completion, key=lambda step_id: (completion[step_id], step_id))
    else:
        order = list(completion)
    rank = {step_id: position for position, step_id in enumerate(order)}

    finished: list[tuple[int, Stage]] = []
    without_revert: list[str] = []
    never_reverted: dict[str, StepState] = {}
    for stage in stages:
        succeeded = []
        for step in stage:
            state = states.get(step.id, StepState.NOT_RUN)
            if state is not StepState.SUCCEEDED:
                never_reverted[step.id] = state
                continue
            if step.id not in rank:
                raise ValueError(f"step {step.id!r} succeeded but has no place in the completion order")
            succeeded.append(step)
        if not succeeded:
            continue
        without_revert += [step.id for step in succeeded if step.revert is None]
        to_undo = sorted((step for step in succeeded if step.revert is not None), key=lambda s: -rank[s.id])
        if to_undo:
            finished.append((max(rank[step.id] for step in succeeded), tuple(to_undo)))
    finished.sort(key=lambda item: -item[0])
    return RevertPlan(
        groups=tuple(group for _, group in finished),
        without_revert=tuple(without_revert),
        never_reverted=never_reverted,
    )


class Reverted(StrEnum):
    YES = "yes"
    NO = "no"
    FAILED = "failed"
    NONE = "none"
    """The step declares no revert."""


class StepResult(_Frozen):
    """What the Airflow layer observed for one step."""

    state: StepState
    exit_code: int | None = None
    duration_s: float | None = None
    output: str = ""


class ReportRow(_Frozen):
    step_id: str
    server: str
    state: StepState
    exit_code: int | None
    duration_s: float | None
    output_tail: str
    reverted: Reverted


def build_report(
    stages: Sequence[Stage],
    results: Mapping[str, StepResult],
    revert_results: Mapping[str, bool] | None = None,
    *,
    tail_lines: int = 20,
) -> list[ReportRow]:
    """One row per step, in stage order; ``revert_results`` maps step id -> its revert succeeded."""
    revert_results = revert_results or {}
    rows = []
    for stage in stages:
        for step in stage:
            result = results.get(step.id, StepResult(state=StepState.NOT_RUN))
            if step.revert is None:
                reverted = Reverted.NONE
            elif step.id in revert_results:
                reverted = Reverted.YES if revert_results[step.id] else Reverted.FAILED
            else:
                reverted = Reverted.NO
            rows.append(
                ReportRow(
                    step_id=step.id,
                    server=step.run.server_name,
                    state=result.state,
                    exit_code=result.exit_code,
                    duration_s=result.duration_s,
                    output_tail="\n".join(result.output.splitlines()[-tail_lines:]) if tail_lines else "",
                    reverted=reverted,
                )
            )
    return rows


def format_report(rows: Sequence[ReportRow]) -> str:
    """A plain-text table for task logs: one line per step, output tails left out."""
    header = ("step", "server", "state", "exit", "seconds", "reverted")
    lines = [
        (
            row.step_id,
            row.server,
            row.state.value,
            "" if row.exit_code is None else str(row.exit_code),
            "" if row.duration_s is None else f"{row.duration_s:.1f}",
            row.reverted.value,
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *lines]
    )
