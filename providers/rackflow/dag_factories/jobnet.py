"""Jobnets become Airflow DAGs: one task per step, task groups for parallel groups, reverts, a report.

The shape of every jobnet DAG (``jobnet_<name>``)::

    a >> parallel_2[b, c] >> d            forward steps, in stage order
      (all forward steps) >> revert_plan  trigger all_done: what to undo, from states and end times
      revert_plan >> revert.d >> revert.parallel_2[b, c] >> revert.a     trigger all_done, reverse order
      ... >> report                       trigger all_done: the table; fails the run if a step failed

``revert_plan`` runs :func:`rackflow.core.jobnet.plan_revert` on the forward tasks' states and their
recorded end times; each revert task runs only if the plan lists its step (else it is skipped), and
the revert tasks are chained in reverse stage order, a parallel group's reverts side by side. A
failed revert does not stop the others; the report shows it and fails the run. The same function
(:func:`collect_report`) serves the report task and the plugin's JSON route.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup

from rackflow import settings
from rackflow.core.jobnet import (
    BoundAction,
    Jobnet,
    JobnetLibrary,
    LaunchedServer,
    ParamSpec,
    SshServer,
    Stage,
    VmServer,
    load_jobnets,
)
from rackflow.operators.jobnet import (
    PLAN_TASK_ID,
    REPORT_TASK_ID,
    REVERT_GROUP_ID,
    JobnetReportOperator,
    JobnetRevertPlanOperator,
    JobnetTaskIds,
    stage_group_id,
)
from rackflow.operators.ssh_step import SSHStepOperator

if TYPE_CHECKING:
    pass

DAG_ID_PREFIX = "jobnet_"
JOBNET_TAG_PREFIX = "jobnet:"
DEFAULT_STEP_TIMEOUT = 3600.0
_PARAM_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}


def dag_id_for(name: str) -> str:
    return f"{DAG_ID_PREFIX}{name}"


@dataclass(frozen=True)
class ServerBinding:
    """How the servers of a jobnet reach SSH in this DAG.

    :param launch_tasks: ``from_launch`` name -> task id of the launch whose XCom lists the servers.
    :param server_connections: VM name -> SSH connection id; ``"*"`` is the default for every VM
        (inventory or launched) not listed.
    :param use_launch_address: Connect to a launched VM's address, not the connection's host.
    """

    launch_tasks: Mapping[str, str] = field(default_factory=dict)
    server_connections: Mapping[str, str] = field(
        default_factory=lambda: {"*": settings.jobnet_ssh_conn_id()}
    )
    use_launch_address: bool = False

    def connection_for(self, vm: str) -> str:
        return self.server_connections.get(
            vm, self.server_connections.get("*", settings.jobnet_ssh_conn_id())
        )

    def operator_kwargs(self, action: BoundAction) -> dict[str, Any]:
        """Constructor arguments of :class:`SSHStepOperator` that say where ``action`` runs."""
        server = action.server
        env: dict[str, str] = {}
        kwargs: dict[str, Any] = {"server_name": action.server_name}
        if server is None:
            kwargs["ssh_conn_id"] = None
        elif isinstance(server, SshServer):
            kwargs["ssh_conn_id"] = server.ssh_conn_id
        elif isinstance(server, VmServer):
            kwargs["ssh_conn_id"] = self.connection_for(server.vm)
            env["RACKFLOW_SERVER"] = server.vm
        elif isinstance(server, LaunchedServer):
            if server.from_launch in self.launch_tasks:
                kwargs.update(
                    launch_task_id=self.launch_tasks[server.from_launch],
                    launch_index=server.index,
                    server_connections=dict(self.server_connections),
                    use_launch_address=self.use_launch_address,
                )
            else:
                # No launch in this DAG: the server is the default connection, named for the report.
                name = f"{server.from_launch}-{server.index}"
                kwargs["ssh_conn_id"] = self.connection_for(name)
                env["RACKFLOW_SERVER"] = name
        kwargs["env"] = {**env, **action.env}
        return kwargs


def dag_params(specs: Mapping[str, ParamSpec]) -> dict[str, Param]:
    """Airflow params (JSON-schema validated at trigger time) from the jobnet's declarations."""
    params = {}
    for name, spec in specs.items():
        kwargs: dict[str, Any] = {"type": _PARAM_TYPES[spec.type], "description": spec.description or None}
        if spec.default is not None:
            params[name] = Param(spec.default, **kwargs)
        else:
            params[name] = Param(**kwargs)
    return params


def _step_operator(
    task_id: str,
    action: BoundAction,
    *,
    step_id: str,
    specs: Mapping[str, ParamSpec],
    binding: ServerBinding,
    default_timeout: float,
    retry_delay: timedelta,
    **extra: Any,
) -> SSHStepOperator:
    return SSHStepOperator(
        task_id=task_id,
        command=action.command,
        script=action.script,
        workdir=action.workdir,
        jobnet_params=specs,
        step_timeout=action.timeout or default_timeout,
        step_id=step_id,
        retries=action.retries,
        retry_delay=retry_delay,
        **binding.operator_kwargs(action),
        **extra,
    )


@dataclass
class JobnetTasks:
    """What :func:`add_jobnet_tasks` built: the entry tasks, the plan, the last revert and the report."""

    task_ids: JobnetTaskIds
    first: list[BaseOperator]
    plan: BaseOperator
    report: BaseOperator
    forward: list[BaseOperator]
    last_revert: list[BaseOperator]


def add_jobnet_tasks(
    stages: Sequence[Stage],
    specs: Mapping[str, ParamSpec],
    *,
    binding: ServerBinding | None = None,
    default_timeout: float = DEFAULT_STEP_TIMEOUT,
    retry_delay: timedelta = timedelta(seconds=5),
    before_report: Iterable[BaseOperator] = (),
) -> JobnetTasks:
    """Add a jobnet's step, revert, plan and report tasks to the DAG being defined (``with DAG(...)``)."""
    binding = binding or ServerBinding()
    ids = JobnetTaskIds.for_stages(stages)
    common: dict[str, Any] = {
        "specs": specs,
        "binding": binding,
        "default_timeout": default_timeout,
        "retry_delay": retry_delay,
    }
    previous: list[BaseOperator] = []
    forward: list[BaseOperator] = []
    first: list[BaseOperator] = []
    for number, stage in enumerate(stages, start=1):
        if len(stage) == 1:
            step = stage[0]
            current: list[BaseOperator] = [
                _step_operator(ids.steps[step.id], step.run, step_id=step.id, **common)
            ]
        else:
            with TaskGroup(stage_group_id(number), tooltip=f"parallel: {', '.join(s.id for s in stage)}"):
                current = [_step_operator(step.id, step.run, step_id=step.id, **common) for step in stage]
        for task in current:
            task.doc_md = f"Step `{task.task_id}` on server `{task.server_name}`."  # type: ignore[attr-defined]
        _chain(previous, current)
        previous = current
        forward += current
        first = first or current

    plan = JobnetRevertPlanOperator(task_id=PLAN_TASK_ID, stages=stages, task_ids=ids)
    plan.set_upstream(forward)
    previous = [plan]
    with TaskGroup(REVERT_GROUP_ID, tooltip="Undo finished steps in reverse order after a failure"):
        for number in range(len(stages), 0, -1):
            stage = stages[number - 1]
            with_revert = [step for step in stage if step.revert is not None]
            if not with_revert:
                continue
            if len(stage) == 1:
                current = [_revert_operator(with_revert[0].id, with_revert[0], common)]
            else:
                with TaskGroup(stage_group_id(number)):
                    current = [_revert_operator(step.id, step, common) for step in with_revert]
            _chain(previous, current)
            previous = current
    last_revert = previous
    report = JobnetReportOperator(task_id=REPORT_TASK_ID, stages=stages, task_ids=ids)
    report.set_upstream([*previous, *before_report])
    return JobnetTasks(ids, first, plan, report, forward, last_revert)


def _chain(upstream: list[BaseOperator], downstream: list[BaseOperator]) -> None:
    """Every task of ``downstream`` after every task of ``upstream``, in as few Airflow calls as
    possible (each call hashes the DAG for every task it touches)."""
    if not upstream or not downstream:
        return
    if len(upstream) == 1:
        upstream[0].set_downstream(downstream)
        return
    for task in downstream:
        task.set_upstream(upstream)


def _revert_operator(task_id: str, step: Any, common: Mapping[str, Any]) -> SSHStepOperator:
    return _step_operator(
        task_id,
        step.revert,
        step_id=step.id,
        revert_of=step.id,
        plan_task_id=PLAN_TASK_ID,
        trigger_rule="all_done",
        **common,
    )


def jobnet_doc(name: str, description: str, stages: Sequence[Stage]) -> str:
    lines = [f"# jobnet `{name}`", "", description or "", "", "| # | steps (parallel) | server | revert |"]
    lines.append("|---|---|---|---|")
    for number, stage in enumerate(stages, start=1):
        for step in stage:
            lines.append(
                f"| {number} | `{step.id}` | {step.run.server_name} | {'yes' if step.revert else '—'} |"
            )
    lines += ["", "A failed step reverts the finished ones in reverse order; see the `report` task."]
    return "\n".join(lines)


def build_jobnet_dag(
    library: JobnetLibrary,
    name: str,
    *,
    binding: ServerBinding | None = None,
    default_timeout: float = DEFAULT_STEP_TIMEOUT,
    retry_delay: timedelta = timedelta(seconds=5),
    dag_id: str | None = None,
    tags: Iterable[str] = (),
) -> DAG:
    """One jobnet of ``library`` as the DAG ``jobnet_<name>`` (manual runs only; params from the jobnet)."""
    jobnet = library.jobnets[name]
    stages = library.stages(name)
    specs = library.params(name)
    with DAG(
        dag_id=dag_id or dag_id_for(name),
        description=(jobnet.description or f"jobnet {name}")[:200],
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        tags=["rackflow", "jobnet", f"{JOBNET_TAG_PREFIX}{name}", *tags],
        doc_md=jobnet_doc(name, jobnet.description, stages),
        max_active_runs=1,
    ) as dag:
        add_jobnet_tasks(
            stages, specs, binding=binding, default_timeout=default_timeout, retry_delay=retry_delay
        )
    share_params(dag, dag_params(specs))
    return dag


def share_params(dag: DAG, params: Mapping[str, Param]) -> None:
    """Give ``dag`` its params, and every task of it one shared copy of them.

    Airflow deep-copies a DAG's params into every task it creates (twice per task: once per
    ``__init__`` level); on a folder of 200 jobnets those copies were half the DAG file's cost. So
    the jobnet DAGs are built without params and get them here: the DAG its own, every task the
    copy Airflow would have given it (source ``dag``), made once per DAG. Nothing changes params
    while a file is parsed, and a task's run merges them into a fresh dict of its own
    (``process_params``), so sharing the copy is safe.
    """
    dag.params = params  # type: ignore[assignment]  # the DAG's converter makes it a ParamsDict
    shared = copy.deepcopy(dag.params)
    shared._fill_missing_param_source("dag")
    for task in dag.tasks:
        task.params = shared


def jobnet_dag(jobnet: Jobnet, *, includes: Iterable[Jobnet] = (), **kwargs: Any) -> DAG:
    """A jobnet written in Python (``Jobnet(...).then(...)``) as its DAG; same DAG as from YAML.

    ``includes`` are the jobnets it includes by name; ``kwargs`` go to :func:`build_jobnet_dag`.
    """
    library = JobnetLibrary(jobnets={j.name: j for j in [*includes, jobnet]})
    return build_jobnet_dag(library, jobnet.name, **kwargs)


@dataclass
class _Cached:
    key: tuple[tuple[str, float, int], ...]
    library: JobnetLibrary


_CACHE: dict[str, _Cached] = {}


def cached_library(folder: str | Path) -> JobnetLibrary:
    """:func:`load_jobnets`, reused while no YAML file in ``folder`` changed (mtime, size, names).

    The dag-processor often parses the DAG files in one long-lived process per file; this keeps the
    folder from being re-validated when nothing in it changed.
    """
    folder = Path(folder)
    try:
        entries = sorted(
            (entry.name, entry.stat().st_mtime, entry.stat().st_size)
            for entry in os.scandir(folder)
            if entry.name.endswith((".yaml", ".yml"))
        )
    except FileNotFoundError:
        return JobnetLibrary()
    key = tuple(entries)
    cached = _CACHE.get(str(folder))
    if cached is None or cached.key != key:
        cached = _Cached(key, load_jobnets(folder))
        _CACHE[str(folder)] = cached
    return cached.library


def build_jobnet_dags(
    folder: str | Path,
    *,
    binding: ServerBinding | None = None,
    retry_delay: timedelta = timedelta(seconds=5),
) -> dict[str, DAG]:
    """Every usable jobnet of ``folder`` as a DAG, by dag id. Broken files are left out here; see
    :func:`raise_jobnet_errors` for how they reach Airflow's import errors."""
    with cyclic_gc_paused():
        library = cached_library(folder)
        return {
            dag_id_for(name): build_jobnet_dag(library, name, binding=binding, retry_delay=retry_delay)
            for name in sorted(library.jobnets)
        }


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a folder's DAGs are built.

    Building thousands of operators allocates millions of objects that all stay alive (they are the
    DAGs), so every collection the allocations trigger walks a growing heap and frees nothing:
    about a fifth of the jobnet DAG file's cost on 200 jobnets. Reference counting still frees what
    is dropped; the collector runs again, as before, once the build is over.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class JobnetFolderError(Exception):
    """Some jobnet files of the folder cannot be used; the message names each file, line and reason."""


def raise_jobnet_errors(folder: str | Path) -> None:
    """Raise :class:`JobnetFolderError` listing every broken jobnet file (for an import error in the UI)."""
    library = cached_library(folder)
    if library.errors:
        raise JobnetFolderError(
            f"{len(library.errors)} jobnet file(s) in {folder} cannot be used "
            "(the other jobnets are DAGs as usual):\n" + "\n".join(str(err) for err in library.errors)
        )
