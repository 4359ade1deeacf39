"""IBM Spectrum LSF: ``bsub < script``, ``bjobs -a -json -o ...`` for many jobs, ``bjobs -J`` by name, bkill.

Formats follow the IBM Spectrum LSF 10.1 command reference (``bjobs -o`` field names, ``-json`` output
with ``COMMAND``/``JOBS``/``RECORDS``, ``bsub`` "Job <id> is submitted to queue <q>.") and psij's
``lsf.py``. ``bsub`` reads ``#BSUB`` lines only from standard input unless ``LSB_BSUB_PARSE_SCRIPT=Y``,
so the submit command redirects the script into it, passing the path as an argument, not as shell text.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Any, ClassVar

from rackflow.core.jobspec import JobDescription
from rackflow.core.schedulers.base import (
    JobDetail,
    JobState,
    JobStatus,
    SchedulerAdapter,
    SchedulerError,
    parse_memory,
)

BJOBS_FIELDS = "jobid job_name stat exit_code exec_host exit_reason pend_reason"
BJOBS_DETAIL_FIELDS = f"{BJOBS_FIELDS} cpu_used run_time max_mem"
_SUBMITTED = re.compile(r"Job <(\d+(?:\[\d+\])?)> is submitted")
_CANCEL_REASONS = ("TERM_OWNER", "TERM_ADMIN", "killed by owner", "killed by root", "killed by LSF admin")


def _hosts(exec_host: str) -> tuple[str, ...]:
    """``4*hostA:2*hostB`` -> ``("hostA", "hostB")``."""
    seen: dict[str, None] = {}
    for chunk in exec_host.split(":"):
        host = chunk.rpartition("*")[2].strip()
        if host and host != "-":
            seen.setdefault(host, None)
    return tuple(seen)


def _seconds(text: str) -> float | None:
    """``0.4 second(s)`` or ``12 second(s)`` -> seconds."""
    m = re.match(r"\s*(\d+(?:\.\d+)?)", text or "")
    return float(m.group(1)) if m else None


class LsfAdapter(SchedulerAdapter):
    """IBM Spectrum LSF 10.1."""

    kind = "lsf"
    directive_prefix = "#BSUB"
    max_job_name = 4094
    unknown_job_markers = ("is not found", "No matching job found", "No job found", "already finished")
    state_map: ClassVar[dict[str, JobState]] = {
        "PEND": JobState.QUEUED,
        "PROV": JobState.QUEUED,
        "PSUSP": JobState.QUEUED,
        "WAIT": JobState.QUEUED,
        "RUN": JobState.ACTIVE,
        "USUSP": JobState.ACTIVE,
        "SSUSP": JobState.ACTIVE,
        "UNKWN": JobState.ACTIVE,
        "ZOMBI": JobState.ACTIVE,
        "DONE": JobState.COMPLETED,
        "EXIT": JobState.FAILED,
    }

    def directives(self, job: JobDescription, job_name: str, comment: str, workdir: str) -> list[str]:
        out, err = self.scheduler_output_paths(workdir)
        lines = [f"-J {job_name}"]
        if comment:
            lines.append(f'-Jd "{comment}"')
        lines += [f'-cwd "{workdir}"', f'-o "{out}"', f'-e "{err}"']
        lines.append("-env none")
        r = job.resources
        if r is not None:
            lines.append(f"-n {r.computed_process_count * (r.cpu_cores_per_process or 1)}")
            if r.processes_per_node is not None or r.node_count is not None:
                slots = r.computed_processes_per_node * (r.cpu_cores_per_process or 1)
                lines.append(f'-R "span[ptile={slots}]"')
            if r.gpu_cores_per_process is not None:
                lines.append(f'-gpu "num={r.gpu_cores_per_process}/task"')
            if r.memory is not None:  # -M is a per-process limit
                lines.append(f"-M {math.ceil(r.memory / r.computed_process_count / 1024)}KB")
            if r.exclusive_node_use:
                lines.append("-x")
        a = job.attributes
        if a.duration is not None:  # -W [hours:]minutes, rounded up
            minutes = math.ceil(a.duration.total_seconds() / 60)
            lines.append(f"-W {minutes // 60}:{minutes % 60:02d}")
        if a.queue_name:
            lines.append(f'-q "{a.queue_name}"')
        if a.account:
            lines.append(f'-P "{a.account}"')
        if a.reservation_id:
            lines.append(f'-U "{a.reservation_id}"')
        for key, value in self.custom_directives(job, "lsf").items():
            lines.append(f'-{key} "{value}"')
        return lines

    def submit_command(self, script_path: str) -> list[str]:
        return ["sh", "-c", 'exec bsub < "$1"', "bsub", script_path]

    def managed_options(self, job_name: str, workdir: str, comment: str, output: bool) -> list[str]:
        options = ["-J", job_name, "-cwd", workdir, "-env", "none"]
        if comment:
            options += ["-Jd", comment]
        if output:
            out, err = self.scheduler_output_paths(workdir)
            options += ["-o", out, "-e", err]
        return options

    def managed_submit_command(
        self, script_path: str, *, job_name: str, workdir: str, comment: str = "", output: bool = True
    ) -> list[str]:
        """``bsub <options> < script``: the script path and the options stay arguments, never shell text."""
        super().managed_submit_command(
            script_path, job_name=job_name, workdir=workdir, comment=comment, output=output
        )  # the checks
        options = self.managed_options(job_name, workdir, comment, output)
        return ["sh", "-c", 'script=$1; shift; exec bsub "$@" < "$script"', "bsub", script_path, *options]

    def parse_submit_output(self, stdout: str) -> str:
        m = _SUBMITTED.search(stdout)
        if m is None:
            raise SchedulerError(f"bsub printed no job id: {stdout!r}")
        return m.group(1)

    def status_command(self, job_ids: list[str]) -> list[str]:
        if not job_ids:
            raise ValueError("status_command needs at least one job id")
        return ["bjobs", "-u", "all", "-a", "-json", "-o", BJOBS_FIELDS, *job_ids]

    def _records(self, stdout: str) -> list[dict[str, Any]]:
        try:
            report = json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise SchedulerError(f"bjobs did not print JSON: {exc}: {stdout[:200]!r}") from exc
        records = report.get("RECORDS")
        if not isinstance(records, list):
            raise SchedulerError("bjobs JSON has no RECORDS list")
        return [r for r in records if "ERROR" not in r]

    def _status(self, record: dict[str, Any]) -> JobStatus:
        native = str(record["STAT"])
        state = self.map_state(native)
        raw_exit = str(record.get("EXIT_CODE", "")).strip()
        reason = str(record.get("EXIT_REASON") or record.get("PEND_REASON") or "").strip() or None
        exit_code = None
        if state is JobState.COMPLETED:
            exit_code = 0
        elif state is JobState.FAILED:
            exit_code = int(raw_exit) if raw_exit.isdigit() else None
            if reason and any(marker in reason for marker in _CANCEL_REASONS):
                state = JobState.CANCELED
        return JobStatus(
            state=state,
            native_state=native,
            exit_code=exit_code,
            reason=reason,
            nodes=_hosts(str(record.get("EXEC_HOST", ""))),
            name=record.get("JOB_NAME"),
        )

    def parse_status_output(self, stdout: str) -> dict[str, JobStatus]:
        return {str(r["JOBID"]): self._status(r) for r in self._records(stdout)}

    def find_by_name_command(self, job_name: str) -> list[str]:
        return ["bjobs", "-u", "all", "-a", "-json", "-o", BJOBS_FIELDS, "-J", job_name]

    def parse_find_by_name_output(self, stdout: str, job_name: str) -> list[str]:
        found = [jid for jid, st in self.parse_status_output(stdout).items() if st.name == job_name]
        return sorted(found, key=lambda j: (int(re.match(r"\d*", j).group(0) or 0), j))  # type: ignore[union-attr]

    def cancel_command(self, job_id: str) -> list[str]:
        return ["bkill", job_id]

    def detail_command(self, job_id: str) -> list[str]:
        return ["bjobs", "-u", "all", "-a", "-json", "-o", BJOBS_DETAIL_FIELDS, job_id]

    def parse_detail(self, stdout: str, job_id: str) -> JobDetail:
        record = next((r for r in self._records(stdout) if str(r["JOBID"]) == job_id), None)
        if record is None:
            raise SchedulerError(f"bjobs output has no job {job_id}")
        status = self._status(record)
        cpu = _seconds(str(record.get("CPU_USED", "")))
        run = _seconds(str(record.get("RUN_TIME", "")))
        return JobDetail(
            job_id=job_id,
            status=status,
            exit_code=status.exit_code,
            cpu_time=None if cpu is None else timedelta(seconds=cpu),
            wall_time=None if run is None else timedelta(seconds=run),
            max_memory=parse_memory(str(record.get("MAX_MEM", "")).replace("bytes", "B")),
            nodes=status.nodes,
        )
