"""What every batch scheduler adapter provides: text in, text out.

Modelled on psij's ``BatchSchedulerExecutor``: an adapter only builds command lines and submit scripts
and parses command output. It never runs anything, so the caller can run the commands locally or over
SSH, and every parser is tested on recorded output.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import PurePosixPath
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from rackflow.core.jobspec import JobDescription, managed_option


class SchedulerError(RuntimeError):
    """A scheduler's output could not be understood; the message quotes it."""


class JobState(StrEnum):
    """PSI/J job states; every native state maps onto one of these."""

    NEW = "NEW"
    QUEUED = "QUEUED"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELED)


class JobStatus(BaseModel):
    """One job's state as a status poll saw it; JSON-serialisable for triggers."""

    model_config = ConfigDict(frozen=True)

    state: JobState
    native_state: str
    exit_code: int | None = Field(default=None, description="The job script's exit status, when known.")
    signal: int | None = Field(default=None, description="Signal that ended the job, when known.")
    reason: str | None = None
    nodes: tuple[str, ...] = ()
    name: str | None = None


class JobDetail(BaseModel):
    """Accounting for one job: what it used, where it ran and how it ended.

    Times are as the scheduler printed them; a naive value is the scheduler host's local time.
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    status: JobStatus
    exit_code: int | None = None
    cpu_time: timedelta | None = Field(default=None, description="CPU time of all the job's processes.")
    wall_time: timedelta | None = None
    max_memory: int | None = Field(default=None, description="Peak memory (resident set) in bytes.")
    nodes: tuple[str, ...] = ()
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


_DIRECTIVE_UNSAFE = re.compile(r'[\x00-\x1f\x7f"]')
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b|bytes?)?\s*$", re.IGNORECASE)
_MEMORY_FACTOR = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def directive_value(value: str, what: str) -> str:
    """Refuse text that could end a directive line or its quoting (newline, control chars, ``"``)."""
    if _DIRECTIVE_UNSAFE.search(value):
        raise ValueError(f"{what} must be one line without double quotes: {value!r}")
    return value


def parse_memory(text: str, default_unit: str = "") -> int | None:
    """``5200kb``, ``19.949MB``, ``2 Mbytes``, ``1.5G`` -> bytes (binary units, as schedulers use)."""
    text = text.strip()
    if not text or text in ("-", "N/A", "NONE"):
        return None
    m = _MEMORY_RE.match(text)
    if m is None:
        return None
    unit = (m.group(2) or default_unit).lower()
    return int(float(m.group(1)) * _MEMORY_FACTOR[unit])


def format_clock(d: timedelta) -> str:
    """``HH:MM:SS`` with hours past 24, as PBS and Grid Engine take it; rounds up to whole seconds."""
    total = int(-(-d.total_seconds() // 1))
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


class SchedulerAdapter(ABC):
    """Builds a scheduler's commands and submit scripts and reads its output.

    The caller writes :meth:`submit_script` to ``<workdir>/<script_name>`` (or takes a ready-made
    script), runs :meth:`managed_submit_command` -- the options rackflow manages (job name, working
    directory, output files, environment) on the command line, where they override the script's own
    directive lines -- reads the id with :meth:`parse_submit_output`, then polls many jobs at
    once with :meth:`status_command`/:meth:`parse_status_output`. A job missing from the status
    output has left the live queue (finished and aged out or, when :attr:`forgets_finished_jobs`,
    just finished) or is unknown: ask the scheduler's accounting with
    :meth:`detail_command`/:meth:`parse_detail`, which also gives what the job used. Before
    submitting again after a restart, look the job up by name with
    :meth:`find_by_name_command`/:meth:`parse_find_by_name_output`.
    """

    kind: ClassVar[str]
    directive_prefix: ClassVar[str]
    script_name: ClassVar[str] = "rackflow-job.sh"
    max_job_name: ClassVar[int] = 128
    forgets_finished_jobs: ClassVar[bool] = False
    state_map: ClassVar[dict[str, JobState]]

    # -- names ----------------------------------------------------------------------------------

    def normalize_job_name(self, raw: str) -> str:
        """A deterministic, scheduler-safe job name: same input, same name, so it can be looked up.

        Characters outside ``[A-Za-z0-9_.-]`` become ``_``; over-long names keep a hash of the full text.
        """
        name = _NAME_UNSAFE.sub("_", raw)
        if not name or not name[0].isalpha():
            name = "j" + name
        if len(name) > self.max_job_name:
            digest = hashlib.sha1(raw.encode()).hexdigest()[:10]
            name = f"{name[: self.max_job_name - 11]}_{digest}"
        return name

    def _check_job_name(self, job_name: str) -> str:
        if job_name != self.normalize_job_name(job_name):
            raise ValueError(f"job name {job_name!r} is not safe for {self.kind}: use normalize_job_name()")
        return job_name

    def scheduler_output_paths(self, workdir: str) -> tuple[str, str]:
        """Where the scheduler writes the script's own stdout and stderr (those not redirected)."""
        return str(PurePosixPath(workdir) / "rackflow.out"), str(PurePosixPath(workdir) / "rackflow.err")

    def job_output_files(self, job: JobDescription, workdir: str) -> tuple[str | None, str | None]:
        """Where the job's stdout and stderr end up, relative to ``workdir``: its ``stdout_path`` /
        ``stderr_path`` (relative to the job's directory, as :meth:`body` redirects them) or else
        :meth:`scheduler_output_paths`. None for a file outside ``workdir`` (rackflow keeps only what
        is inside the job directory)."""
        root = PurePosixPath(workdir)
        directory = root / job.directory if job.directory else root
        defaults = self.scheduler_output_paths(workdir)
        found: list[str | None] = []
        for path, default in ((job.stdout_path, defaults[0]), (job.stderr_path, defaults[1])):
            full = posixpath.normpath(str(directory / path)) if path else default
            rel = posixpath.relpath(full, str(root)) if full.startswith(str(root) + "/") else None
            found.append(rel if rel is not None and not rel.startswith("..") else None)
        return found[0], found[1]

    # -- script ---------------------------------------------------------------------------------

    def submit_script(self, job: JobDescription, job_name: str, comment: str, workdir: str) -> str:
        """The batch script: ``#!/bin/bash``, directives, then a body that runs the job in its directory.

        ``workdir`` is the job directory (absolute); ``comment`` (e.g. the Airflow run id) is recorded
        where the scheduler keeps one. Arguments, paths and environment values are shell-quoted.
        """
        self._check_job_name(job_name)
        directive_value(workdir, "workdir")
        directive_value(comment, "comment")
        if not PurePosixPath(workdir).is_absolute():
            raise ValueError(f"workdir must be absolute, got {workdir!r}")
        # inherit_environment: the job's account's login environment (a login shell), never the
        # environment of whoever submitted; the scheduler gets an empty one (see managed_submit_command).
        lines = ["#!/bin/bash -l" if job.inherit_environment else "#!/bin/bash"]
        lines += [f"{self.directive_prefix} {d}" for d in self.directives(job, job_name, comment, workdir)]
        lines.append(f"# rackflow job {job_name}: {comment}")
        lines += self.body(job, workdir)
        return "\n".join(lines) + "\n"

    @abstractmethod
    def directives(self, job: JobDescription, job_name: str, comment: str, workdir: str) -> list[str]:
        """The option part of each directive line (without the ``#SBATCH`` prefix)."""

    def body(self, job: JobDescription, workdir: str) -> list[str]:
        """Shell lines after the directives: cd, environment, pre-launch, the command, post-launch."""
        q = shlex.quote
        directory = workdir
        if job.directory:
            directory = str(PurePosixPath(workdir) / job.directory)  # an absolute directory wins
        lines = [f"cd -- {q(directory)} || exit 1"]
        lines += [f"export {name}={q(value)}" for name, value in job.environment.items()]
        if job.pre_launch:
            lines.append(f". {q(job.pre_launch)}")
        command = " ".join(q(part) for part in [job.executable, *job.arguments])
        if job.stdin_path:
            command += f" < {q(job.stdin_path)}"
        if job.stdout_path:
            command += f" > {q(job.stdout_path)}"
        if job.stderr_path:
            command += f" 2> {q(job.stderr_path)}"
        lines.append(command)
        lines.append("rackflow_rc=$?")
        if job.post_launch:
            lines.append(f". {q(job.post_launch)}")
        lines.append("exit $rackflow_rc")
        return lines

    def custom_directives(self, job: JobDescription, prefix: str) -> dict[str, str]:
        found = job.attributes.custom_for(prefix)
        for key in found:  # parse_job_description refuses these already; a hand-built model too
            if managed_option(prefix, key) is not None:
                raise ValueError(f"custom attribute {prefix}.{key} sets an option rackflow manages")
        return {
            key: directive_value(value, f"custom attribute {prefix}.{key}") for key, value in found.items()
        }

    # -- commands and parsers -------------------------------------------------------------------

    @abstractmethod
    def submit_command(self, script_path: str) -> list[str]:
        """The bare submit command of a script (no options of rackflow's)."""

    @abstractmethod
    def managed_options(self, job_name: str, workdir: str, comment: str, output: bool) -> list[str]:
        """Submit options rackflow sets: job name, working directory, no exported environment and,
        with ``output``, the scheduler's stdout/stderr files (see :meth:`scheduler_output_paths`)."""

    def managed_submit_command(
        self, script_path: str, *, job_name: str, workdir: str, comment: str = "", output: bool = True
    ) -> list[str]:
        """The submit command with :meth:`managed_options` before the script: command-line options win
        over the script's own directives, so a ready-made script cannot rename, move or re-environ
        itself. Run it from ``workdir`` (schedulers without a working-directory option use that)."""
        self._check_job_name(job_name)
        directive_value(comment, "comment")
        if not PurePosixPath(workdir).is_absolute():
            raise ValueError(f"workdir must be absolute, got {workdir!r}")
        bare = self.submit_command(script_path)
        return [*bare[:-1], *self.managed_options(job_name, workdir, comment, output), bare[-1]]

    @abstractmethod
    def parse_submit_output(self, stdout: str) -> str:
        """The native job id printed by the submit command."""

    @abstractmethod
    def status_command(self, job_ids: list[str]) -> list[str]:
        """One command that reports the state of all ``job_ids`` (finished ones too, where kept)."""

    @abstractmethod
    def parse_status_output(self, stdout: str) -> dict[str, JobStatus]: ...

    @abstractmethod
    def find_by_name_command(self, job_name: str) -> list[str]: ...

    @abstractmethod
    def parse_find_by_name_output(self, stdout: str, job_name: str) -> list[str]:
        """Ids of jobs with exactly this name, oldest first."""

    @abstractmethod
    def cancel_command(self, job_id: str) -> list[str]: ...

    @abstractmethod
    def detail_command(self, job_id: str) -> list[str]:
        """Accounting for one job: the scheduler's record of it that outlives the live queue."""

    def fallback_detail_command(self, job_id: str, output: str) -> list[str] | None:
        """When :meth:`detail_command` failed saying ``output``: a command to ask instead, or None.

        (Slurm without accounting storage: the controller's own record.) :meth:`parse_detail`
        reads the output of either.
        """
        return None

    @abstractmethod
    def parse_detail(self, stdout: str, job_id: str) -> JobDetail: ...

    unknown_job_markers: ClassVar[tuple[str, ...]] = ()

    def is_unknown_job_error(self, output: str) -> bool:
        """Whether a failed status/detail/cancel command only said the job id is unknown (or purged)."""
        return any(marker.lower() in output.lower() for marker in self.unknown_job_markers)

    def map_state(self, native: str) -> JobState:
        try:
            return self.state_map[native]
        except KeyError:
            raise SchedulerError(f"unknown {self.kind} job state {native!r}") from None


def content_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
