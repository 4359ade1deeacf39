"""The batch job description: what to run, with which resources, and which files to stage.

The model follows the PSI/J ``JobSpec`` JSON layout (same field names, ``resources.__version``, psij's
``"600.0 s"`` durations) so that documents written for psij are accepted as they are, and converts to
and from psij's own classes so psij tooling can be reused. On top of psij it adds ``stage_in`` and
``stage_out`` (the HPC Basic Profile's data staging), and it reads JSDL 1.0 with the HPC Profile
Application extension.

Validation is strict (``extra="forbid"``) and errors name the offending field, because the same model
feeds an Airflow ``Param`` schema: a DAG run whose conf is wrong is refused before any job is queued.
Every number, string and list is bounded (the ``MAX_*`` constants below): a duration of ``inf`` or
``1e400``, a count beyond what a scheduler or a database integer holds, or a megabyte argument is a
field error, never an overflow further down.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from xml.etree import ElementTree

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import fromstring as _xml_fromstring  # type: ignore[import-untyped]
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from rackflow.core.staging_policy import (
    JOB_PATH_MAX_CHARS,
    JOB_PATH_PATTERN,
    REMOTE_URI_PATTERN,
    STAGE_OUT_URI_PATTERN,
    job_path_problem,
    remote_problem,
)
from rackflow.core.values import (
    DURATION_STRING_PATTERN,
    MAX_DURATION,
    MAX_DURATION_TEXT,
    parse_bool,
    parse_duration,
)

JSDL_NS = "http://schemas.ggf.org/jsdl/2005/11/jsdl"
HPCPA_NS = "http://schemas.ggf.org/jsdl/2006/07/jsdl-hpcpa"
POSIX_NS = "http://schemas.ggf.org/jsdl/2005/11/jsdl-posix"

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
CUSTOM_KEY_PATTERN = r"^[A-Za-z0-9_]+\.[A-Za-z][A-Za-z0-9_-]*$"
# Text that ends up inside a scheduler directive line: one line, no quotes that could end the value.
DIRECTIVE_TEXT_PATTERN = r'^[^\x00-\x1f\x7f"]*$'
# Any other text: NUL cannot travel through argv or a shell script.
NO_NUL_PATTERN = r"^[^\x00]*$"


# Bounds of a job description. Counts stay far inside every scheduler's and database's integers.
MAX_COUNT = 1_048_576
"""Nodes, processes, processes per node, CPU and GPU cores per process."""
MAX_MEMORY = 2**50
"""Bytes (1 PiB)."""
MAX_TEXT = 4096
"""Characters of one argument, environment value, path or URI (Linux's PATH_MAX)."""
MAX_DIRECTIVE_TEXT = 256
"""Characters of a value that goes into a scheduler directive line (queue, account, name...)."""
MAX_ARGUMENTS = 1024
MAX_ENVIRONMENT = 256
MAX_NAME = 128
"""Characters of an environment variable name or a custom attribute key."""
MAX_CUSTOM_ATTRIBUTES = 64
MAX_STAGING_ENTRIES = 256
"""Entries of stage_in, and of stage_out."""
INT64_MAX = 2**63 - 1

# Scheduler options rackflow sets itself on every submit command line (job name, output files, working
# directory, environment, identity): a custom attribute may not name one, nor abbreviate a long one
# (Slurm and LSF accept unambiguous prefixes of long options). Keyed by the custom attribute prefix.
MANAGED_SCHEDULER_OPTIONS: dict[str, frozenset[str]] = {
    "slurm": frozenset(
        {
            "job-name", "J", "output", "o", "error", "e", "input", "i", "chdir", "D", "workdir",
            "export", "export-file", "get-user-env", "uid", "gid", "comment", "wrap", "parsable",
        }
    ),
    "pbs": frozenset({"N", "o", "e", "j", "k", "V", "v", "u", "d", "D"}),
    "lsf": frozenset({"J", "Jd", "cwd", "o", "oo", "e", "eo", "env", "i", "is", "outdir", "u"}),
    "sge": frozenset({"N", "o", "e", "j", "wd", "cwd", "V", "v", "i", "b", "terse", "@"}),
}  # fmt: skip


def managed_option(prefix: str, option: str) -> str | None:
    """The managed option ``<prefix>.<option>`` names or abbreviates, or None if it is free to set."""
    managed = MANAGED_SCHEDULER_OPTIONS.get(prefix, frozenset())
    if option in managed:
        return option
    if len(option) > 1:
        for name in sorted(managed):
            if len(name) > 1 and name.startswith(option):
                return name
    return None


class JobDescriptionError(ValueError):
    """The job description cannot be used; the message names each offending field."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: int(d.total_seconds()), return_type=int, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": int(MAX_DURATION.total_seconds())},
                {"type": "string", "pattern": DURATION_STRING_PATTERN, "maxLength": MAX_DURATION_TEXT},
            ],
            "description": "Walltime: seconds, 90s/15m/2h/2d, HH:MM:SS, D-HH:MM:SS or ISO 8601 (PT1H30M).",
        }
    ),
]
DirectiveText = Annotated[
    str, Field(min_length=1, max_length=MAX_DIRECTIVE_TEXT, pattern=DIRECTIVE_TEXT_PATTERN)
]
Text = Annotated[str, Field(max_length=MAX_TEXT, pattern=NO_NUL_PATTERN)]
PathText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=NO_NUL_PATTERN)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Memory = Annotated[int, Field(ge=1, le=MAX_MEMORY)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Location(BaseModel):
    """Where a staged file lives, split out of its URI so the caller picks the right hook."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["s3", "sftp", "https", "http", "local"]
    host: str | None = Field(default=None, description="S3 bucket, SSH connection id or web host.")
    path: str = Field(description="Key (s3), remote path (sftp), URL path (http[s]) or local path.")
    uri: str

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @classmethod
    def parse(cls, uri: str) -> Location:
        """Read ``s3://bucket/key``, ``sftp://<ssh_conn_id>/path``, ``https://...``, ``file://`` or a path."""
        if "://" not in uri:
            return cls(kind="local", path=uri, uri=uri)
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme == "file":
            return cls(kind="local", path=parts.path, uri=uri)
        if scheme not in ("s3", "sftp", "https", "http"):
            raise ValueError(f"unsupported URI scheme {scheme!r} (use s3, sftp, https, http or a path)")
        if not parts.netloc:
            raise ValueError(f"{uri!r} names no {'bucket' if scheme == 's3' else 'host'}")
        path = parts.path.lstrip("/") if scheme == "s3" else parts.path
        if scheme in ("s3", "sftp") and not path.strip("/"):
            raise ValueError(f"{uri!r} names no {'key' if scheme == 's3' else 'path'}")
        if scheme in ("http", "https") and parts.query:
            path = f"{path}?{parts.query}"
        return cls(kind=scheme, host=parts.netloc, path=path, uri=uri)  # type: ignore[arg-type]

    def resolve_local(self, job_directory: str) -> str:
        """A local path; relative paths are relative to the job directory."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local path")
        if PurePosixPath(self.path).is_absolute():
            return self.path
        return str(PurePosixPath(job_directory) / self.path)


class StagingEntry(_Strict):
    """One file or directory copied before (stage_in) or after (stage_out) the job."""

    source: PathText = Field(description="s3://bucket/key, sftp://<ssh_conn_id>/path, https://... or a path.")
    target: PathText = Field(description="Same forms as source; relative paths are in the job directory.")

    @field_validator("source", "target")
    @classmethod
    def _valid_uri(cls, value: str) -> str:
        Location.parse(value)
        return value

    @property
    def source_location(self) -> Location:
        return Location.parse(self.source)

    @property
    def target_location(self) -> Location:
        return Location.parse(self.target)


def _checked(problem_of: Any) -> Any:
    def check(value: str) -> str:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value

    return check


# The job's end of a staging entry: a relative path inside the job directory (see core.staging_policy).
JobPath = Annotated[
    str,
    AfterValidator(_checked(job_path_problem)),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": JOB_PATH_PATTERN,
            "maxLength": JOB_PATH_MAX_CHARS,
            "description": "A relative path inside the job directory (no '/' first, no '..').",
        }
    ),
]
StageInSource = Annotated[
    str,
    AfterValidator(_checked(lambda v: remote_problem(v, stage_out=False))),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": REMOTE_URI_PATTERN,
            "description": "s3://bucket/key, sftp://<ssh_conn_id>/path or http(s)://... "
            "(site allow-lists apply).",
        }
    ),
]
StageOutTarget = Annotated[
    str,
    AfterValidator(_checked(lambda v: remote_problem(v, stage_out=True))),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": STAGE_OUT_URI_PATTERN,
            "description": "s3://bucket/key or sftp://<ssh_conn_id>/path (site allow-lists apply).",
        }
    ),
]


class StageInEntry(StagingEntry):
    """A file or directory copied into the job directory before the job: remote source, job path target."""

    source: StageInSource  # type: ignore[assignment]
    target: JobPath  # type: ignore[assignment]


class StageOutEntry(StagingEntry):
    """A file or directory copied out of the job directory after the job: job path source, remote target."""

    source: JobPath  # type: ignore[assignment]
    target: StageOutTarget  # type: ignore[assignment]


class Resources(_Strict):
    """PSI/J ResourceSpecV1; process_count = node_count * processes_per_node when all three are set."""

    version: Literal[1] = Field(default=1, alias="__version", description="PSI/J resource spec version.")
    node_count: Count | None = None
    process_count: Count | None = None
    processes_per_node: Count | None = None
    cpu_cores_per_process: Count | None = None
    gpu_cores_per_process: Count | None = None
    exclusive_node_use: bool = False
    memory: Memory | None = Field(default=None, description="Total memory for the job, in bytes.")

    @model_validator(mode="after")
    def _consistent_counts(self) -> Resources:
        n, p, ppn = self.node_count, self.process_count, self.processes_per_node
        if n is not None and p is not None and ppn is not None and p != n * ppn:
            raise ValueError(f"process_count ({p}) must equal node_count ({n}) * processes_per_node ({ppn})")
        if n is None and p is not None and ppn is not None and p % ppn:
            raise ValueError(f"process_count ({p}) must be a multiple of processes_per_node ({ppn})")
        if ppn is None and p is not None and n is not None and p % n:
            raise ValueError(f"process_count ({p}) must be a multiple of node_count ({n})")
        return self

    @property
    def computed_node_count(self) -> int:
        if self.node_count is not None:
            return self.node_count
        if self.process_count is not None and self.processes_per_node is not None:
            return self.process_count // self.processes_per_node
        return 1

    @property
    def computed_process_count(self) -> int:
        if self.process_count is not None:
            return self.process_count
        if self.node_count is not None:
            return self.node_count * (self.processes_per_node or 1)
        return self.processes_per_node or 1

    @property
    def computed_processes_per_node(self) -> int:
        if self.processes_per_node is not None:
            return self.processes_per_node
        return max(1, self.computed_process_count // self.computed_node_count)


class Attributes(_Strict):
    """PSI/J JobAttributes: walltime, queue, account and scheduler-specific extras."""

    duration: Duration | None = None
    queue_name: DirectiveText | None = None
    account: DirectiveText | None = None
    project_name: DirectiveText | None = Field(
        default=None, description="Deprecated psij synonym of account; copied into account."
    )
    reservation_id: DirectiveText | None = None
    custom_attributes: dict[
        Annotated[str, Field(max_length=MAX_NAME, pattern=CUSTOM_KEY_PATTERN)],
        Annotated[str, Field(max_length=MAX_DIRECTIVE_TEXT, pattern=DIRECTIVE_TEXT_PATTERN)]
        | Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
        | Annotated[float, Field(allow_inf_nan=False, ge=-1e18, le=1e18)]
        | bool,
    ] = Field(
        default_factory=dict,
        max_length=MAX_CUSTOM_ATTRIBUTES,
        json_schema_extra={"additionalProperties": False},
        description="'<scheduler>.<option>' -> value, e.g. {'slurm.qos': 'debug', 'pbs.l': 'host=n1'}.",
    )

    @field_validator("custom_attributes")
    @classmethod
    def _no_managed_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            prefix, _, option = key.partition(".")
            name = managed_option(prefix, option)
            if name is not None:
                raise ValueError(
                    f"custom attribute {key!r} sets {prefix} option {name!r}, which rackflow manages "
                    "(job name, output, working directory, environment and identity are set by rackflow)"
                )
        return value

    @model_validator(mode="after")
    def _project_is_account(self) -> Attributes:
        if self.project_name is not None:
            if self.account is not None and self.account != self.project_name:
                raise ValueError("account and project_name differ; set only account")
            self.account = self.project_name
        return self

    def custom_for(self, prefix: str) -> dict[str, str]:
        """The custom attributes addressed to one scheduler (``slurm.qos`` -> ``{"qos": ...}``)."""
        found: dict[str, str] = {}
        for key, value in self.custom_attributes.items():
            head, _, option = key.partition(".")
            if head == prefix:
                found[option] = str(value).lower() if isinstance(value, bool) else str(value)
        return found


class JobDescription(_Strict):
    """A batch job: the PSI/J JobSpec fields plus the files to stage in and out."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="JobDescription")

    executable: PathText = Field(description="Program to run, an absolute path or a name found on PATH.")
    arguments: list[Text] = Field(default_factory=list, max_length=MAX_ARGUMENTS)
    directory: PathText | None = Field(
        default=None, description="Working directory; relative paths are relative to the job directory."
    )
    name: DirectiveText | None = Field(
        default=None, description="Informative; the scheduler job name is set by the caller."
    )
    inherit_environment: bool = Field(
        default=True,
        description="True: the job starts from its Unix account's login environment (a login shell); "
        "False: from an empty one. Never the Airflow worker's environment. Either way ``environment`` "
        "is added.",
    )
    environment: dict[Annotated[str, Field(max_length=MAX_NAME, pattern=ENV_NAME_PATTERN)], Text] = Field(
        default_factory=dict, max_length=MAX_ENVIRONMENT, json_schema_extra={"additionalProperties": False}
    )
    stdin_path: PathText | None = None
    stdout_path: PathText | None = None
    stderr_path: PathText | None = None
    resources: Resources | None = None
    attributes: Attributes = Field(default_factory=Attributes)
    pre_launch: PathText | None = Field(default=None, description="Script sourced before the executable.")
    post_launch: PathText | None = Field(default=None, description="Script sourced after the executable.")
    launcher: Literal["single"] | None = Field(
        default=None, description="Only 'single' (run the executable once, directly) is supported."
    )
    stage_in: list[StageInEntry] = Field(default_factory=list, max_length=MAX_STAGING_ENTRIES)
    stage_out: list[StageOutEntry] = Field(default_factory=list, max_length=MAX_STAGING_ENTRIES)

    @field_validator("environment", mode="before")
    @classmethod
    def _environment_values_as_text(cls, value: object) -> object:
        # psij accepts int values and turns them into strings; do the same, but nothing else.
        if isinstance(value, Mapping):
            return {
                k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in value.items()
            }
        return value

    # -- schema and serialisation -------------------------------------------------------------------

    @classmethod
    def param_schema(cls) -> dict[str, Any]:
        """A self-contained JSON schema, every ``$ref`` inlined: ``Param(**JobDescription.param_schema())``.

        Inlined rather than ``$defs`` + ``$ref`` so the schema keeps working when it is nested inside
        another schema, as Airflow's form and REST validation do with per-param schemas.
        """
        schema = cls.model_json_schema(by_alias=True, mode="validation")
        defs = schema.pop("$defs", {})
        inlined = _inline_refs(schema, defs)
        assert isinstance(inlined, dict)
        inlined["type"] = "object"
        return inlined

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, without unset defaults, that :func:`parse_job_description` reads back."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    # -- psij ---------------------------------------------------------------------------------------

    def to_psij(self) -> Any:
        """A ``psij.JobSpec`` (staging is not part of psij 0.9 and is left out)."""
        from psij import JobAttributes, JobSpec, ResourceSpecV1

        attrs = self.attributes
        psij_attrs = JobAttributes(
            queue_name=attrs.queue_name,
            account=attrs.account,
            reservation_id=attrs.reservation_id,
            custom_attributes=dict(attrs.custom_attributes) or None,
        )
        if attrs.duration is not None:
            psij_attrs.duration = attrs.duration
        resources = None
        if self.resources is not None:
            r = self.resources
            resources = ResourceSpecV1(
                node_count=r.node_count,
                process_count=r.process_count,
                processes_per_node=r.processes_per_node,
                cpu_cores_per_process=r.cpu_cores_per_process,
                gpu_cores_per_process=r.gpu_cores_per_process,
                exclusive_node_use=r.exclusive_node_use,
                memory=r.memory,
            )
        return JobSpec(
            executable=self.executable,
            arguments=list(self.arguments),
            directory=self.directory,
            name=self.name,
            inherit_environment=self.inherit_environment,
            environment=dict(self.environment) or None,
            stdin_path=self.stdin_path,
            stdout_path=self.stdout_path,
            stderr_path=self.stderr_path,
            resources=resources,
            attributes=psij_attrs,
            pre_launch=self.pre_launch,
            post_launch=self.post_launch,
            launcher=self.launcher,
        )

    def to_psij_json(self) -> str:
        """psij's own JSON serialisation of :meth:`to_psij`."""
        from psij.serialize import JSONSerializer

        return str(JSONSerializer().dumps(self.to_psij()))

    @classmethod
    def from_psij(cls, spec: Any) -> JobDescription:
        """Read a ``psij.JobSpec``; psij's 10-minute default walltime is kept as an explicit duration."""
        data: dict[str, Any] = {
            "executable": spec.executable,
            "arguments": list(spec.arguments or []),
            "directory": _opt_str(spec.directory),
            "name": spec._name,
            "inherit_environment": spec.inherit_environment,
            "environment": dict(spec.environment or {}),
            "stdin_path": _opt_str(spec.stdin_path),
            "stdout_path": _opt_str(spec.stdout_path),
            "stderr_path": _opt_str(spec.stderr_path),
            "pre_launch": _opt_str(spec.pre_launch),
            "post_launch": _opt_str(spec.post_launch),
            "launcher": spec.launcher,
        }
        a = spec.attributes
        data["attributes"] = {
            "duration": a.duration,
            "queue_name": a.queue_name,
            "account": a.account,
            "reservation_id": a.reservation_id,
            "custom_attributes": dict(a.custom_attributes or {}),
        }
        r = spec.resources
        if r is not None:
            data["resources"] = {
                "node_count": r.node_count,
                "process_count": r.process_count,
                "processes_per_node": r.processes_per_node,
                "cpu_cores_per_process": r.cpu_cores_per_process,
                "gpu_cores_per_process": r.gpu_cores_per_process,
                "exclusive_node_use": r.exclusive_node_use,
                "memory": r.memory,
            }
        return parse_job_description(data)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = copy.deepcopy(defs[ref.removeprefix("#/$defs/")])
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline_refs(merged, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]" or str(part).startswith(("function-", "json-or", "constrained-")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        where = _format_loc(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not part of a job description)"
        problems.append(f"{where}: {msg}" if where else msg)
    return problems


def parse_job_description(data: Mapping[str, Any] | str | JobDescription) -> JobDescription:
    """Validate a dict, a JSON text or a JSDL XML text into a :class:`JobDescription`.

    Raises :class:`JobDescriptionError` whose message lists ``field: problem`` for each problem.
    """
    if isinstance(data, JobDescription):
        return data
    if isinstance(data, str):
        text = data.strip()
        if text.startswith("<"):
            return from_jsdl(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JobDescriptionError(f"job description is not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise JobDescriptionError(f"job description must be an object, got {type(data).__name__}")
    try:
        return JobDescription.model_validate(dict(data))
    except ValidationError as exc:
        problems = _problems(exc)
        raise JobDescriptionError("invalid job description: " + "; ".join(problems), problems) from exc


# -- JSDL 1.0 + HPC Profile Application ---------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(el: ElementTree.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    return el.text.strip()


def _children(parent: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [c for c in parent if _local(c.tag) == name]


def _child(parent: ElementTree.Element, name: str) -> ElementTree.Element | None:
    found = _children(parent, name)
    return found[0] if found else None


def _jsdl_count(el: ElementTree.Element | None, field: str) -> int | None:
    """A JSDL RangeValue: take ``Exact``, else ``UpperBoundedRange``/``LowerBoundedRange``, else the text."""
    if el is None:
        return None
    for name in ("Exact", "UpperBoundedRange", "LowerBoundedRange"):
        sub = _child(el, name)
        if sub is not None and _text(sub):
            raw = _text(sub)
            break
    else:
        raw = _text(el)
    if not raw:
        raise JobDescriptionError(f"{field}: empty range value")
    try:
        number = float(raw)
    except ValueError as exc:
        raise JobDescriptionError(f"{field}: {raw[:40]!r} is not a number") from exc
    if not math.isfinite(number) or abs(number) > INT64_MAX:
        raise JobDescriptionError(f"{field}: {raw[:40]!r} is out of range (at most {INT64_MAX})")
    return int(number)


def from_jsdl(xml: str) -> JobDescription:
    """Read a JSDL 1.0 document whose Application is an HPC Profile Application (or POSIX Application).

    Maps Executable, Argument, Input/Output/Error, WorkingDirectory, Environment, TotalCPUCount,
    TotalResourceCount, TotalPhysicalMemory, WallTimeLimit, JobName and DataStaging (FileName with a
    Source or Target URI).
    """
    try:
        # defusedxml: no DTD at all, so no entity expansion (XML bombs) and no external entities.
        root = _xml_fromstring(xml, forbid_dtd=True)
    except ElementTree.ParseError as exc:
        raise JobDescriptionError(f"JSDL is not well-formed XML: {exc}") from exc
    except DefusedXmlException as exc:
        raise JobDescriptionError(f"JSDL refused: {exc} (DTDs and entities are not accepted)") from exc
    if root.tag != f"{{{JSDL_NS}}}JobDefinition":
        raise JobDescriptionError(f"JSDL root must be {{{JSDL_NS}}}JobDefinition, got {root.tag}")
    job = _child(root, "JobDescription")
    if job is None:
        raise JobDescriptionError("JSDL JobDefinition has no JobDescription")
    app_parent = _child(job, "Application")
    app = None
    if app_parent is not None:
        for candidate in app_parent:
            if candidate.tag in (f"{{{HPCPA_NS}}}HPCProfileApplication", f"{{{POSIX_NS}}}POSIXApplication"):
                app = candidate
                break
    if app is None:
        raise JobDescriptionError(
            "JSDL Application must contain an HPCProfileApplication (jsdl-hpcpa) or POSIXApplication"
        )

    data: dict[str, Any] = {
        "executable": _text(_child(app, "Executable")),
        "arguments": [a.text or "" for a in _children(app, "Argument")],
    }
    for jsdl_name, field in (
        ("Input", "stdin_path"),
        ("Output", "stdout_path"),
        ("Error", "stderr_path"),
        ("WorkingDirectory", "directory"),
    ):
        value = _text(_child(app, jsdl_name))
        if value:
            data[field] = value
    env: dict[str, str] = {}
    for var in _children(app, "Environment"):
        name = var.get("name")
        if not name:
            raise JobDescriptionError("Environment: element without a name attribute")
        env[name] = var.text or ""
    if env:
        data["environment"] = env

    ident = _child(job, "JobIdentification")
    if ident is not None and _text(_child(ident, "JobName")):
        data["name"] = _text(_child(ident, "JobName"))

    resources: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    res = _child(job, "Resources")
    if res is not None:
        cpus = _jsdl_count(_child(res, "TotalCPUCount"), "TotalCPUCount")
        nodes = _jsdl_count(_child(res, "TotalResourceCount"), "TotalResourceCount")
        memory = _jsdl_count(_child(res, "TotalPhysicalMemory"), "TotalPhysicalMemory")
        if nodes is not None:
            resources["node_count"] = nodes
        if cpus is not None:
            resources["process_count"] = cpus
        if memory is not None:
            resources["memory"] = memory
        exclusive = _text(_child(res, "ExclusiveExecution"))
        if exclusive is not None:
            try:
                resources["exclusive_node_use"] = parse_bool(exclusive)  # xsd:boolean: true/false/1/0
            except ValueError as exc:
                raise JobDescriptionError(f"JSDL ExclusiveExecution: {exc}") from None
    wall = _child(app, "WallTimeLimit")
    if wall is not None and _text(wall):
        attributes["duration"] = _text(wall)
    if resources:
        data["resources"] = resources
    if attributes:
        data["attributes"] = attributes

    stage_in: list[dict[str, str]] = []
    stage_out: list[dict[str, str]] = []
    for i, staging in enumerate(_children(job, "DataStaging")):
        file_name = _text(_child(staging, "FileName"))
        if not file_name:
            raise JobDescriptionError(f"DataStaging[{i}]: FileName is required")
        source_el, target_el = _child(staging, "Source"), _child(staging, "Target")
        if source_el is None and target_el is None:
            raise JobDescriptionError(f"DataStaging[{i}] ({file_name}): neither Source nor Target")
        if source_el is not None:
            source = _text(_child(source_el, "URI"))
            if not source:
                raise JobDescriptionError(f"DataStaging[{i}]: Source has no URI")
            stage_in.append({"source": source, "target": file_name})
        if target_el is not None:
            target = _text(_child(target_el, "URI"))
            if not target:
                raise JobDescriptionError(f"DataStaging[{i}]: Target has no URI")
            stage_out.append({"source": file_name, "target": target})
    if stage_in:
        data["stage_in"] = stage_in
    if stage_out:
        data["stage_out"] = stage_out
    if data["executable"] is None:
        raise JobDescriptionError("executable: JSDL Application has no Executable")
    return parse_job_description(data)
