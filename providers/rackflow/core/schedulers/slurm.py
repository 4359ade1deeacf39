"""Slurm: sbatch --parsable, one squeue call for many jobs (finished ones included), sacct for detail.

``squeue --states=all`` reports finished jobs, with their raw wait status, for as long as slurmctld
keeps them (``MinJobAge``), so one call gives terminal states and exit codes for many ids; this was
checked on slurm-wlm 22.05. After that only the accounting database (slurmdbd) knows the job:
``sacct`` gives its final state, exit code, node list, times and usage -- CPU time (``TotalCPU``) and
peak resident memory (``MaxRSS``, per step: the ``.batch`` step is the script itself). Where the site
runs no accounting storage, the detail falls back to ``scontrol show job``, which knows the job only
while slurmctld does, and reports no usage.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import ClassVar

from rackflow.core.jobspec import JobDescription
from rackflow.core.schedulers.base import (
    JobDetail,
    JobState,
    JobStatus,
    SchedulerAdapter,
    SchedulerError,
    content_lines,
    parse_memory,
)
from rackflow.core.values import parse_clock

# Name last: it is the only free text, so splitting at most five times keeps any '|' inside it.
SQUEUE_FORMAT = "JobID:|,State:|,exit_code:|,Reason:|,NodeList:|,Name:|"
_SCONTROL_TOKEN = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")
# JobName last: it is the only free text, so splitting at most len-1 times keeps any '|' inside it.
SACCT_FIELDS = (
    "JobID", "State", "ExitCode", "Elapsed", "TotalCPU", "MaxRSS", "NodeList",
    "Submit", "Start", "End", "Reason", "JobName",
)  # fmt: skip
NO_ACCOUNTING_MARKERS = ("accounting storage is disabled",)


def expand_hostlist(hostlist: str) -> tuple[str, ...]:
    """``n[01-03,07],login`` -> ``("n01", "n02", "n03", "n07", "login")`` (one bracket group per name)."""
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?([^,]*)", hostlist):
        prefix, ranges, suffix = m.group(1), m.group(2), m.group(3)
        if not prefix and not ranges:
            continue
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(f"{prefix}{lo}{suffix}")
                continue
            for n in range(int(lo), int(hi) + 1):
                hosts.append(f"{prefix}{n:0{len(lo)}d}{suffix}")
    return tuple(h for h in hosts if h and h not in ("(null)", "None assigned"))


def decode_wait_status(raw: int) -> tuple[int, int | None]:
    """A raw wait status (squeue ``exit_code``) -> (exit code, signal); signals give 128+signal."""
    signal = raw & 0x7F
    if signal:
        return 128 + signal, signal
    return (raw >> 8) & 0xFF, None


class SlurmAdapter(SchedulerAdapter):
    """Slurm Workload Manager (checked against slurm-wlm 22.05)."""

    kind = "slurm"
    directive_prefix = "#SBATCH"
    unknown_job_markers = ("Invalid job id specified",)
    # https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
    state_map: ClassVar[dict[str, JobState]] = {
        "PENDING": JobState.QUEUED,
        "CONFIGURING": JobState.QUEUED,
        "REQUEUED": JobState.QUEUED,
        "REQUEUE_FED": JobState.QUEUED,
        "REQUEUE_HOLD": JobState.QUEUED,
        "RESV_DEL_HOLD": JobState.QUEUED,
        "RUNNING": JobState.ACTIVE,
        "COMPLETING": JobState.ACTIVE,
        "SUSPENDED": JobState.ACTIVE,
        "STOPPED": JobState.ACTIVE,
        "SIGNALING": JobState.ACTIVE,
        "STAGE_OUT": JobState.ACTIVE,
        "RESIZING": JobState.ACTIVE,
        "COMPLETED": JobState.COMPLETED,
        "FAILED": JobState.FAILED,
        "TIMEOUT": JobState.FAILED,
        "NODE_FAIL": JobState.FAILED,
        "OUT_OF_MEMORY": JobState.FAILED,
        "BOOT_FAIL": JobState.FAILED,
        "DEADLINE": JobState.FAILED,
        "PREEMPTED": JobState.FAILED,
        "SPECIAL_EXIT": JobState.FAILED,
        "REVOKED": JobState.CANCELED,
        "CANCELLED": JobState.CANCELED,
    }

    def directives(self, job: JobDescription, job_name: str, comment: str, workdir: str) -> list[str]:
        out, err = self.scheduler_output_paths(workdir)
        lines = [f"--job-name={job_name}"]
        if comment:
            lines.append(f'--comment="{comment}"')
        lines += [f'--chdir="{workdir}"', f'--output="{out}"', f'--error="{err}"']
        lines.append("--export=NONE")  # also on the command line; the job exports its environment itself
        r = job.resources
        if r is not None:
            if r.node_count is not None or (r.process_count and r.processes_per_node):
                lines.append(f"--nodes={r.computed_node_count}")
            lines.append(f"--ntasks={r.computed_process_count}")
            if r.processes_per_node is not None:
                lines.append(f"--ntasks-per-node={r.processes_per_node}")
            if r.cpu_cores_per_process is not None:
                lines.append(f"--cpus-per-task={r.cpu_cores_per_process}")
            if r.gpu_cores_per_process is not None:
                lines.append(f"--gpus-per-task={r.gpu_cores_per_process}")
            if r.memory is not None:  # --mem is per node; the job description gives the total
                lines.append(f"--mem={math.ceil(r.memory / r.computed_node_count / 1024)}K")
            if r.exclusive_node_use:
                lines.append("--exclusive")
        a = job.attributes
        if a.duration is not None:
            total = math.ceil(a.duration.total_seconds())
            days, rest = divmod(total, 86400)
            lines.append(f"--time={days}-{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}")
        if a.queue_name:
            lines.append(f'--partition="{a.queue_name}"')
        if a.account:
            lines.append(f'--account="{a.account}"')
        if a.reservation_id:
            lines.append(f'--reservation="{a.reservation_id}"')
        for key, value in self.custom_directives(job, "slurm").items():
            lines.append(f"-{key} {value}" if len(key) == 1 else f'--{key}="{value}"')
        return lines

    def submit_command(self, script_path: str) -> list[str]:
        return ["sbatch", "--parsable", script_path]

    def managed_options(self, job_name: str, workdir: str, comment: str, output: bool) -> list[str]:
        # --export=NONE: only SLURM_* variables, and Slurm loads the account's login environment.
        options = [f"--job-name={job_name}", f"--chdir={workdir}", "--export=NONE"]
        if comment:
            options.append(f"--comment={comment}")
        if output:
            out, err = self.scheduler_output_paths(workdir)
            options += [f"--output={out}", f"--error={err}"]
        return options

    def parse_submit_output(self, stdout: str) -> str:
        # --parsable prints "<id>" or "<id>;<cluster>"; warnings may precede it.
        lines = content_lines(stdout)
        if not lines or not re.fullmatch(r"\d+(_\d+)?(;\S+)?", lines[-1].strip()):
            raise SchedulerError(f"sbatch printed no job id: {stdout!r}")
        return lines[-1].strip().split(";")[0]

    def status_command(self, job_ids: list[str]) -> list[str]:
        if not job_ids:
            raise ValueError("status_command needs at least one job id")
        return [
            "squeue",
            "--noheader",
            "--states=all",
            f"--jobs={','.join(job_ids)}",
            f"--Format={SQUEUE_FORMAT}",
        ]

    def parse_status_output(self, stdout: str) -> dict[str, JobStatus]:
        statuses: dict[str, JobStatus] = {}
        for line in content_lines(stdout):
            fields = line.split("|", 5)
            if len(fields) != 6:
                raise SchedulerError(f"unexpected squeue line: {line!r}")
            job_id, native, raw_exit, reason, nodelist, name = (f.strip() for f in fields)
            name = name.removesuffix("|")
            native = native.split()[0]  # "CANCELLED by 0" in some versions
            state = self.map_state(native)
            exit_code = signal = None
            if state.is_final and raw_exit.lstrip("-").isdigit():
                exit_code, signal = decode_wait_status(int(raw_exit))
            statuses[job_id] = JobStatus(
                state=state,
                native_state=native,
                exit_code=exit_code,
                signal=signal,
                reason=None if reason in ("None", "") else reason,
                nodes=expand_hostlist(nodelist),
                name=name,
            )
        return statuses

    def find_by_name_command(self, job_name: str) -> list[str]:
        return ["squeue", "--noheader", "--states=all", f"--name={job_name}", f"--Format={SQUEUE_FORMAT}"]

    def parse_find_by_name_output(self, stdout: str, job_name: str) -> list[str]:
        found = [jid for jid, st in self.parse_status_output(stdout).items() if st.name == job_name]
        return sorted(found, key=_numeric_id)

    def cancel_command(self, job_id: str) -> list[str]:
        return ["scancel", job_id]

    def detail_command(self, job_id: str) -> list[str]:
        return [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allusers",
            f"--jobs={job_id}",
            f"--format={','.join(SACCT_FIELDS)}",
        ]

    def fallback_detail_command(self, job_id: str, output: str) -> list[str] | None:
        if any(marker in output.lower() for marker in NO_ACCOUNTING_MARKERS):
            return ["scontrol", "show", "job", "--oneliner", job_id]
        return None

    def parse_detail(self, stdout: str, job_id: str) -> JobDetail:
        """``sacct --parsable2`` output (see :func:`parse_sacct`) or, without accounting, ``scontrol -o``."""
        if stdout.lstrip().startswith("JobId="):
            return self._parse_scontrol_detail(stdout, job_id)
        found = parse_sacct(stdout, self)
        detail = found.get(job_id)
        if detail is None:
            raise SchedulerError(f"sacct output has no job {job_id}: {stdout[:200]!r}")
        return detail

    def _parse_scontrol_detail(self, stdout: str, job_id: str) -> JobDetail:
        fields = parse_scontrol_line(stdout)
        if fields.get("JobId") != job_id.split("_")[0] and fields.get("JobId") != job_id:
            raise SchedulerError(f"scontrol output is not about job {job_id}: {stdout[:200]!r}")
        native = fields["JobState"]
        state = self.map_state(native)
        exit_code = signal = None
        if state.is_final and ":" in fields.get("ExitCode", ""):
            exit_code, signal = parse_exit_pair(fields["ExitCode"])
        nodes = expand_hostlist(fields.get("NodeList", ""))
        reason = fields.get("Reason")
        status = JobStatus(
            state=state,
            native_state=native,
            exit_code=exit_code,
            signal=signal,
            reason=None if reason in (None, "None") else reason,
            nodes=nodes,
            name=fields.get("JobName"),
        )
        return JobDetail(
            job_id=job_id,
            status=status,
            exit_code=exit_code,
            wall_time=parse_clock(fields.get("RunTime", "")),
            nodes=nodes,
            submitted_at=parse_slurm_timestamp(fields.get("SubmitTime", "")),
            started_at=parse_slurm_timestamp(fields.get("StartTime", "")),
            ended_at=parse_slurm_timestamp(fields.get("EndTime", "")) if state.is_final else None,
        )


def parse_exit_pair(text: str) -> tuple[int | None, int | None]:
    """Slurm's ``ExitCode`` ``code:signal`` -> (exit code, signal); a signal gives 128+signal."""
    code, _, sig = text.strip().partition(":")
    if not code.isdigit() or not sig.isdigit():
        return None, None
    return (128 + int(sig), int(sig)) if int(sig) else (int(code), None)


def parse_slurm_memory(text: str) -> int | None:
    """Slurm's memory figures (``MaxRSS``: ``219728K``, ``1.50G``, ``0``) -> bytes.

    Slurm counts in KiB and prints a unit suffix (K, M, G, T, P: powers of 1024); a bare number is KiB.
    """
    return parse_memory(text, default_unit="k")


def parse_slurm_timestamp(text: str) -> datetime | None:
    """``2026-12-01T12:44:32`` (local time, no zone) -> naive datetime; ``Unknown``/``None`` -> None."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def parse_sacct(stdout: str, adapter: SlurmAdapter | None = None) -> dict[str, JobDetail]:
    """``sacct --noheader --parsable2 --format=<SACCT_FIELDS>`` -> one :class:`JobDetail` per job.

    Each job has its own line (state, exit code, elapsed time, nodes, the CPU time of all its steps)
    and one line per step (``<id>.batch`` for the script, ``<id>.extern``, ``<id>.0``...) carrying the
    step's peak RSS; the job's ``max_memory`` is the largest of its steps'. Where the job line has no
    CPU time yet, the steps' CPU times are added up.
    """
    adapter = adapter or SlurmAdapter()
    jobs: dict[str, dict[str, str]] = {}
    steps: dict[str, list[dict[str, str]]] = {}
    for line in content_lines(stdout):
        values = line.split("|", len(SACCT_FIELDS) - 1)
        if len(values) != len(SACCT_FIELDS):
            raise SchedulerError(f"unexpected sacct line: {line!r}")
        row = dict(zip(SACCT_FIELDS, (v.strip() for v in values), strict=True))
        job_id, dot, _step = row["JobID"].partition(".")
        if dot:
            steps.setdefault(job_id, []).append(row)
        else:
            jobs[job_id] = row
    details: dict[str, JobDetail] = {}
    for job_id, row in jobs.items():
        native = row["State"].split()[0] if row["State"] else "PENDING"  # "CANCELLED by 0"
        state = adapter.map_state(native)
        exit_code, signal = parse_exit_pair(row["ExitCode"]) if state.is_final else (None, None)
        nodes = expand_hostlist(row["NodeList"])
        own_steps = steps.get(job_id, [])
        cpu = parse_clock(row["TotalCPU"])
        if not cpu:
            step_cpu = [d for d in (parse_clock(s["TotalCPU"]) for s in own_steps) if d is not None]
            cpu = sum(step_cpu, timedelta()) if step_cpu else cpu
        memory = [m for m in (parse_slurm_memory(s["MaxRSS"]) for s in own_steps) if m is not None]
        reason = row["Reason"]
        status = JobStatus(
            state=state,
            native_state=native,
            exit_code=exit_code,
            signal=signal,
            reason=None if reason in ("", "None") else reason,
            nodes=nodes,
            name=row["JobName"],
        )
        details[job_id] = JobDetail(
            job_id=job_id,
            status=status,
            exit_code=exit_code,
            cpu_time=cpu,
            wall_time=parse_clock(row["Elapsed"]),
            max_memory=max(memory) if memory else None,
            nodes=nodes,
            submitted_at=parse_slurm_timestamp(row["Submit"]),
            started_at=parse_slurm_timestamp(row["Start"]),
            ended_at=parse_slurm_timestamp(row["End"]) if state.is_final else None,
        )
    return details


def parse_scontrol_line(stdout: str) -> dict[str, str]:
    """``Key=value Key2=value two`` (``scontrol -o``) -> dict; values run until the next ``Key=``."""
    text = " ".join(content_lines(stdout))
    matches = list(_SCONTROL_TOKEN.finditer(text))
    if not matches:
        raise SchedulerError(f"no key=value pairs in scontrol output: {stdout[:200]!r}")
    fields: dict[str, str] = {}
    for m, nxt in zip(matches, [*matches[1:], None], strict=True):
        end = nxt.start() if nxt is not None else len(text)
        fields.setdefault(m.group(1), text[m.end() : end].strip())
    return fields


def _numeric_id(job_id: str) -> tuple[int, str]:
    head = re.match(r"\d+", job_id)
    return (int(head.group(0)) if head else 0, job_id)


__all__ = [
    "SlurmAdapter",
    "decode_wait_status",
    "expand_hostlist",
    "parse_exit_pair",
    "parse_sacct",
    "parse_scontrol_line",
    "parse_slurm_memory",
    "parse_slurm_timestamp",
]
