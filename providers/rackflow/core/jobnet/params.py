"""Run parameters: typed, coerced, and handed to commands as environment variables.

Parameters never get formatted into a command line. A step reads ``$RACKFLOW_PARAM_<NAME>`` in its
own shell, so a value such as ``; rm -rf /`` stays data. The only place values meet shell text is
:func:`shell_exports`, which quotes each one with :func:`shlex.quote` for transports that cannot
pass an environment (most sshd configurations refuse ``SendEnv``).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Protocol

from rackflow.core.values import parse_bool

if TYPE_CHECKING:
    from rackflow.core.jobnet.model import ParamSpec

ParamType = Literal["string", "integer", "number", "boolean"]
ParamValue = str | int | float | bool
PARAM_ENV_PREFIX = "RACKFLOW_PARAM_"


class JobnetParamError(ValueError):
    """Parameters do not fit the jobnet's declarations; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def coerce_param(kind: ParamType, value: object) -> ParamValue:
    """``value`` as ``kind``; strings are parsed because Airflow run confs and UI forms often send text."""
    if kind == "boolean":
        if not isinstance(value, bool | str):
            raise ValueError(f"expected a boolean (true/false/yes/no/on/off/1/0), got {value!r}")
        return parse_bool(value)
    if isinstance(value, bool):
        raise ValueError(f"expected {kind}, got boolean {value!r}")
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float):
            return str(value)
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    if kind == "integer":
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def resolve_params(specs: Mapping[str, ParamSpec], values: Mapping[str, object]) -> dict[str, ParamValue]:
    """Every declared parameter with its value: given ones coerced, missing ones defaulted.

    Raises :class:`JobnetParamError` naming each unknown, missing or mistyped parameter at once, so
    a user fixes a run conf in one go.
    """
    problems = [f"unknown param {name!r} (declared: {sorted(specs)})" for name in values if name not in specs]
    resolved: dict[str, ParamValue] = {}
    for name, spec in specs.items():
        if name in values and values[name] is not None:
            try:
                resolved[name] = coerce_param(spec.type, values[name])
            except ValueError as err:
                problems.append(f"param {name!r}: {err}")
        elif spec.default is not None:
            resolved[name] = spec.default
        else:
            problems.append(f"param {name!r} is required ({spec.type}) and has no default")
    if problems:
        raise JobnetParamError(problems)
    return resolved


def param_env_name(name: str) -> str:
    return PARAM_ENV_PREFIX + name.upper()


def param_env_value(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 2**53 else repr(value)
    return str(value)


class HasEnv(Protocol):
    @property
    def env(self) -> Mapping[str, str]: ...


def step_env(step: HasEnv, specs: Mapping[str, ParamSpec], values: Mapping[str, object]) -> dict[str, str]:
    """The environment a step (or revert) runs with: its declared ``env`` plus one variable per param.

    ``values`` are validated and coerced against ``specs`` first (see :func:`resolve_params`).
    Declared env names cannot start with ``RACKFLOW_PARAM_``, so the two never collide.
    """
    resolved = resolve_params(specs, values)
    env = dict(step.env)
    env.update({param_env_name(name): param_env_value(value) for name, value in resolved.items()})
    return env


def shell_exports(env: Mapping[str, str]) -> str:
    """``export NAME='value'`` lines for a POSIX shell, each value quoted so it cannot become code.

    For SSH sessions where the server will not accept environment variables: prepend this to the
    step's command. Names must be shell identifiers (the model enforces it for declared env).
    """
    lines = []
    for name, value in env.items():
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"{name!r} is not a valid environment variable name")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines)
