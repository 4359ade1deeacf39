"""BatchSchedulerHook against the devfleet's real Slurm, run locally and through the real sshd."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from rackflow.core.jobspec import parse_job_description
from rackflow.core.schedulers import JobState, JobStatus
from rackflow.hooks.scheduler import BatchSchedulerHook, SchedulerRejectedJob
from rackflow_devfleet.fleet import JOB_ACCOUNTS
from rackflow_devfleet.instrument import count_scheduler_commands

ACCOUNT = JOB_ACCOUNTS["alice"]


def _wait_final(hook: BatchSchedulerHook, ids: list[str]) -> dict[str, JobStatus]:
    deadline = time.monotonic() + 60
    while True:
        statuses = hook.statuses(ids)
        if all(s.state.is_final for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.3)


@pytest.fixture
def slurm_env(devfleet: object) -> dict[str, str]:
    return {"SLURM_CONF": os.environ["SLURM_CONF"]}


def test_submit_is_idempotent_by_name_and_one_status_call_covers_many_jobs(
    devfleet: object, shared_tmp: Path
) -> None:
    tmp_path = shared_tmp
    hook = BatchSchedulerHook(scheduler="slurm")
    name = f"rf.test.{uuid.uuid4().hex[:8]}"
    ok = parse_job_description({"executable": "/bin/sh", "arguments": ["-c", "echo hi > out.txt"]})
    bad = parse_job_description({"executable": "/bin/sh", "arguments": ["-c", "exit 3"]})
    first = hook.submit(ok, job_name=name, comment="run 1", workdir=str(tmp_path / "ok"), account=ACCOUNT)
    again = hook.submit(ok, job_name=name, comment="run 1", workdir=str(tmp_path / "ok"), account=ACCOUNT)
    assert not first.existing and again.existing
    assert again.scheduler_job_id == first.scheduler_job_id
    assert hook.find_by_name(first.job_name) == [first.scheduler_job_id]
    failed = hook.submit(
        bad, job_name=name + ".bad", comment="run 2", workdir=str(tmp_path / "bad"), account=ACCOUNT
    )

    with count_scheduler_commands() as commands:
        statuses = hook.statuses([first.scheduler_job_id, failed.scheduler_job_id])
    assert commands == {(hook.cluster_key, "squeue"): 1}  # one status command for both jobs, nothing else
    assert set(statuses) == {first.scheduler_job_id, failed.scheduler_job_id}

    final = _wait_final(hook, [first.scheduler_job_id, failed.scheduler_job_id])
    assert final[first.scheduler_job_id].state == JobState.COMPLETED
    assert final[first.scheduler_job_id].exit_code == 0
    assert final[failed.scheduler_job_id].state == JobState.FAILED
    assert final[failed.scheduler_job_id].exit_code == 3
    assert (tmp_path / "ok" / "out.txt").read_text() == "hi\n"
    detail = hook.get_detail(failed.scheduler_job_id)
    assert detail is not None and detail.exit_code == 3
    assert "StartTime" in hook.get_times(failed.scheduler_job_id)


def test_scheduler_rejection_carries_its_message(devfleet: object, shared_tmp: Path) -> None:
    tmp_path = shared_tmp
    hook = BatchSchedulerHook(scheduler="slurm")
    job = parse_job_description({"executable": "/bin/true", "attributes": {"queue_name": "nosuch"}})
    with pytest.raises(SchedulerRejectedJob, match=r"(?i)invalid partition"):
        hook.submit(
            job,
            job_name=f"rf.reject.{uuid.uuid4().hex[:6]}",
            comment="x",
            workdir=str(tmp_path),
            account=ACCOUNT,
        )


def test_job_no_node_can_hold_stays_queued_with_the_reason(devfleet: object, shared_tmp: Path) -> None:
    tmp_path = shared_tmp
    hook = BatchSchedulerHook(scheduler="slurm")
    job = parse_job_description({"executable": "/bin/true", "resources": {"node_count": 5}})
    sub = hook.submit(
        job, job_name=f"rf.big.{uuid.uuid4().hex[:6]}", comment="x", workdir=str(tmp_path), account=ACCOUNT
    )
    time.sleep(1)
    status = hook.statuses([sub.scheduler_job_id])[sub.scheduler_job_id]
    assert status.state == JobState.QUEUED and status.reason
    assert hook.cancel(sub.scheduler_job_id)


def test_unknown_job_is_reported_not_raised(devfleet: object) -> None:
    hook = BatchSchedulerHook(scheduler="slurm", accounting_lag=2.0)
    assert hook.get_detail("987654") is None
    assert hook.cancel("987654") is False
    started = time.monotonic()
    status = hook.statuses(["987654"])["987654"]
    assert status.native_state == "UNKNOWN"
    assert "nor its accounting" in (status.reason or "")
    assert time.monotonic() - started < 2.0 + 5  # accounting is re-asked for a bounded time only


def test_job_the_controller_forgot_gets_its_final_state_exit_code_and_usage_from_accounting(
    own_slurm: Any, shared_tmp: Path
) -> None:
    tmp_path = shared_tmp
    hook = BatchSchedulerHook(scheduler="slurm", scheduler_env=own_slurm.env)
    job = parse_job_description({"executable": "/bin/sh", "arguments": ["-c", "sleep 1; exit 5"]})
    sub = hook.submit(
        job, job_name="rf.forgotten", comment="x", workdir=str(tmp_path / "job"), account=ACCOUNT
    )
    mine = sub.scheduler_job_id
    # A job of a Unix user sacctmgr has never heard of (AccountingStorageEnforce is off): recorded too.
    theirs = hook.adapter.parse_submit_output(
        hook.run(
            ["runuser", "-u", "nobody", "--", "sbatch", "--parsable", "--chdir=/tmp", "--output=/dev/null",
             "--wrap", "sleep 1; exit 4"]
        ).stdout
    )  # fmt: skip
    final = _wait_final(hook, [mine, theirs])
    assert (final[mine].exit_code, final[theirs].exit_code) == (5, 4)
    assert hook.final_detail(mine) is not None and hook.final_detail(theirs) is not None  # caught up

    # As if MinJobAge had passed: slurmctld comes back without any job record.
    own_slurm.restart_controller(forget_jobs=True)
    squeue = hook.run(hook.adapter.status_command([mine]), check=False)
    assert squeue.returncode != 0 and hook.adapter.is_unknown_job_error(squeue.stderr)

    statuses = hook.statuses([mine, theirs])
    got = {job_id: (s.state, s.native_state, s.exit_code, s.nodes) for job_id, s in statuses.items()}
    assert got == {
        mine: (JobState.FAILED, "FAILED", 5, ("localhost",)),
        theirs: (JobState.FAILED, "FAILED", 4, ("localhost",)),
    }
    detail = hook.get_detail(mine)
    assert detail is not None and detail.exit_code == 5
    assert detail.wall_time is not None and detail.wall_time.total_seconds() >= 1
    assert detail.ended_at is not None
    owner = hook.run(
        ["sacct", "--noheader", "--parsable2", "-X", f"--jobs={theirs}", "--format=User,Account"]
    )
    assert owner.stdout.strip() == "nobody|"


def test_over_ssh_submits_polls_files_and_cancels(
    devfleet: object, slurm_env: dict[str, str], shared_tmp: Path
) -> None:
    tmp_path = shared_tmp
    hook = BatchSchedulerHook(scheduler="slurm", ssh_conn_id="ssh_fleet", scheduler_env=slurm_env)
    assert hook.cluster_key.startswith("slurm@ssh:ssh_fleet")
    workdir = str(tmp_path / "ssh-job")
    job = parse_job_description({"executable": "/bin/sleep", "arguments": ["60"]})
    sub = hook.submit(
        job, job_name=f"rf.ssh.{uuid.uuid4().hex[:6]}", comment="ssh", workdir=workdir, account=ACCOUNT
    )
    assert (Path(workdir) / "rackflow-job.sh").is_file()
    hook.write_text(f"{workdir}/note.txt", "over sftp")
    assert (Path(workdir) / "note.txt").read_text() == "over sftp"
    assert "note.txt" in hook.list_files(workdir)
    assert hook.statuses([sub.scheduler_job_id])[sub.scheduler_job_id].state in (
        JobState.QUEUED,
        JobState.ACTIVE,
    )
    assert hook.cancel(sub.scheduler_job_id, account=ACCOUNT) is True
    assert _wait_final(hook, [sub.scheduler_job_id])[sub.scheduler_job_id].state == JobState.CANCELED
    hook.remove_tree(workdir)
    assert not Path(workdir).exists()
    hook.close()


def test_scheduler_commands_get_no_worker_environment_and_run_as_the_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rackflow.hooks.scheduler import DEFAULT_PATH

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "secret")
    monkeypatch.setenv("AIRFLOW_CONN_SITE", "ssh://root:pw@host")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/test.conf")
    hook = BatchSchedulerHook(scheduler_env={"EXTRA": "1"})
    assert hook.command_env() == {"PATH": DEFAULT_PATH, "SLURM_CONF": "/etc/slurm/test.conf", "EXTRA": "1"}
    assert hook.command_line(["sbatch", "job.sh"], account=ACCOUNT, cwd="/jobs/rf-1") == [
        "sudo", "-n", "-u", ACCOUNT, "--",
        "env", "-i", "-C", "/jobs/rf-1", f"PATH={DEFAULT_PATH}", "SLURM_CONF=/etc/slurm/test.conf", "EXTRA=1",
        "sbatch", "job.sh",
    ]  # fmt: skip
    # Over SSH the login node's own client variables count, not the worker's.
    assert BatchSchedulerHook(ssh_conn_id="login", scheduler_env={"SLURM_CONF": "/s"}).command_env() == {
        "PATH": DEFAULT_PATH,
        "SLURM_CONF": "/s",
    }
    for bad in ("root", "-u", "a b", "../x", ""):
        with pytest.raises(ValueError):
            hook.command_line(["scancel", "1"], account=bad)
    # What a command really gets.
    seen = hook.run(["env"]).stdout.splitlines()
    assert sorted(seen) == sorted([f"PATH={DEFAULT_PATH}", "SLURM_CONF=/etc/slurm/test.conf", "EXTRA=1"])
