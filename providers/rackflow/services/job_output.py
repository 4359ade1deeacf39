"""A batch job's output after its end: the kept stdout/stderr tails and the job directory's retention.

When a job ends, the job DAG's ``finish`` task copies the last ``[rackflow] job_output_tail_size`` bytes
of the job's stdout and of its stderr into the rackflow database (:func:`keep_output`) before the job
directory can go, so the owner still reads them (``GET /rackflow/api/jobs/<id>/output``) once it is
gone. The files are read through a :class:`~rackflow.hooks.job_dirs.JobDirectory` (this host or the
login node over SFTP): the job ran as its own Unix account and owns its directory, so anything in it
may be a symlink planted to make rackflow read another file; a symlink anywhere on the way is refused
and only the tail is read, in chunks.

Then the directory is removed (:func:`finish_job_directory`): at once when ``[rackflow]
job_directory_retention`` is 0 (the default), else it stays that long and the ``finish`` of a later job
of the same DAG removes it (:func:`remove_expired`), so no extra DAG or timer is needed.
"""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rackflow.core.jobspec import JobDescription
from rackflow.core.schedulers import SchedulerAdapter
from rackflow.db import jobs

if TYPE_CHECKING:
    from rackflow.hooks.job_dirs import JobDirectory
    from rackflow.hooks.scheduler import BatchSchedulerHook


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def keep_output(
    job_dir: JobDirectory,
    adapter: SchedulerAdapter,
    job: JobDescription,
    *,
    dag_id: str,
    run_id: str,
    workdir: str,
    max_bytes: int,
) -> str:
    """Copy the tails of the job's stdout and stderr into the rackflow DB; a stream kept already (a
    cleared finish) is left as it is. Returns what was kept, for the job's events."""
    said = []
    for stream, rel in zip(jobs.STREAMS, adapter.job_output_files(job, workdir), strict=True):
        if jobs.get_output(dag_id, run_id, stream) is not None:
            continue
        content, size, note = b"", None, None
        if rel is None:
            note = f"the job's {stream} file is outside its job directory: not kept"
        else:
            try:
                if job_dir.lstat(rel) is None:
                    raise FileNotFoundError(errno.ENOENT, "no such file", rel)
                content, size = job_dir.read_tail(rel, max_bytes)
            except FileNotFoundError:
                note = f"{rel} does not exist"
            except (OSError, ValueError) as exc:  # a symlink (ELOOP, UnsafeKeyError), a FIFO...
                why = errno.errorcode.get(getattr(exc, "errno", 0) or 0, "")
                note = f"{rel} is not a regular file reached without a symlink: not read" + (
                    f" ({why})" if why else ""
                )
        truncated = size is not None and size > len(content)
        jobs.save_output(
            dag_id,
            run_id,
            stream,
            content=content,
            size=size,
            truncated=truncated,
            path=rel,
            note=note,
        )
        if note is not None:
            said.append(f"{stream}: {note}")
        elif truncated:
            assert size is not None
            said.append(f"{stream}: last {_size(len(content))} of {_size(size)}")
        else:
            said.append(f"{stream}: {_size(len(content))}")
    return "output kept (" + "; ".join(said) + ")" if said else ""


def finish_job_directory(
    hook: BatchSchedulerHook, dag_id: str, run_id: str, workdir: str, retention: timedelta
) -> str:
    """Remove the job directory now (``retention`` 0) or note until when it stays; the event's text."""
    if retention <= timedelta(0):
        hook.remove_tree(workdir)
        jobs.workdir_removed(dag_id, run_id)
        return f"job directory {workdir} removed"
    until = datetime.now(UTC) + retention
    jobs.keep_workdir_until(dag_id, run_id, until)
    return f"job directory {workdir} kept until {until:%Y-%m-%d %H:%M:%S} UTC (job_directory_retention)"


def remove_expired(hook: BatchSchedulerHook, dag_id: str, *, limit: int = 50) -> int:
    """Remove up to ``limit`` of the DAG's kept job directories whose retention has run out (the same
    cluster: one job DAG per cluster); each job gets an event. Returns how many went."""
    removed = 0
    for run_id, workdir in jobs.expired_workdirs(dag_id, limit=limit):
        hook.remove_tree(workdir)
        jobs.workdir_removed(dag_id, run_id)
        jobs.record_event(dag_id, run_id, None, f"job directory {workdir} removed (retention over)")
        removed += 1
    return removed


__all__ = ["finish_job_directory", "keep_output", "remove_expired"]
