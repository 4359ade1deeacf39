"""(Son of) Grid Engine: ``qsub -terse``, ``qstat -xml`` for all live jobs, ``qacct -j`` once finished, qdel.

``qstat`` forgets a job the moment it ends, so a job missing from the status output is finished (or
unknown): :meth:`SgeAdapter.detail_command` (``qacct -j <id>``) then gives its end state and exit
status. Formats follow the Grid Engine man pages qstat(1) (``-xml``: ``job_info`` / ``queue_info`` /
``job_list``), qacct(1) and accounting(5) as printed by Son of Grid Engine 8.1.
"""

from __future__ import annotations

import re
from typing import ClassVar
from xml.etree import ElementTree

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

QDEL_EXIT = 137  # qdel of a running job: SIGKILL, reported as 128 + 9 with failed "100 : assumedly after job"


def sge_state(native: str) -> JobState:
    """Grid Engine state letters (qw, hqw, r, t, Rr, s, dr, Eqw...) -> PSI/J state."""
    if "E" in native:
        return JobState.FAILED  # error state: the job will not run without qmod -cj
    if any(c in native for c in "rtsSTR"):
        return JobState.ACTIVE
    if any(c in native for c in "qwhd"):
        return JobState.QUEUED
    raise SchedulerError(f"unknown sge job state {native!r}")


class SgeAdapter(SchedulerAdapter):
    """Grid Engine (Sun/Oracle/Univa/Son of Grid Engine) with accounting via qacct."""

    kind = "sge"
    directive_prefix = "#$"
    forgets_finished_jobs = True
    unknown_job_markers = ("do not exist", "does not exist", "not found in accounting file")
    state_map: ClassVar[dict[str, JobState]] = {
        s: sge_state(s) for s in ("qw", "hqw", "hRwq", "r", "t", "Rr", "Rt", "s", "ts", "S", "T", "dr", "Eqw")
    }

    def map_state(self, native: str) -> JobState:
        return self.state_map.get(native) or sge_state(native)

    def directives(self, job: JobDescription, job_name: str, comment: str, workdir: str) -> list[str]:
        out, err = self.scheduler_output_paths(workdir)
        lines = [f"-N {job_name}", "-S /bin/bash", f"-wd {workdir}", f"-o {out}", f"-e {err}"]  # never -V
        r = job.resources
        if r is not None:
            slots = r.computed_process_count * (r.cpu_cores_per_process or 1)
            if slots > 1:
                pe = job.attributes.custom_for("sge").get("pe_name", "smp")
                lines.append(f"-pe {pe} {slots}")
            if r.memory is not None:  # h_vmem is per slot
                lines.append(f"-l h_vmem={-(-r.memory // slots // 1024)}K")
            if r.exclusive_node_use:
                lines.append("-l exclusive=true")
        a = job.attributes
        if a.duration is not None:
            lines.append(f"-l h_rt={format_clock(a.duration)}")
        if a.queue_name:
            lines.append(f"-q {a.queue_name}")
        if a.account:
            lines.append(f"-A {a.account}")
        if a.reservation_id:
            lines.append(f"-ar {a.reservation_id}")
        for key, value in self.custom_directives(job, "sge").items():
            if key != "pe_name":
                lines.append(f"-{key} {value}")
        return lines

    def submit_command(self, script_path: str) -> list[str]:
        return ["qsub", "-terse", script_path]

    def managed_options(self, job_name: str, workdir: str, comment: str, output: bool) -> list[str]:
        options = ["-N", job_name, "-wd", workdir]
        if output:
            out, err = self.scheduler_output_paths(workdir)
            options += ["-o", out, "-e", err]
        return options

    def parse_submit_output(self, stdout: str) -> str:
        lines = content_lines(stdout)
        m = re.fullmatch(r"(\d+)(?:\.\d+-\d+:\d+)?", lines[-1].strip()) if lines else None
        if m is None:
            raise SchedulerError(f"qsub -terse printed no job id: {stdout!r}")
        return m.group(1)

    def status_command(self, job_ids: list[str]) -> list[str]:
        """Every user's live jobs in one call (jobs run as their own accounts); ids absent have finished."""
        return ["qstat", "-u", "*", "-xml"]

    def parse_status_output(self, stdout: str) -> dict[str, JobStatus]:
        try:
            root = ElementTree.fromstring(stdout)
        except ElementTree.ParseError as exc:
            raise SchedulerError(f"qstat -xml is not XML: {exc}") from exc
        statuses: dict[str, JobStatus] = {}
        for job in root.iter("job_list"):
            job_id = (job.findtext("JB_job_number") or "").strip()
            native = (job.findtext("state") or "").strip()
            if not job_id or not native:
                continue
            queue = (job.findtext("queue_name") or "").strip()
            host = queue.partition("@")[2]
            statuses[job_id] = JobStatus(
                state=self.map_state(native),
                native_state=native,
                nodes=(host,) if host else (),
                name=(job.findtext("JB_name") or "").strip() or None,
            )
        return statuses

    def find_by_name_command(self, job_name: str) -> list[str]:
        """Live jobs only; use :meth:`finished_by_name_command` for jobs that already ended."""
        return ["qstat", "-u", "*", "-xml"]

    def parse_find_by_name_output(self, stdout: str, job_name: str) -> list[str]:
        found = [jid for jid, st in self.parse_status_output(stdout).items() if st.name == job_name]
        return sorted(found, key=int)

    def finished_by_name_command(self, job_name: str) -> list[str]:
        return ["qacct", "-j", job_name]

    def parse_finished_by_name_output(self, stdout: str, job_name: str) -> list[str]:
        ids = {rec["jobnumber"] for rec in parse_qacct(stdout) if rec.get("jobname") == job_name}
        return sorted(ids, key=int)

    def cancel_command(self, job_id: str) -> list[str]:
        return ["qdel", job_id]

    def detail_command(self, job_id: str) -> list[str]:
        return ["qacct", "-j", job_id]

    def parse_detail(self, stdout: str, job_id: str) -> JobDetail:
        records = [r for r in parse_qacct(stdout) if r.get("jobnumber") == job_id]
        if not records:
            raise SchedulerError(f"qacct output has no job {job_id}")
        rec = records[-1]  # a re-run job has one record per run; the last one counts
        failed_text = rec.get("failed", "0")
        failed = int(failed_text.split()[0]) if failed_text.split() else 0
        exit_code = int(rec.get("exit_status", "0").split()[0])
        if failed == 0 and exit_code == 0:
            state = JobState.COMPLETED
        elif exit_code == QDEL_EXIT and failed == 100:
            state = JobState.CANCELED
        else:
            state = JobState.FAILED
        host = rec.get("hostname")
        signal = exit_code - 128 if exit_code > 128 else None
        status = JobStatus(
            state=state,
            native_state=f"failed={failed_text}",
            exit_code=exit_code,
            signal=signal,
            reason=failed_text if failed else None,
            nodes=(host,) if host else (),
            name=rec.get("jobname"),
        )
        cpu = rec.get("cpu")
        wall = rec.get("ru_wallclock")
        return JobDetail(
            job_id=job_id,
            status=status,
            exit_code=exit_code,
            cpu_time=parse_clock(cpu) if cpu else None,
            wall_time=parse_clock(wall) if wall else None,
            max_memory=parse_memory(rec.get("maxvmem", "")),
            nodes=status.nodes,
        )


def parse_qacct(stdout: str) -> list[dict[str, str]]:
    """``qacct -j`` records (separated by ``=====`` lines) -> one dict per record."""
    records: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in stdout.splitlines():
        if line.startswith("====="):
            current = {}
            records.append(current)
            continue
        if current is None or not line.strip():
            continue
        key, _, value = line.partition(" ")
        current[key] = value.strip()
    return records
