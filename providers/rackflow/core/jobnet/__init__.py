"""Environment-building jobnets: steps run shell commands on named servers; a failure reverts the rest.

A jobnet is data (YAML in ``jobnets/``) or Python (``Jobnet(...).then(...)``); both give one model.
:func:`load_jobnets` reads a folder, :meth:`JobnetLibrary.stages` flattens a jobnet for the DAG
factory, :func:`step_env` gives a step its environment (params included) and :func:`plan_revert`
says what to undo, in which order, after a failure. Nothing here imports Airflow.
"""

from rackflow.core.jobnet.loader import JobnetLibrary, load_jobnet_file, load_jobnets
from rackflow.core.jobnet.model import (
    LOCAL_SERVER,
    Jobnet,
    JobnetError,
    JobnetProblem,
    LaunchedServer,
    ParamSpec,
    Revert,
    ServerSpec,
    SshServer,
    Step,
    VmServer,
)
from rackflow.core.jobnet.params import (
    JobnetParamError,
    coerce_param,
    param_env_name,
    resolve_params,
    shell_exports,
    step_env,
)
from rackflow.core.jobnet.plan import (
    BoundAction,
    FlatStep,
    ReportRow,
    Reverted,
    RevertPlan,
    Stage,
    StepResult,
    StepState,
    build_report,
    flatten_stages,
    format_report,
    merged_params,
    plan_revert,
)

__all__ = [
    "LOCAL_SERVER",
    "BoundAction",
    "FlatStep",
    "Jobnet",
    "JobnetError",
    "JobnetLibrary",
    "JobnetParamError",
    "JobnetProblem",
    "LaunchedServer",
    "ParamSpec",
    "ReportRow",
    "Revert",
    "RevertPlan",
    "Reverted",
    "ServerSpec",
    "SshServer",
    "Stage",
    "Step",
    "StepResult",
    "StepState",
    "VmServer",
    "build_report",
    "coerce_param",
    "flatten_stages",
    "format_report",
    "load_jobnet_file",
    "load_jobnets",
    "merged_params",
    "param_env_name",
    "plan_revert",
    "resolve_params",
    "shell_exports",
    "step_env",
]
