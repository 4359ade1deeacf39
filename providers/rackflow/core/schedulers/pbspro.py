"""PBS Professional / OpenPBS: qsub, ``qstat -f -F json -x`` for many jobs, qselect by name, qdel.

Output formats follow the PBS Professional Reference Guide (qstat ``-F json``, job states, ``Exit_status``
and substates) and psij's ``pbs_base.py``, which parses the same JSON.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, ClassVar

from rackflow.core.jobspec import JobDescription
from rackflow.core.schedulers.base import (
    JobDetail,
    JobState,
    JobStatus,
    SchedulerAdapter,
    SchedulerError,
    content_lines,
    format_clock,
    parse_memory,
)
from rackflow.core.values import parse_clock

SUBSTATE_TERMINATED = 91  # job deleted (qdel) before or while running
SIGNAL_BASE = 256  # Exit_status 256+N: killed by signal N


def _hosts(exec_host: str) -> tuple[str, ...]:
    """``node1/0*2+node2/1`` -> ``("node1", "node2")``."""
    seen: dict[str, None] = {}
    for chunk in exec_host.split("+"):
        host = chunk.split("/")[0].strip()
        if host:
            seen.setdefault(host, None)
    return tuple(seen)


class PbsProAdapter(SchedulerAdapter):
    """PBS Professional and OpenPBS (``qstat -x`` keeps finished jobs while job history is enabled)."""

    kind = "pbspro"
    directive_prefix = "#PBS"
    max_job_name = 230
    unknown_job_markers = ("Unknown Job Id", "Job has finished", "job has been deleted")
    state_map: ClassVar[dict[str, JobState]] = {
        "Q": JobState.QUEUED,
        "H": JobState.QUEUED,
        "W": JobState.QUEUED,
        "T": JobState.QUEUED,
        "M": JobState.QUEUED,
        "S": JobState.ACTIVE,
        "U": JobState.ACTIVE,
        "R": JobState.ACTIVE,
        "E": JobState.ACTIVE,
        "B": JobState.ACTIVE,
        "F": JobState.COMPLETED,  # refined from Exit_status and substate
        "X": JobState.COMPLETED,
    }

    def directives(self, job: JobDescription, job_name: str, comment: str, workdir: str) -> list[str]:
        out, err = self.scheduler_output_paths(workdir)
        lines = [f"-N {job_name}", f"-o {out}", f"-e {err}"]  # never -V: no submitter environment
        r = job.resources
        if r is not None:
            chunk = (
                f"select={r.computed_node_count}"
                f":ncpus={r.computed_processes_per_node * (r.cpu_cores_per_process or 1)}"
                f":mpiprocs={r.computed_processes_per_node}"
            )
            if r.gpu_cores_per_process is not None:
                chunk += f":ngpus={r.computed_processes_per_node * r.gpu_cores_per_process}"
            if r.memory is not None:  # mem in a chunk is per chunk (node)
                chunk += f":mem={math.ceil(r.memory / r.computed_node_count / 1024)}kb"
            lines.append(f"-l {chunk}")
            lines.append(f"-l place=scatter:{'excl' if r.exclusive_node_use else 'shared'}")
        a = job.attributes
        if a.duration is not None:
            lines.append(f"-l walltime={format_clock(a.duration)}")
        if a.account:
            lines.append(f"-A {a.account}")
        if a.reservation_id:  # PBS runs reservation jobs in the reservation's own queue
            lines.append(f"-q {a.reservation_id}")
        elif a.queue_name:
            lines.append(f"-q {a.queue_name}")
        for key, value in self.custom_directives(job, "pbs").items():
            lines.append(f"-{key} {value}")
        return lines

    def submit_command(self, script_path: str) -> list[str]:
        return ["qsub", script_path]

    def managed_options(self, job_name: str, workdir: str, comment: str, output: bool) -> list[str]:
        # PBS has no working-directory option: qsub runs from the job directory (PBS_O_WORKDIR), and
        # the empty submit environment is all -V could export.
        options = ["-N", job_name]
        if output:
            out, err = self.scheduler_output_paths(workdir)
            options += ["-o", out, "-e", err]
        return options

    def parse_submit_output(self, stdout: str) -> str:
        lines = content_lines(stdout)
        if not lines or not re.fullmatch(r"\d+(\[\d*\])?(\.\S+)?", lines[-1].strip()):
            raise SchedulerError(f"qsub printed no job id: {stdout!r}")
        return lines[-1].strip()

    def status_command(self, job_ids: list[str]) -> list[str]:
        if not job_ids:
            raise ValueError("status_command needs at least one job id")
        return ["qstat", "-f", "-F", "json", "-x", *job_ids]

    def _load(self, stdout: str) -> dict[str, dict[str, Any]]:
        try:
            report = json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise SchedulerError(f"qstat did not print JSON: {exc}: {stdout[:200]!r}") from exc
        jobs = report.get("Jobs", {})
        if not isinstance(jobs, dict):
            raise SchedulerError("qstat JSON has no Jobs object")
        return jobs

    def _status(self, info: dict[str, Any]) -> JobStatus:
        native = str(info["job_state"])
        state = self.map_state(native)
        exit_code = signal = None
        raw = info.get("Exit_status")
        if state.is_final:
            substate = int(info.get("substate", 0))
            if raw is None or substate == SUBSTATE_TERMINATED:
                state = JobState.CANCELED
            raw = None if raw is None else int(raw)
            if raw is not None and raw >= SIGNAL_BASE:
                signal = raw - SIGNAL_BASE
                exit_code = 128 + signal
            else:
                exit_code = raw
            if state is not JobState.CANCELED and exit_code != 0:
                state = JobState.FAILED
        return JobStatus(
            state=state,
            native_state=native,
            exit_code=exit_code,
            signal=signal,
            reason=info.get("comment"),
            nodes=_hosts(str(info.get("exec_host", ""))),
            name=info.get("Job_Name"),
        )

    def parse_status_output(self, stdout: str) -> dict[str, JobStatus]:
        return {job_id: self._status(info) for job_id, info in self._load(stdout).items()}

    def find_by_name_command(self, job_name: str) -> list[str]:
        return ["qselect", "-x", "-N", job_name]

    def parse_find_by_name_output(self, stdout: str, job_name: str) -> list[str]:
        ids = [line.strip() for line in content_lines(stdout)]
        return sorted(ids, key=lambda j: (int(re.match(r"\d*", j).group(0) or 0), j))  # type: ignore[union-attr]

    def cancel_command(self, job_id: str) -> list[str]:
        return ["qdel", job_id]

    def detail_command(self, job_id: str) -> list[str]:
        return ["qstat", "-f", "-F", "json", "-x", job_id]

    def parse_detail(self, stdout: str, job_id: str) -> JobDetail:
        jobs = self._load(stdout)
        info = jobs.get(job_id) or next(
            (v for k, v in jobs.items() if k.split(".")[0] == job_id.split(".")[0]), None
        )
        if info is None:
            raise SchedulerError(f"qstat output has no job {job_id}")
        status = self._status(info)
        used = info.get("resources_used", {})
        return JobDetail(
            job_id=job_id,
            status=status,
            exit_code=status.exit_code,
            cpu_time=parse_clock(str(used.get("cput", ""))),
            wall_time=parse_clock(str(used.get("walltime", ""))),
            max_memory=parse_memory(str(used.get("mem", ""))),
            nodes=status.nodes,
        )
