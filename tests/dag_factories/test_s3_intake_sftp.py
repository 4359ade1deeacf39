"""S3 intake with the execution host on a login node: files over SFTP, scheduler commands over SSH.

Everything is real: SeaweedFS S3, the devfleet's key-only sshd (``ssh_fleet``, logging in as this user
on this machine) and the session's single-node Slurm. Whether a command or a file really went through
SSH is read from :class:`BatchSchedulerHook`'s in-process counters (dag.test() runs tasks in this
process) and from where the files landed (``~`` on the remote side, the SFTP intake's own base dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from rackflow.core.s3_protocol import ManifestEntry, UnsafeKeyError, take_manifest
from rackflow.hooks.job_dirs import SftpJobDirectory
from rackflow.hooks.s3_jobs import S3JobsHook, TransferResult
from rackflow.hooks.scheduler import BatchSchedulerHook, cluster_key
from rackflow.operators.s3_intake import (
    S3JobWaitOperator,
    claim_job,
    stage_in_job,
    submit_job,
)
from rackflow.triggers.scheduler import BatchSchedulerJobTrigger
from rackflow_devfleet.fleet import INTAKE_ACCOUNT, SSH_CONN_ID
from rackflow_devfleet.instrument import count_scheduler_commands
from tests.dag_factories.conftest import JOB_BASE, SFTP_JOB_BASE
from tests.dag_factories.s3_intake_support import CONN_ID, keys, new_bucket, read_status, upload_job


def _ssh_commands(devfleet: Any, counted: Counter[tuple[str, str]], command: str) -> int:
    """How often this process ran ``command`` on the login node ``ssh_fleet`` (with the Slurm env)."""
    return counted[(cluster_key("slurm", SSH_CONN_ID, devfleet.slurm.env), command)]


def _slurm(devfleet: Any, *argv: str) -> str:
    out = subprocess.run(
        list(argv), env={**os.environ, **devfleet.slurm.env}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _sftp_dag():  # type: ignore[no-untyped-def]
    from rackflow.dag_factories.s3_intake import build_all

    return build_all()["s3_intake_sftp"]


def _claim(hook: S3JobsHook, prefix: str) -> dict[str, Any]:
    seen = hook.read_status(prefix)
    assert seen is not None
    return claim_job(hook, {"prefix": prefix, "etag": seen[1]})


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _results(client: Any, bucket: str, prefix: str) -> list[str]:
    """Keys under the prefix without Slurm's own ``slurm-<id>.out`` (a result like any other)."""
    return [k for k in keys(client, bucket, prefix) if not k.rpartition("/")[2].startswith("slurm-")]


def _stage_out(hook: S3JobsHook, staged: dict[str, Any]) -> TransferResult:
    """The stage-out transfer alone (no status change), back from where stage-in put the job."""
    manifest = {rel: ManifestEntry(*entry) for rel, entry in staged["manifest"].items()}
    with SftpJobDirectory(staged["job_dir"], staged["ssh_conn_id"]) as job_dir:
        return hook.stage_out(staged["prefix"], job_dir, manifest)


def test_round_trip_on_the_login_node(devfleet, airflow_db, sftp_intake):
    """Acceptance 1 with the execution host over SSH: input.dat staged over SFTP into the intake's own
    base dir, sbatch run over SSH from there, COMPLETED, out.txt uploaded from the remote dir."""
    client = devfleet.s3.client()
    bucket = str(sftp_intake["bucket"])
    prefix = f"job{uuid.uuid4().hex[:6]}"
    upload_job(client, bucket, prefix)
    with count_scheduler_commands() as counted:
        _sftp_dag().test()

    status = read_status(client, bucket, prefix)
    assert status.splitlines()[0] == "COMPLETED", status
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/out.txt")["Body"].read() == (
        b"hello from the cloud\ndone\n"
    )
    assert _results(client, bucket, prefix) == sorted(
        f"{prefix}/{n}" for n in ("aws-job-run.sh", "aws-job-stat.txt", "input.dat", "out.txt")
    )
    remote_dir = SFTP_JOB_BASE / prefix
    assert sorted(os.listdir(remote_dir))[:3] == ["aws-job-run.sh", "input.dat", "out.txt"]
    assert (remote_dir / "input.dat").read_bytes() == b"hello from the cloud\n"
    assert not (JOB_BASE / "sftp" / prefix).exists()  # not staged in the local intakes' place
    assert _ssh_commands(devfleet, counted, "sbatch") == 1
    job_id = status.splitlines()[1]
    workdir = _slurm(devfleet, "scontrol", "show", "job", job_id)
    assert f"WorkDir={remote_dir}" in workdir


def test_tilde_is_the_remote_users_home(devfleet, sftp_intake, tmp_path, monkeypatch):
    """``~`` in job_base_dir expands on the login node (SFTP's home), not on the worker: the worker's
    HOME is pointed elsewhere for the test, and the job directory still lands in the remote user's home."""
    remote_home = Path(pwd.getpwnam(devfleet.sshd.user).pw_dir)
    unique = f"rackflow-sftp-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("HOME", str(tmp_path))
    bucket = new_bucket(devfleet, "home")
    client = devfleet.s3.client()
    prefix = "job0001"
    upload_job(client, bucket, prefix)
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    try:
        staged = stage_in_job(hook, _claim(hook, prefix), f"~/{unique}/aws-job", SSH_CONN_ID)
        job_dir = remote_home / unique / "aws-job" / prefix
        assert staged["job_dir"] == str(job_dir)
        assert staged["ssh_conn_id"] == SSH_CONN_ID
        assert sorted(os.listdir(job_dir)) == ["aws-job-run.sh", "input.dat"]
        assert not (tmp_path / unique).exists()

        # The job itself cannot run there: the remote user's home (0700) does not let the intake's
        # run_as account through. The round trip over SSH is test_round_trip_on_the_login_node's.
        assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(remote_home / unique, ignore_errors=True)
    assert not (remote_home / unique).exists()


def test_hostile_keys_write_nothing_outside_the_job_dir(devfleet, tmp_path):
    bucket = new_bucket(devfleet, "hostile")
    client = devfleet.s3.client()
    upload_job(client, bucket, "jobX", files={"input.dat": b"in\n", "a b/c d.txt": b"spaced\n"})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    claimed = _claim(hook, "jobX")
    hostile = ["jobX/../../etc/x", "/etc/y", "jobX/line\nbreak", "jobX/..", "jobX/back\\slash"]
    etc_x_before = Path("/etc/x").exists()
    base = tmp_path / "base"

    staged = stage_in_job(hook, {**claimed, "keys": claimed["keys"] + hostile}, str(base), SSH_CONN_ID)

    assert sorted(staged["skipped"]) == sorted(hostile)
    assert _files_under(tmp_path) == [
        "base/jobX/a b/c d.txt",
        "base/jobX/aws-job-run.sh",
        "base/jobX/input.dat",
    ]
    assert not (tmp_path / "etc").exists()  # where jobX/../../etc/x would have gone
    assert Path("/etc/x").exists() == etc_x_before
    assert sorted(staged["manifest"]) == ["a b/", "a b/c d.txt", "aws-job-run.sh", "input.dat"]


def test_sftp_job_dir_creates_exclusively_and_never_through_a_symlink(devfleet, tmp_path):
    """The SFTP job directory itself: a second job directory of the same name, an existing file, a
    symlink as the file or as a directory on the way are all refused, and nothing lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    with SftpJobDirectory(str(tmp_path / "job"), SSH_CONN_ID) as job_dir:
        job_dir.create()
        with pytest.raises(FileExistsError):
            job_dir.create()
        with job_dir.open_new(["sub", "f.txt"]) as out:
            out.write(b"one\n")
        with pytest.raises(FileExistsError), job_dir.open_new(["sub", "f.txt"]):
            pass
        assert (tmp_path / "job" / "sub" / "f.txt").read_bytes() == b"one\n"

        (tmp_path / "job" / "dirlink").symlink_to(outside)
        (tmp_path / "job" / "filelink").symlink_to(outside / "target")
        with pytest.raises(UnsafeKeyError, match="dirlink is a symlink"), job_dir.open_new(["dirlink", "x"]):
            pass
        with pytest.raises(UnsafeKeyError, match="symlink"):
            job_dir.make_dirs(["dirlink", "deeper"])
        with pytest.raises(FileExistsError), job_dir.open_new(["filelink"]):
            pass
        assert list(outside.iterdir()) == []

        manifest = take_manifest(job_dir.list_dir)
        assert sorted(manifest) == ["sub/", "sub/f.txt"]
        with pytest.raises(OSError, match="not a regular file"):
            job_dir.open_result("filelink")
        with pytest.raises(OSError, match="not a directory"):
            job_dir.list_dir("dirlink/")


def test_symlinks_the_job_creates_are_not_followed_on_stage_out(devfleet, airflow_db, sftp_intake):
    client = devfleet.s3.client()
    bucket = str(sftp_intake["bucket"])
    prefix = f"links{uuid.uuid4().hex[:6]}"
    script = (
        b"#!/bin/bash\necho real > real.txt\nln -s /etc/passwd leak\nln -s /etc etcdir\n"
        b"mkdir sub && ln -s / sub/root && echo deep > sub/deep.txt\n"
    )
    upload_job(client, bucket, prefix, script=script, files={})

    _sftp_dag().test()

    assert read_status(client, bucket, prefix).splitlines()[0] == "COMPLETED"
    assert _results(client, bucket, prefix) == sorted(
        f"{prefix}/{n}" for n in ("aws-job-run.sh", "aws-job-stat.txt", "real.txt", "sub/deep.txt")
    )
    remote_dir = SFTP_JOB_BASE / prefix
    assert stat.S_ISLNK((remote_dir / "etcdir").lstat().st_mode)  # the job really made them


def test_same_second_rewrite_of_a_staged_file_is_uploaded(devfleet, tmp_path):
    """SFTP carries whole-second mtimes: a job rewriting an input with the same size right after
    stage-in must still count as a change (stage-in back-dates what it wrote by one second)."""
    bucket = new_bucket(devfleet, "mtime")
    client = devfleet.s3.client()
    upload_job(client, bucket, "job0001", files={"input.dat": b"AAAA\n"})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    staged = stage_in_job(hook, _claim(hook, "job0001"), str(tmp_path), SSH_CONN_ID)
    (tmp_path / "job0001" / "input.dat").write_bytes(b"BBBB\n")  # what a fast job would do
    assert _stage_out(hook, staged).keys == ["job0001/input.dat"]
    assert client.get_object(Bucket=bucket, Key="job0001/input.dat")["Body"].read() == b"BBBB\n"


def test_wait_trigger_runs_and_cancels_on_the_login_node(devfleet, shared_tmp):
    """The deferred wait: its trigger is rebuilt from its serialised kwargs (as the triggerer does),
    polls Slurm over SSH, and its on_kill cancels over SSH and writes CANCELED."""
    bucket = new_bucket(devfleet, "sshkill")
    client = devfleet.s3.client()
    upload_job(client, bucket, "long", script=b"#!/bin/bash\n#SBATCH --ntasks=1\nsleep 300\n", files={})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    staged = stage_in_job(hook, _claim(hook, "long"), str(shared_tmp), SSH_CONN_ID)
    scheduler = BatchSchedulerHook(scheduler_env=devfleet.slurm.env, ssh_conn_id=SSH_CONN_ID)
    submitted = submit_job(hook, staged, scheduler, f"run-{uuid.uuid4().hex[:6]}", INTAKE_ACCOUNT)
    operator = S3JobWaitOperator(
        task_id="wait",
        job=submitted,
        bucket_name=bucket,
        aws_conn_id=CONN_ID,
        ssh_conn_id=SSH_CONN_ID,
        scheduler_env=devfleet.slurm.env,
        poll_interval=0.3,
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator._defer("QUEUED")
    _, kwargs = deferred.value.trigger.serialize()
    assert isinstance(deferred.value.trigger, BatchSchedulerJobTrigger)  # the shared cluster poller's
    assert kwargs["ssh_conn_id"] == SSH_CONN_ID and kwargs["scheduler_env"] == devfleet.slurm.env
    trigger_type = type(deferred.value.trigger)

    async def wait_a_while() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []

        async def collect() -> None:
            async for event in trigger_type(**kwargs).run():
                events.append(dict(event.payload))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), timeout=2)
        return events

    with count_scheduler_commands() as counted:
        assert asyncio.run(wait_a_while()) == []  # the job runs on: nothing resumes the task
    assert _ssh_commands(devfleet, counted, "squeue") > 0
    assert read_status(client, bucket, "long").splitlines()[0] in ("QUEUED", "RUNNING")

    with count_scheduler_commands() as counted:
        asyncio.run(trigger_type(**kwargs).on_kill())
    assert _ssh_commands(devfleet, counted, "scancel") == 1
    state = _slurm(
        devfleet, "squeue", "--noheader", "--states=all", f"--jobs={submitted['job_id']}", "-o", "%T"
    )
    assert state == "CANCELLED"
    lines = read_status(client, bucket, "long").splitlines()
    assert lines[0] == "CANCELED" and lines[1] == submitted["job_id"], lines


def test_transfers_over_sftp_are_streamed(devfleet, tmp_path):
    size = 64 * 1024 * 1024
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.truncate(size)  # sparse: no memory or disk cost to make
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, "sftpbig")
    upload_job(client, bucket, "big", files={})
    client.upload_file(str(src), bucket, "big/big.bin")
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    claimed = _claim(hook, "big")
    tracemalloc.start()
    try:
        staged = stage_in_job(hook, claimed, str(tmp_path / "base"), SSH_CONN_ID)
        os.truncate(tmp_path / "base" / "big" / "big.bin", size + 1)
        _stage_out(hook, staged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "base" / "big" / "big.bin").stat().st_size == size + 1
    assert client.head_object(Bucket=bucket, Key="big/big.bin")["ContentLength"] == size + 1
    assert peak < size // 2, f"peak Python allocation {peak} bytes for a {size}-byte file"
