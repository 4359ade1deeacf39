"""LocalSchedulerHook against the devfleet's real Slurm, run locally and through the real sshd."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from rackflow.core.jobspec import parse_job_description
from rackflow.core.schedulers import JobState, JobStatus
from rackflow.hooks.scheduler import LocalSchedulerHook, SchedulerRejectedJob


def _wait_final(hook: LocalSchedulerHook, ids: list[str]) -> dict[str, JobStatus]:
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
    devfleet: object, tmp_path: Path
) -> None:
    hook = LocalSchedulerHook(scheduler="slurm")
    name = f"rf.test.{uuid.uuid4().hex[:8]}"
    ok = parse_job_description({"executable": "/bin/sh", "arguments": ["-c", "echo hi > out.txt"]})
    bad = parse_job_description({"executable": "/bin/sh", "arguments": ["-c", "exit 3"]})
    first = hook.submit(ok, job_name=name, comment="run 1", workdir=str(tmp_path / "ok"))
    again = hook.submit(ok, job_name=name, comment="run 1", workdir=str(tmp_path / "ok"))
    assert not first.existing and again.existing
    assert again.scheduler_job_id == first.scheduler_job_id
    assert hook.find_by_name(first.job_name) == [first.scheduler_job_id]
    failed = hook.submit(bad, job_name=name + ".bad", comment="run 2", workdir=str(tmp_path / "bad"))

    before = LocalSchedulerHook.status_queries[hook.cluster_key]
    squeue_before = LocalSchedulerHook.commands_run[(hook.cluster_key, "squeue")]
    statuses = hook.statuses([first.scheduler_job_id, failed.scheduler_job_id])
    assert LocalSchedulerHook.status_queries[hook.cluster_key] == before + 1
    assert LocalSchedulerHook.commands_run[(hook.cluster_key, "squeue")] == squeue_before + 1
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


def test_scheduler_rejection_carries_its_message(devfleet: object, tmp_path: Path) -> None:
    hook = LocalSchedulerHook(scheduler="slurm")
    job = parse_job_description({"executable": "/bin/true", "attributes": {"queue_name": "nosuch"}})
    with pytest.raises(SchedulerRejectedJob, match=r"(?i)invalid partition"):
        hook.submit(job, job_name=f"rf.reject.{uuid.uuid4().hex[:6]}", comment="x", workdir=str(tmp_path))


def test_job_no_node_can_hold_stays_queued_with_the_reason(devfleet: object, tmp_path: Path) -> None:
    hook = LocalSchedulerHook(scheduler="slurm")
    job = parse_job_description({"executable": "/bin/true", "resources": {"node_count": 5}})
    sub = hook.submit(job, job_name=f"rf.big.{uuid.uuid4().hex[:6]}", comment="x", workdir=str(tmp_path))
    time.sleep(1)
    status = hook.statuses([sub.scheduler_job_id])[sub.scheduler_job_id]
    assert status.state == JobState.QUEUED and status.reason
    assert hook.cancel(sub.scheduler_job_id)


def test_unknown_job_is_reported_not_raised(devfleet: object) -> None:
    hook = LocalSchedulerHook(scheduler="slurm")
    assert hook.get_detail("987654") is None
    assert hook.cancel("987654") is False
    assert hook.statuses(["987654"])["987654"].native_state == "UNKNOWN"


def test_over_ssh_submits_polls_files_and_cancels(
    devfleet: object, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    hook = LocalSchedulerHook(scheduler="slurm", ssh_conn_id="ssh_fleet", env=slurm_env)
    assert hook.cluster_key.startswith("slurm@ssh:ssh_fleet")
    workdir = str(tmp_path / "ssh-job")
    job = parse_job_description({"executable": "/bin/sleep", "arguments": ["60"]})
    sub = hook.submit(job, job_name=f"rf.ssh.{uuid.uuid4().hex[:6]}", comment="ssh", workdir=workdir)
    assert (Path(workdir) / "rackflow-job.sh").is_file()
    hook.write_text(f"{workdir}/note.txt", "over sftp")
    assert (Path(workdir) / "note.txt").read_text() == "over sftp"
    assert "note.txt" in hook.list_files(workdir)
    assert hook.statuses([sub.scheduler_job_id])[sub.scheduler_job_id].state in (
        JobState.QUEUED,
        JobState.ACTIVE,
    )
    assert hook.cancel(sub.scheduler_job_id) is True
    assert _wait_final(hook, [sub.scheduler_job_id])[sub.scheduler_job_id].state == JobState.CANCELED
    hook.remove_tree(workdir)
    assert not Path(workdir).exists()
    hook.close()
