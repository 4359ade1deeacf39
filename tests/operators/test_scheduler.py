"""The job DAG and SubmitToBatchSchedulerOperator on the devfleet's real Slurm and SeaweedFS S3."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rackflow.db import jobs
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow.operators.scheduler import SubmitToBatchSchedulerOperator


def _job_dag() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rackflow_job_dag", Path(__file__).resolve().parents[2] / "dags" / "rackflow_job.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_failing_job_records_exit_code_events_in_order_and_stages_out_to_s3(
    airflow_db: Path, rackflow_db: str, devfleet: Any
) -> None:
    key = f"results/{uuid.uuid4().hex}/out.txt"
    spec = {
        "executable": "/bin/sh",
        "arguments": ["-c", "cat in.txt > out.txt; echo done >> out.txt; sleep 2; exit 3"],
        "stage_in": [{"source": "s3://rackflow-jobs/inputs/in.txt", "target": "in.txt"}],
        "stage_out": [{"source": "out.txt", "target": f"s3://rackflow-results/{key}"}],
    }
    devfleet.s3.client().put_object(Bucket="rackflow-jobs", Key="inputs/in.txt", Body=b"hello\n")
    dag = _job_dag()
    run = dag.test(run_conf={"job": spec})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"submit": "failed", "finish": "failed"}
    job = jobs.get_job(dag.dag_id, run.run_id)
    assert job is not None and job.state == "FAILED" and job.exit_code == 3
    assert jobs.states_seen(dag.dag_id, run.run_id) == ["QUEUED", "ACTIVE", "FAILED"]
    body = devfleet.s3.client().get_object(Bucket="rackflow-results", Key=key)["Body"].read()
    assert body == b"hello\ndone\n"
    assert not Path(job.workdir or "/nonexistent").exists()


def test_stage_in_failure_fails_the_job_with_the_reason_and_submits_nothing(
    airflow_db: Path, rackflow_db: str, devfleet: Any
) -> None:
    spec = {
        "executable": "/bin/true",
        "stage_in": [{"source": "s3://rackflow-jobs/missing/nothing.txt", "target": "x"}],
    }
    dag = _job_dag()
    run = dag.test(run_conf={"job": spec})
    job = jobs.get_job(dag.dag_id, run.run_id)
    assert job is not None and job.state == "FAILED" and job.scheduler_job_id is None
    assert "no such object" in (job.message or "")
    hook = BatchSchedulerHook()
    assert job.job_name is not None and job.job_name.startswith("rf-")  # generated, not the run id
    assert hook.find_by_name(job.job_name) == []


def _context(dag_id: str, run_id: str) -> dict[str, Any]:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    return {"dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, triggering_user_name="alice"), "ti": ti}


def _submit_and_poll(dag_id: str, run_id: str, workdir: str) -> None:
    op = SubmitToBatchSchedulerOperator(
        task_id="submit",
        job={"executable": "/bin/sleep", "arguments": ["30"]},
        workdir=workdir,
        deferrable=False,
    )
    op.execute(_context(dag_id, run_id))


def test_task_killed_after_submit_then_run_again_leaves_exactly_one_scheduler_job(
    rackflow_db: str, devfleet: Any, shared_tmp: Path
) -> None:
    dag_id, run_id = "rackflow_job_kill_test", f"manual__{uuid.uuid4().hex}"
    workdir = str(shared_tmp / "job")
    # The task process (polling in the worker) is SIGKILLed once its job is submitted: no on_kill runs.
    child = multiprocessing.get_context("fork").Process(
        target=_submit_and_poll, args=(dag_id, run_id, workdir)
    )
    child.start()
    deadline = time.monotonic() + 60
    while (row := jobs.get_job(dag_id, run_id)) is None or row.scheduler_job_id is None:
        assert time.monotonic() < deadline and child.is_alive(), "the task never submitted"
        time.sleep(0.1)
    first_id = row.scheduler_job_id
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()

    # Cleared: the task runs again from the beginning of its stage and takes the existing job over.
    op = SubmitToBatchSchedulerOperator(
        task_id="submit",
        job={"executable": "/bin/sleep", "arguments": ["30"]},
        workdir=workdir,
        wait_for_completion=False,
    )
    result = op.execute(_context(dag_id, run_id))
    hook = BatchSchedulerHook()
    assert result["scheduler_job_id"] == first_id
    assert hook.find_by_name(result["job_name"]) == [first_id]
    messages = [e.message for e in jobs.events(dag_id, run_id)]
    assert any(m.startswith("found existing slurm job") for m in messages)
    op._scheduler_job_id = first_id
    op.on_kill()  # the user kills it: the scheduler job is cancelled
    deadline = time.monotonic() + 30
    while hook.statuses([first_id])[first_id].state.value != "CANCELED":
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_invalid_description_fails_without_submitting(rackflow_db: str) -> None:
    op = SubmitToBatchSchedulerOperator(task_id="submit", job={"executable": 5})
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="executable"):
        op.execute(_context("d", "r"))


def test_wait_resumed_after_slurm_forgot_the_job_completes_it_from_accounting(
    rackflow_db: str, own_slurm: Any, shared_tmp: Path
) -> None:
    """issue 14: a wait that resumes after MinJobAge asks again; slurmctld has forgotten the job, sacct
    has not, so the job is COMPLETED with its exit code and usage (it was FAILED "no longer knows")."""
    from rackflow.core.jobspec import parse_job_description
    from rackflow.operators.scheduler import WaitForBatchSchedulerJobOperator
    from rackflow_devfleet.fleet import JOB_ACCOUNTS
    from tests.core.test_slurm_real import BURN

    dag_id, run_id = "rackflow_job_forgotten_test", f"manual__{uuid.uuid4().hex}"
    hook = BatchSchedulerHook(scheduler_env=own_slurm.env)
    job = parse_job_description({"executable": "/usr/bin/python3", "arguments": ["-c", BURN]})
    workdir = str(shared_tmp / "job")
    job_id = hook.submit(
        job, job_name="rf.resumed", comment="x", workdir=workdir, account=JOB_ACCOUNTS["alice"]
    ).scheduler_job_id
    deadline = time.monotonic() + 60
    while not hook.statuses([job_id])[job_id].state.is_final:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    hook.final_detail(job_id)  # accounting has the end
    own_slurm.restart_controller(forget_jobs=True)

    op = WaitForBatchSchedulerJobOperator(
        task_id="wait", scheduler_job_id=job_id, scheduler_env=own_slurm.env
    )
    result = op.execute(_context(dag_id, run_id))  # deferrable: checks once before deferring

    assert (result["state"], result["native_state"], result["exit_code"]) == ("COMPLETED", "COMPLETED", 0)
    assert result["cpu_time"] >= 1 and result["max_memory"] >= 150 * 10**6
    row = jobs.get_job(dag_id, run_id)
    assert row is not None and row.state == "COMPLETED" and row.max_memory == result["max_memory"]
    assert "of CPU, peak memory" in jobs.events(dag_id, run_id)[-1].message


def test_run_of_an_owner_without_a_job_account_fails_stage_in_with_the_reason_and_submits_nothing(
    airflow_db: Path, rackflow_db: str, devfleet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run made without the job API (here dag.test(), user dag_test) for an unmapped owner."""
    import json

    from rackflow_devfleet.fleet import JOB_ACCOUNTS

    monkeypatch.setenv("AIRFLOW__RACKFLOW__JOB_ACCOUNTS", json.dumps(JOB_ACCOUNTS))  # no dag_test
    dag = _job_dag()
    run = dag.test(run_conf={"job": {"executable": "/bin/true"}})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["submit"] == "failed" and states["finish"] == "failed", states
    job = jobs.get_job(dag.dag_id, run.run_id)
    assert job is not None and job.state == "FAILED" and job.scheduler_job_id is None
    assert "no job account for Airflow user 'dag_test'" in (job.message or "")
    assert job.workdir is None  # nothing was made on the cluster side either


def test_world_writable_jobs_directory_is_refused_before_anything_is_staged(
    airflow_db: Path, rackflow_db: str, devfleet: Any, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = shared_tmp / "open"
    base.mkdir()
    base.chmod(0o777)
    monkeypatch.setenv("AIRFLOW__RACKFLOW__JOBS_DIRECTORY", str(base))
    dag = _job_dag()
    run = dag.test(run_conf={"job": {"executable": "/bin/true"}})
    job = jobs.get_job(dag.dag_id, run.run_id)
    assert job is not None and job.state == "FAILED" and job.scheduler_job_id is None
    assert "group- or world-writable" in (job.message or ""), job.message
    assert list(base.iterdir()) == []
