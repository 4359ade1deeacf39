"""GA4GH Task Execution Service (TES) v1.1 tasks as rackflow batch jobs: the types and the mapping.

A TES task becomes one :class:`~rackflow.core.jobspec.JobDescription`: its ``executors[]`` run in order
inside one scheduler job, from a generated ``/bin/bash -c`` script that stops at the first executor
failing without ``ignore_error`` and exits with that executor's code. TES paths are container paths
(absolute); rackflow maps each onto the same path relative to the job directory (``/data/in.txt`` ->
``<job directory>/data/in.txt``):

* ``inputs[]`` with a ``url`` -> ``stage_in`` (the site's staging allow-lists apply); with inline
  ``content`` -> written by the script before the first executor;
* ``outputs[]`` -> ``stage_out``;
* with a container runtime (``[rackflow] tes_container_runtime``: ``apptainer`` or ``singularity``)
  each executor runs as ``<runtime> exec --bind <job dir>/<top>:/<top> ... docker://<image> <command>``
  so the task sees its paths where it named them;
* with ``bwrap`` (bubblewrap: no image, for sites without a container runtime) the image is recorded
  only and each executor runs on the node's own filesystem, as the job account, in an unprivileged
  mount namespace where each top-level directory the task names (``/tmp``, ``/data``) is the job
  directory's one: the task sees its paths where it named them, and nothing else changes (no new
  rights: bubblewrap is not setuid, and the user namespace keeps the job account's uid);
* without any, the command runs as it is, in the job directory (or its ``workdir`` mapped the same
  way), and its paths are read relative to it;
* ``resources``: ``cpu_cores`` -> ``cpu_cores_per_process``, ``ram_gb`` -> ``memory``, ``disk_gb`` ->
  Slurm's ``--tmp``, a single ``zones`` entry -> the queue (partition), ``preemptible`` is recorded
  only; ``backend_parameters`` take the job description's attributes (:data:`BACKEND_PARAMETERS`) and
  ``<scheduler>.<option>`` custom attributes rackflow lets users set.

States (:func:`tes_state`) come from the job record and its DAG run. Pure: no Airflow, no I/O.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rackflow.core.jobspec import (
    CUSTOM_KEY_PATTERN,
    MAX_TEXT,
    JobDescription,
    JobDescriptionError,
    parse_job_description,
)
from rackflow.core.staging_policy import job_path_problem

TES_VERSION = "1.1.0"
CONTAINER_RUNTIMES = ("apptainer", "singularity", "bwrap")
"""``[rackflow] tes_container_runtime`` values: two that run images, and ``bwrap`` that runs none."""
BACKEND_PARAMETERS = ("duration", "queue_name", "account", "reservation_id")
"""``backend_parameters`` keys besides ``<scheduler>.<option>``: the job description's attributes."""
DEFAULT_MARKER = "rackflow-tes"
"""Start of an executor section's header in a job's stdout/stderr (the API adds a per-task nonce)."""
STATUS_DIR = ".tes"
"""Directory inside the job directory where the script records each executor's exit code."""

MAX_EXECUTORS = 32
MAX_FILES = 256
MAX_SHORT = 1024
MAX_TAGS = 64
MAX_CONTENT = 65536
MAX_GB = 1 << 20


class TesState(StrEnum):
    """The 11 TES task states (no other value may reach a client: py-tes refuses it)."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


class View(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


Short = Annotated[str, Field(max_length=MAX_SHORT, pattern=r"^[^\x00]*$")]
Long = Annotated[str, Field(max_length=MAX_TEXT, pattern=r"^[^\x00]*$")]
AbsPath = Annotated[str, Field(min_length=2, max_length=MAX_SHORT, pattern=r"^/[^\x00]*$")]
EnvName = Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Gb = Annotated[float, Field(gt=0, le=MAX_GB, allow_inf_nan=False)]


class _Tes(BaseModel):
    """TES objects: unknown fields refused, absent fields omitted from responses (py-tes is strict)."""

    model_config = ConfigDict(extra="forbid")


class TesInput(_Tes):
    name: Short | None = None
    description: Long | None = None
    url: Long | None = Field(default=None, description="s3://, sftp:// or http(s):// (site allow-lists).")
    path: AbsPath = Field(description="Container path; maps to the same path inside the job directory.")
    type: Literal["FILE", "DIRECTORY"] = "FILE"
    content: Annotated[str, Field(max_length=MAX_CONTENT)] | None = None
    streamable: bool | None = None

    @model_validator(mode="after")
    def _url_or_content(self) -> TesInput:
        if (self.url is None) == (self.content is None):
            raise ValueError("give exactly one of url and content")
        if self.content is not None and self.type != "FILE":
            raise ValueError("inline content is a FILE input")
        return self


class TesOutput(_Tes):
    name: Short | None = None
    description: Long | None = None
    url: Long = Field(description="s3:// or sftp:// (site allow-lists).")
    path: AbsPath
    path_prefix: Short | None = None
    type: Literal["FILE", "DIRECTORY"] = "FILE"

    @field_validator("path_prefix")
    @classmethod
    def _no_wildcards(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("wildcard outputs (path_prefix) are not supported: name each output")
        return value


class TesResources(_Tes):
    cpu_cores: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    preemptible: bool | None = None
    ram_gb: Gb | None = None
    disk_gb: Gb | None = None
    zones: Annotated[list[Short], Field(max_length=16)] | None = None
    backend_parameters: Annotated[dict[Short, Short], Field(max_length=64)] | None = None
    backend_parameters_strict: bool | None = None


class TesExecutor(_Tes):
    image: Annotated[str, Field(min_length=1, max_length=MAX_SHORT, pattern=r"^[^\x00-\x20\x7f]+$")]
    command: Annotated[list[Long], Field(min_length=1, max_length=1024)]
    workdir: AbsPath | None = None
    stdin: AbsPath | None = None
    stdout: AbsPath | None = None
    stderr: AbsPath | None = None
    env: Annotated[dict[EnvName, Long], Field(max_length=256)] | None = None
    ignore_error: bool | None = None


class TesExecutorLog(_Tes):
    start_time: datetime | None = None
    end_time: datetime | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None


class TesOutputFileLog(_Tes):
    url: str
    path: str
    size_bytes: str


class TesTaskLog(_Tes):
    logs: list[TesExecutorLog] = []
    metadata: dict[str, str] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    outputs: list[TesOutputFileLog] = []
    system_logs: list[str] | None = None


class TesTask(_Tes):
    """A task as submitted (``id``, ``state``, ``logs`` and ``creation_time`` are the server's)."""

    id: Short | None = None
    state: TesState | None = None
    name: Short | None = None
    description: Long | None = None
    inputs: Annotated[list[TesInput], Field(max_length=MAX_FILES)] | None = None
    outputs: Annotated[list[TesOutput], Field(max_length=MAX_FILES)] | None = None
    resources: TesResources | None = None
    executors: Annotated[list[TesExecutor], Field(min_length=1, max_length=MAX_EXECUTORS)]
    volumes: Annotated[list[AbsPath], Field(max_length=MAX_FILES)] | None = None
    tags: Annotated[dict[Short, Short], Field(max_length=MAX_TAGS)] | None = None
    logs: list[TesTaskLog] | None = None
    creation_time: datetime | None = None


class TesTaskError(ValueError):
    """The task cannot run here; ``problems`` are ``field: problem`` with TES field names."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid task: " + "; ".join(problems))
        self.problems = problems


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "constrained-", "literal")) or part == "[key]":
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_task(data: object) -> TesTask:
    """Validate a ``POST /tasks`` body; :class:`TesTaskError` names each offending field."""
    if not isinstance(data, Mapping):
        raise TesTaskError([f"task must be a JSON object, got {type(data).__name__}"])
    submitted = {k: v for k, v in data.items() if k not in ("id", "state", "logs", "creation_time")}
    try:
        return TesTask.model_validate(submitted)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (not part of a TES 1.1 task)"
            where = _loc(tuple(err["loc"]))
            problems.append(f"{where}: {msg}" if where else msg)
        raise TesTaskError(problems) from exc


def job_path(container_path: str, field: str) -> str:
    """A TES container path as the job-directory-relative path it maps to (``/data/x`` -> ``data/x``)."""
    rel = container_path.lstrip("/")
    problem = job_path_problem(rel)
    if problem:
        raise TesTaskError([f"{field}: {problem}"])
    return rel


def _binds(task: TesTask) -> list[str]:
    """Top-level container directories the task names: each is bound to the job directory's one."""
    paths = [f.path for f in task.inputs or []] + [o.path for o in task.outputs or []]
    paths += task.volumes or []
    for e in task.executors:
        paths += [p for p in (e.workdir, e.stdin, e.stdout, e.stderr) if p is not None]
    rels = [p.lstrip("/") for p in paths]
    return sorted({rel.split("/")[0] for rel in rels if job_path_problem(rel) is None})


def _bwrap_root(binds: Sequence[str]) -> list[str]:
    """Script lines that collect, in ``rf_root``, bubblewrap arguments giving the node's ``/`` less the
    task's top-level directories (each a bind mount or symlink, as on the node)."""
    skip = "|".join(shlex.quote(top) for top in binds) or "''"
    return [
        "rf_root=()",
        "for d in /*; do",
        f'  case "${{d#/}}" in {skip}) continue ;; esac',
        '  if [ -L "$d" ]; then rf_root+=(--symlink "$(readlink "$d")" "$d")',
        '  elif [ -d "$d" ]; then rf_root+=(--dev-bind "$d" "$d"); fi',
        "done",
    ]


def _runtime_argv(runtime: str, e: TesExecutor, binds: Sequence[str]) -> str:
    """The command line running executor ``e`` under ``runtime`` with the task's paths bound."""
    q = shlex.quote
    if runtime == "bwrap":
        argv = 'bwrap --unshare-user --die-with-parent "${rf_root[@]}"'
        argv += "".join(f' --bind "$top"/{q(top)} {q("/" + top)}' for top in binds)
        # Without a workdir the executor starts in the job directory, as without a runtime.
        argv += f" --chdir {q(e.workdir)}" if e.workdir else ' --bind "$top" "$top" --chdir "$top"'
        return argv + " -- " + " ".join(q(part) for part in e.command)
    image = e.image if "://" in e.image else f"docker://{e.image}"
    argv = f"{q(runtime)} exec"
    argv += "".join(f' --bind "$top"/{q(top)}:{q("/" + top)}' for top in binds)
    argv += f" --pwd {q(e.workdir)}" if e.workdir else ""
    return argv + " " + " ".join(q(part) for part in [image, *e.command])


def executor_script(task: TesTask, container_runtime: str | None = None, marker: str = DEFAULT_MARKER) -> str:
    """The bash script that prepares the task's paths and runs its executors in order.

    Each executor's exit code is written to ``.tes/exit.<index>`` in the job directory; the script
    exits with the first code of an executor that failed without ``ignore_error`` (later executors do
    not run), else 0. Each executor's stdout and stderr go to its ``stdout``/``stderr`` path, or to
    ``.tes/stdout.<index>``/``.tes/stderr.<index>``, and once it ended the script writes them to its own
    stdout and stderr as a section: the line ``<marker> <index> <exit code> <bytes>``, then the bytes.
    """
    q = shlex.quote
    lines = ["top=$PWD", f"mkdir -p {STATUS_DIR}"]
    dirs: set[str] = set()
    for i, e in enumerate(task.executors):
        for name in ("workdir",):
            if e.workdir:
                dirs.add(job_path(e.workdir, f"executors[{i}].{name}"))
        for name in ("stdout", "stderr"):
            value = getattr(e, name)
            if value:
                parent = str(PurePosixPath(job_path(value, f"executors[{i}].{name}")).parent)
                if parent != ".":
                    dirs.add(parent)
    for i, v in enumerate(task.volumes or []):
        dirs.add(job_path(v, f"volumes[{i}]"))
    for i, o in enumerate(task.outputs or []):
        rel = job_path(o.path, f"outputs[{i}].path")
        parent = rel if o.type == "DIRECTORY" else str(PurePosixPath(rel).parent)
        if parent != ".":
            dirs.add(parent)
    binds = _binds(task)
    if container_runtime:
        dirs.update(binds)
    if dirs:
        lines.append("mkdir -p -- " + " ".join(q(d) for d in sorted(dirs)))
    if container_runtime == "bwrap":
        lines += _bwrap_root(binds)
    for i, f in enumerate(task.inputs or []):
        if f.content is not None:
            rel = job_path(f.path, f"inputs[{i}].path")
            parent = str(PurePosixPath(rel).parent)
            if parent != ".":
                lines.append(f"mkdir -p -- {q(parent)}")
            encoded = base64.b64encode(f.content.encode()).decode()
            lines.append(f"printf %s {encoded} | base64 -d > {q(rel)} || exit 1")
    for i, e in enumerate(task.executors):
        if container_runtime:
            argv = _runtime_argv(container_runtime, e, binds)
            cd = ""
        else:
            argv = " ".join(q(part) for part in e.command)
            cd = f"cd -- {q(job_path(e.workdir, f'executors[{i}].workdir'))} && " if e.workdir else ""
        env = "".join(f"export {k}={q(v)}; " for k, v in (e.env or {}).items())
        files = {}
        for name in ("stdout", "stderr"):
            value = getattr(e, name)
            rel = job_path(value, f"executors[{i}].{name}") if value else f"{STATUS_DIR}/{name}.{i}"
            files[name] = f'"$top"/{q(rel)}'
        redirects = f' < "$top"/{q(job_path(e.stdin, f"executors[{i}].stdin"))}' if e.stdin else ""
        redirects += f" > {files['stdout']} 2> {files['stderr']}"
        lines.append(f"( {env}{cd}exec {argv}{redirects} )")
        lines.append(f"rc=$?; echo $rc > {STATUS_DIR}/exit.{i}")
        # The executor's section of the job's stdout and stderr: a header with its index, exit code
        # and byte count, then its output (read back by executor_sections).
        for name, to in (("stdout", ""), ("stderr", " >&2")):
            size = f"$(($(wc -c < {files[name]} 2>/dev/null || echo 0)))"
            header = f'printf \'%s %s %s %s\\n\' {q(marker)} {i} "$rc" "{size}"'
            lines.append(f"{{ {header}; cat {files[name]}; }}{to}")
        if not e.ignore_error:
            lines.append('[ "$rc" -eq 0 ] || exit "$rc"')
    lines.append("exit 0")
    return "\n".join(lines)


def _attributes(resources: TesResources | None) -> tuple[dict[str, Any], list[str]]:
    attributes: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    problems: list[str] = []
    if resources is None:
        return attributes, problems
    if resources.zones:
        if len(resources.zones) > 1:
            problems.append("resources.zones: give at most one zone (it is the scheduler queue/partition)")
        else:
            attributes["queue_name"] = resources.zones[0]
    if resources.disk_gb is not None:
        custom["slurm.tmp"] = f"{max(1, round(resources.disk_gb * 1024))}M"
    for key, value in (resources.backend_parameters or {}).items():
        if key in BACKEND_PARAMETERS:
            attributes[key] = value
        elif re.match(CUSTOM_KEY_PATTERN, key):
            custom[key] = value
        elif resources.backend_parameters_strict:
            problems.append(
                f"resources.backend_parameters.{key[:80]}: not a parameter rackflow takes (use "
                f"{', '.join(BACKEND_PARAMETERS)} or '<scheduler>.<option>')"
            )
    if custom:
        attributes["custom_attributes"] = custom
    return attributes, problems


SCRIPT_DRIVER = 'eval "$(printf %s "$@")"'
"""``bash -c`` program that runs the generated script passed as its positional arguments."""
SCRIPT_CHUNK = 4000


def _chunks(script: str) -> list[str]:
    return [script[i : i + SCRIPT_CHUNK] for i in range(0, len(script), SCRIPT_CHUNK)] or [":"]


def _tes_field(problem: str, stage_in_index: list[int]) -> str:
    """A job description problem renamed to the TES field it came from."""
    m = re.match(r"^stage_in\[(\d+)\]\.(source|target)", problem)
    if m:
        field = "url" if m.group(2) == "source" else "path"
        return f"inputs[{stage_in_index[int(m.group(1))]}].{field}" + problem[m.end() :]
    m = re.match(r"^stage_out\[(\d+)\]\.(source|target)", problem)
    if m:
        field = "path" if m.group(2) == "source" else "url"
        return f"outputs[{m.group(1)}].{field}" + problem[m.end() :]
    m = re.match(r"^arguments(\[\d+\])?", problem)
    if m:
        return (
            "executors" + problem[m.end() :] + " (the generated job script, with the executors' commands "
            "and the inputs' inline content, is longer than a job description allows)"
        )
    m = re.match(r"^attributes\.custom_attributes\.?", problem)
    if m:
        return "resources.backend_parameters" + problem[len("attributes.custom_attributes") :]
    m = re.match(r"^attributes\.", problem)
    if m:
        return "resources.backend_parameters." + problem[m.end() :]
    return problem


def to_job_description(
    task: TesTask,
    container_runtime: str | None = None,
    marker: str = DEFAULT_MARKER,
    executor_path: str | None = None,
) -> JobDescription:
    """The rackflow job that runs ``task`` (:class:`TesTaskError` names TES fields); ``executor_path``
    is the job's PATH (an executor's own ``env`` may still set another)."""
    problems: list[str] = []
    stage_in: list[dict[str, str]] = []
    stage_in_index: list[int] = []
    for i, f in enumerate(task.inputs or []):
        try:
            rel = job_path(f.path, f"inputs[{i}].path")
        except TesTaskError as exc:
            problems += exc.problems
            continue
        if f.url is not None:
            stage_in.append({"source": f.url, "target": rel + ("/" if f.type == "DIRECTORY" else "")})
            stage_in_index.append(i)
    stage_out: list[dict[str, str]] = []
    for i, o in enumerate(task.outputs or []):
        try:
            stage_out.append({"source": job_path(o.path, f"outputs[{i}].path"), "target": o.url})
        except TesTaskError as exc:
            problems += exc.problems
    attributes, attr_problems = _attributes(task.resources)
    problems += attr_problems
    try:
        script = executor_script(task, container_runtime, marker)
    except TesTaskError as exc:
        problems += exc.problems
        script = ""
    if problems:
        raise TesTaskError(list(dict.fromkeys(problems)))
    data: dict[str, Any] = {
        "executable": "/bin/bash",
        # The script travels in argument-sized chunks that bash joins back (one argument is bounded).
        "arguments": ["-c", SCRIPT_DRIVER, "rackflow-tes", *_chunks(script)],
        "stage_in": stage_in,
        "stage_out": stage_out,
        "attributes": attributes,
    }
    if executor_path:
        data["environment"] = {"PATH": executor_path}
    if task.name:
        data["name"] = re.sub(r'[\x00-\x1f\x7f"]', " ", task.name)[:256] or None
    r = task.resources
    if r is not None and (r.cpu_cores is not None or r.ram_gb is not None):
        resources: dict[str, Any] = {"process_count": 1}
        if r.cpu_cores is not None:
            resources["cpu_cores_per_process"] = r.cpu_cores
        if r.ram_gb is not None:
            resources["memory"] = max(1, int(r.ram_gb * (1 << 30)))
        data["resources"] = resources
    try:
        return parse_job_description({k: v for k, v in data.items() if v is not None})
    except JobDescriptionError as exc:
        raise TesTaskError([_tes_field(p, stage_in_index) for p in exc.problems]) from exc


def staging_problems_as_tes(problems: Sequence[str], task: TesTask) -> list[str]:
    """Staging allow-list problems (``stage_in[i].source: ...``) renamed to TES fields."""
    index = [i for i, f in enumerate(task.inputs or []) if f.url is not None]
    return [_tes_field(p, index) for p in problems]


def tes_state(
    *,
    job_state: str | None,
    run_state: str | None,
    exit_code: int | None,
    submitted: bool,
    terminate_requested: bool,
) -> TesState:
    """The TES state of a job from its record's PSI/J state and its DAG run's state.

    QUEUED until the record exists, INITIALIZING while staging in, QUEUED in the scheduler's queue,
    RUNNING while it runs and while its outputs are staged out; COMPLETE once the run succeeded;
    EXECUTOR_ERROR when the job exited non-zero; SYSTEM_ERROR for any other failure (staging, the
    scheduler's refusal, a failed stage); CANCELING from the termination request until the run ends,
    then CANCELED.
    """
    finished = run_state in ("success", "failed")
    if job_state == "CANCELED" or (terminate_requested and finished and job_state != "COMPLETED"):
        return TesState.CANCELED
    if terminate_requested and not finished:
        return TesState.CANCELING
    if job_state == "FAILED":
        return TesState.EXECUTOR_ERROR if exit_code not in (None, 0) else TesState.SYSTEM_ERROR
    if run_state == "success":
        return TesState.COMPLETE
    if run_state == "failed":
        return TesState.SYSTEM_ERROR  # e.g. stage_out failed after the job completed
    if job_state == "COMPLETED":
        return TesState.RUNNING  # outputs are being staged out
    if job_state == "ACTIVE":
        return TesState.RUNNING
    if job_state is None:
        return TesState.QUEUED
    return TesState.QUEUED if submitted else TesState.INITIALIZING


class ExecutorSection(BaseModel):
    """What one executor's section of a job's kept stdout/stderr says."""

    exit_code: int
    stdout: str | None = None
    stderr: str | None = None


def executor_sections(stdout: bytes | None, stderr: bytes | None, marker: str) -> dict[int, ExecutorSection]:
    """The executor sections (see :func:`executor_script`) found in a job's kept stdout and stderr.

    The kept copies are tails: a section whose header was cut off is missing, one whose bytes were cut
    short at the end keeps what is there. Sections are read one after the other from the first header,
    so an executor printing something that looks like a header inside its own output is not misread.
    """
    found: dict[int, ExecutorSection] = {}
    header = re.compile(re.escape(marker.encode()) + rb" (\d{1,4}) (-?\d{1,5}) (\d{1,19})\n")
    first = re.compile(rb"(?m)^" + header.pattern)
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if not data:
            continue
        m = first.search(data)
        while m is not None:
            index, code, size = int(m.group(1)), int(m.group(2)), int(m.group(3))
            body = data[m.end() : m.end() + size]
            section = found.setdefault(index, ExecutorSection(exit_code=code))
            setattr(section, name, body.decode("utf-8", "replace"))
            m = header.match(data, m.end() + size)
    return found


def executor_logs(
    task: TesTask,
    state: TesState,
    exit_code: int | None,
    sections: Mapping[int, ExecutorSection] | None = None,
) -> list[TesExecutorLog]:
    """One entry per executor that ran, from its section of the job's kept output when there is one.

    Without sections (output not kept yet, or cut off): a COMPLETE task ran every executor, each one
    without ``ignore_error`` exiting 0; a failed task's exit code is the failing executor's, reported as
    one entry.
    """
    if sections:
        return [
            TesExecutorLog(exit_code=s.exit_code, stdout=s.stdout, stderr=s.stderr)
            for _, s in sorted(sections.items())
            if _ < len(task.executors)
        ]
    if state == TesState.COMPLETE:
        return [TesExecutorLog(exit_code=None if e.ignore_error else 0) for e in task.executors]
    if exit_code is not None:
        return [TesExecutorLog(exit_code=exit_code)]
    return []


__all__ = [
    "TesExecutor",
    "TesInput",
    "TesOutput",
    "TesResources",
    "TesState",
    "TesTask",
    "TesTaskError",
    "TesTaskLog",
    "View",
    "executor_logs",
    "executor_script",
    "executor_sections",
    "parse_task",
    "tes_state",
    "to_job_description",
]
