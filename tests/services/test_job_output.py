"""Kept job output and the job directory's retention, on real files (this host and the devfleet's
sshd over SFTP, ``ssh_fleet``) and the session's rackflow DB.

A job owns its directory, so what it leaves there is untrusted: a stdout that is a symlink, or sits in
a symlinked directory, is not read; a huge one is kept as its last bytes only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rackflow.core.jobspec import parse_job_description
from rackflow.core.schedulers import get_adapter
from rackflow.hooks.job_dirs import JobDirectory, LocalJobDirectory, SftpJobDirectory
from rackflow_devfleet.fleet import SSH_CONN_ID

DAG = "rackflow_job_output_test"


def _local(path: Path) -> JobDirectory:
    return LocalJobDirectory(path)


def _sftp(path: Path) -> JobDirectory:
    return SftpJobDirectory(str(path), SSH_CONN_ID)


def test_job_output_files_stay_inside_the_job_directory() -> None:
    slurm = get_adapter("slurm")
    wd = "/var/lib/rackflow/jobs/rf-1"

    def files(**job: Any) -> tuple[str | None, str | None]:
        return slurm.job_output_files(parse_job_description({"executable": "/bin/true", **job}), wd)

    assert files() == ("rackflow.out", "rackflow.err")
    assert files(stdout_path="out/x.txt", directory="sub") == ("sub/out/x.txt", "rackflow.err")
    assert files(stdout_path="/etc/passwd", stderr_path="../rf-2/e") == (None, None)
    assert files(directory="/tmp", stdout_path="o") == (None, "rackflow.err")
    assert files(stdout_path=f"{wd}/abs.out") == ("abs.out", "rackflow.err")


@pytest.mark.parametrize("opener", [_local, _sftp], ids=["local", "sftp"])
def test_keep_output_refuses_symlinks_and_keeps_a_bounded_tail(
    devfleet: Any, rackflow_db: str, tmp_path: Path, opener: Callable[[Path], JobDirectory]
) -> None:
    from rackflow.db import jobs
    from rackflow.services.job_output import keep_output

    secret = tmp_path / "secret"
    secret.write_text(f"secret-{uuid.uuid4().hex}\n")
    secret.chmod(0o600)
    job_dir = tmp_path / "job"
    (job_dir / "logs").mkdir(parents=True)
    (job_dir / "rackflow.out").symlink_to(secret)  # planted by the job
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "err.txt").write_text("outside\n")
    (job_dir / "via").symlink_to(tmp_path / "elsewhere")
    job = parse_job_description({"executable": "/bin/true", "stderr_path": "via/err.txt"})
    run_id = f"symlinks-{uuid.uuid4().hex}"
    with opener(job_dir) as directory:
        said = keep_output(
            directory,
            get_adapter("slurm"),
            job,
            dag_id=DAG,
            run_id=run_id,
            workdir=str(job_dir),
            max_bytes=1024,
        )
    out, err = (jobs.get_output(DAG, run_id, s) for s in ("stdout", "stderr"))
    assert out is not None and err is not None
    assert (out.content, out.size, err.content, err.size) == (b"", None, b"", None)
    assert "rackflow.out is not a regular file reached without a symlink" in (out.note or "")
    assert "via/err.txt is not a regular file reached without a symlink" in (err.note or "")
    assert "not read" in said

    # A huge output: only the last max_bytes are read and kept, marked truncated.
    (job_dir / "rackflow.out").unlink()
    body = os.urandom(8) * (1 << 17) + b"\x00the end\n"  # 1 MiB of binary noise, a NUL, then text
    (job_dir / "rackflow.out").write_bytes(body)
    plain = parse_job_description({"executable": "/bin/true"})
    run_id = f"huge-{uuid.uuid4().hex}"
    with opener(job_dir) as directory:
        said = keep_output(
            directory,
            get_adapter("slurm"),
            plain,
            dag_id=DAG,
            run_id=run_id,
            workdir=str(job_dir),
            max_bytes=4096,
        )
    out = jobs.get_output(DAG, run_id, "stdout")
    assert out is not None
    assert out.content == body[-4096:] and out.size == len(body) and out.truncated is True
    assert "stdout: last 4.0 KiB of 1.0 MiB" in said
    err = jobs.get_output(DAG, run_id, "stderr")
    assert err is not None and err.note == "rackflow.err does not exist"


def test_retention_keeps_the_directory_until_a_later_cleanup_removes_it(
    rackflow_db: str, tmp_path: Path
) -> None:
    from rackflow.db import jobs
    from rackflow.hooks.scheduler import BatchSchedulerHook
    from rackflow.services.job_output import finish_job_directory, remove_expired

    hook = BatchSchedulerHook()
    dag = f"{DAG}-{uuid.uuid4().hex[:8]}"
    kept, now = tmp_path / "kept", tmp_path / "now"
    for d in (kept, now):
        d.mkdir()
        (d / "rackflow.out").write_text("x\n")
        jobs.ensure_job(dag, d.name, workdir=str(d), state="COMPLETED")
    assert finish_job_directory(hook, dag, "now", str(now), timedelta(0)) == f"job directory {now} removed"
    assert not now.exists()
    said = finish_job_directory(hook, dag, "kept", str(kept), timedelta(hours=1))
    assert said.startswith(f"job directory {kept} kept until ")
    assert remove_expired(hook, dag) == 0 and kept.is_dir()
    assert jobs.expired_workdirs(dag, now=datetime.now(UTC) + timedelta(hours=2)) == [("kept", str(kept))]
    jobs.keep_workdir_until(dag, "kept", datetime.now(UTC) - timedelta(seconds=1))  # the hour has passed
    assert remove_expired(hook, dag) == 1
    assert not kept.exists()
    row = jobs.get_job(dag, "kept")
    assert row is not None and row.workdir_removed_at is not None and row.workdir_remove_after is None
    assert jobs.events(dag, "kept")[-1].message == f"job directory {kept} removed (retention over)"
    assert remove_expired(hook, dag) == 0


def test_retention_and_tail_size_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from rackflow import settings

    assert settings.job_directory_retention() == timedelta(0)
    assert settings.job_output_tail_bytes() == 64 * 1024
    for raw, expected in (("0", 0), ("2h", 7200), ("1-00:00:00", 86400), ("PT30M", 1800), ("90", 90)):
        monkeypatch.setenv("AIRFLOW__RACKFLOW__JOB_DIRECTORY_RETENTION", raw)
        assert settings.job_directory_retention() == timedelta(seconds=expected)
    for bad in ("soon", "-5", "inf"):
        monkeypatch.setenv("AIRFLOW__RACKFLOW__JOB_DIRECTORY_RETENTION", bad)
        with pytest.raises(ValueError, match="job_directory_retention"):
            settings.job_directory_retention()
    monkeypatch.setenv("AIRFLOW__RACKFLOW__JOB_OUTPUT_TAIL_SIZE", "1M")
    assert settings.job_output_tail_bytes() == 1 << 20
    monkeypatch.setenv("AIRFLOW__RACKFLOW__JOB_OUTPUT_TAIL_SIZE", "0")
    with pytest.raises(ValueError, match="job_output_tail_size"):
        settings.job_output_tail_bytes()
