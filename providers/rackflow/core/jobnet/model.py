"""The jobnet model: named steps that run shell commands on named servers, each with an optional revert.

One model serves both front doors: YAML files (see :mod:`rackflow.core.jobnet.loader`) and the Python
API (``Jobnet(...).then(Step(...)).then([Step(...), Step(...)])``). Both produce the same object, so
the DAG factory and the revert planner never care where a jobnet came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rackflow.core.jobnet.params import PARAM_ENV_PREFIX, ParamType, ParamValue, coerce_param

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
PARAM_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
LOCAL_SERVER = "local"
"""Reserved server name: the Airflow worker itself, no SSH."""

DEFER_CHECKS = "rackflow_jobnet_defer_checks"
"""Validation-context flag: the loader runs cross-field checks itself so it can point at their lines."""

Slug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=100)]
ParamName = Annotated[str, Field(pattern=PARAM_NAME_PATTERN, max_length=100)]


@dataclass(frozen=True)
class JobnetProblem:
    """One thing wrong with a jobnet, pointing at the file, line and YAML path when they are known."""

    reason: str
    file: Path | None = None
    line: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = (
            "" if self.file is None else f"{self.file}:" if self.line is None else f"{self.file}:{self.line}:"
        )
        return " ".join(part for part in (where, f"{self.path}:" if self.path else "", self.reason) if part)


class JobnetError(ValueError):
    """A jobnet cannot be used; one line per problem, each ``file:line: yaml.path: reason``."""

    def __init__(self, problems: Sequence[JobnetProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))

    @classmethod
    def single(cls, reason: str, **where: Any) -> JobnetError:
        return cls([JobnetProblem(reason, **where)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_value_to_str(value: Any) -> Any:
    """YAML reads ``PORT: 8020`` as an int and ``yes`` as a bool; the environment only holds strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
EnvValue = Annotated[str, BeforeValidator(_env_value_to_str)]


class ParamSpec(_Strict):
    """A run parameter; steps receive it as the environment variable ``RACKFLOW_PARAM_<NAME>``."""

    type: ParamType = "string"
    default: ParamValue | None = Field(default=None, description="No default: the parameter is required.")
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _default_matches_type(cls, data: Any) -> Any:
        """Coerce the default now (``"8020"`` -> ``8020``) so a bad one fails at load, not at run."""
        if isinstance(data, dict) and data.get("default") is not None:
            kind = data.get("type", "string")
            if kind in ("string", "integer", "number", "boolean"):
                try:
                    data = {**data, "default": coerce_param(kind, data["default"])}
                except ValueError as err:
                    raise ValueError(f"default does not fit type {kind}: {err}") from None
        return data


class SshServer(_Strict):
    """A server reached through an Airflow SSH connection."""

    ssh_conn_id: str = Field(min_length=1)


class VmServer(_Strict):
    """A VM of the inventory, by name; the Airflow layer finds its address and SSH connection."""

    vm: str = Field(min_length=1)


class LaunchedServer(_Strict):
    """The ``index``-th server a launch step (outside the jobnet) produced, known only at run time."""

    from_launch: str = Field(min_length=1)
    index: int = Field(default=0, ge=0)


_SERVER_TAGS = {"ssh_conn_id": "ssh", "vm": "vm", "from_launch": "launch"}
_SERVER_TYPES: dict[type, str] = {SshServer: "ssh", VmServer: "vm", LaunchedServer: "launch"}


def _server_tag(value: Any) -> str | None:
    """Pick the server kind by its key so errors speak of that kind, not of every union member."""
    if isinstance(value, dict):
        tags = [tag for key, tag in _SERVER_TAGS.items() if key in value]
        return tags[0] if len(tags) == 1 else None
    return _SERVER_TYPES.get(type(value))


ServerSpec = Annotated[
    Annotated[SshServer, Tag("ssh")]
    | Annotated[VmServer, Tag("vm")]
    | Annotated[LaunchedServer, Tag("launch")],
    Discriminator(
        _server_tag,
        custom_error_type="server_kind",
        custom_error_message="a server needs exactly one of ssh_conn_id, vm or from_launch",
    ),
]


class _Action(_Strict):
    """What runs on a server: a command or a shipped script, with its environment and limits."""

    command: str | None = Field(default=None, description="Inline shell, run by the server's shell.")
    script: str | None = Field(default=None, description="File relative to the YAML file, shipped and run.")
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    workdir: str | None = None
    timeout: float | None = Field(default=None, gt=0, description="Seconds; none means the operator default.")
    retries: int = Field(default=0, ge=0)

    @field_validator("env")
    @classmethod
    def _no_param_prefix(cls, env: dict[str, str]) -> dict[str, str]:
        taken = sorted(name for name in env if name.upper().startswith(PARAM_ENV_PREFIX))
        if taken:
            raise ValueError(f"env names starting with {PARAM_ENV_PREFIX} are reserved for params: {taken}")
        return env

    @model_validator(mode="after")
    def _command_or_script(self) -> _Action:
        if (self.command is None) == (self.script is None):
            raise ValueError("needs exactly one of command or script")
        if self.command is not None and not self.command.strip():
            raise ValueError("command is empty")
        if self.script is not None and not self.script.strip():
            raise ValueError("script is empty")
        return self


class Revert(_Action):
    """Undoes a step; runs on the step's server, with its env and workdir, unless it sets its own."""

    server: Slug | None = None


class Step(_Action):
    id: Slug = Field(description="Unique across the jobnet; becomes the Airflow task id.")
    server: Slug = Field(description=f"A name from the jobnet's servers, or {LOCAL_SERVER!r}.")
    revert: Revert | None = None


def _stage_tag(value: Any) -> str:
    return "group" if isinstance(value, list | tuple) else "step"


StageSpec = Annotated[
    Annotated[Step, Tag("step")] | Annotated[list[Step], Field(min_length=1), Tag("group")],
    Discriminator(_stage_tag),
]
"""One element of ``steps``: a step, or a list of steps that run in parallel."""

Loc = tuple[str | int, ...]


class Jobnet(_Strict):
    """A named, ordered list of stages; a failure reverts the finished steps in reverse order."""

    name: Slug
    description: str = ""
    params: dict[ParamName, ParamSpec] = Field(default_factory=dict)
    servers: dict[Slug, ServerSpec] = Field(default_factory=dict)
    include: list[Slug] = Field(
        default_factory=list, description="Jobnets by name whose steps run first, ids prefixed 'name.'."
    )
    steps: list[StageSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Jobnet:
        if info.context and info.context.get(DEFER_CHECKS):
            return self
        problems = cross_check(self)
        if problems:
            raise ValueError("; ".join(f"{format_loc(loc)}: {reason}" for loc, reason in problems))
        return self

    def then(self, stage: Step | Sequence[Step]) -> Jobnet:
        """A copy with one more stage: a step, or a sequence of steps that run in parallel."""
        added: Step | list[Step] = stage if isinstance(stage, Step) else list(stage)
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**fields, "steps": [*self.steps, added]})

    def indexed_steps(self) -> list[tuple[Loc, Step]]:
        """Every step with its location in ``steps`` (``("steps", 2)`` or ``("steps", 2, 0)``)."""
        found: list[tuple[Loc, Step]] = []
        for i, stage in enumerate(self.steps):
            if isinstance(stage, Step):
                found.append((("steps", i), stage))
            else:
                found.extend((("steps", i, j), step) for j, step in enumerate(stage))
        return found


def cross_check(jobnet: Jobnet) -> list[tuple[Loc, str]]:
    """Checks across fields (server names, unique ids); each problem carries its location for the loader."""
    problems: list[tuple[Loc, str]] = []
    if LOCAL_SERVER in jobnet.servers:
        problems.append((("servers", LOCAL_SERVER), f"{LOCAL_SERVER!r} is reserved for the worker itself"))
    known = sorted(jobnet.servers)
    seen: set[str] = set()
    for loc, step in jobnet.indexed_steps():
        if step.id in seen:
            problems.append(((*loc, "id"), f"step id {step.id!r} is used twice"))
        seen.add(step.id)
        if step.server != LOCAL_SERVER and step.server not in jobnet.servers:
            problems.append(
                (
                    (*loc, "server"),
                    f"step {step.id!r}: server {step.server!r} is not defined in servers {known}",
                )
            )
        revert_server = step.revert.server if step.revert else None
        if revert_server not in (None, LOCAL_SERVER) and revert_server not in jobnet.servers:
            problems.append(
                (
                    (*loc, "revert", "server"),
                    f"step {step.id!r}: revert server {revert_server!r} is not defined in servers {known}",
                )
            )
    included: set[str] = set()
    for i, name in enumerate(jobnet.include):
        if name == jobnet.name:
            problems.append((("include", i), f"jobnet {name!r} includes itself"))
        elif name in included:
            problems.append((("include", i), f"jobnet {name!r} is included twice"))
        included.add(name)
    return problems


def format_loc(loc: Loc) -> str:
    """``("steps", 2, "server")`` -> ``steps[2].server``: the YAML path a person searches for."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top)"
