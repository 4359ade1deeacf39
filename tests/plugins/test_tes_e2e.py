"""GA4GH TES end to end: py-tes 1.1.4, unmodified, against Airflow standalone, Slurm and SeaweedFS S3.

One Airflow stack for the module (it is slow to start on this machine); the tasks are submitted
together and waited for together. py-tes gets long timeouts: the API server stalls for tens of seconds
when it builds its execution-API routes as the first task starts (see test_jobs_e2e).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")

RUNS = "/api/v2/dags/rackflow_job/dagRuns"


def _client(stack: Any, user: str) -> Any:
    import tes

    return tes.HTTPClient(url=f"{stack.url}/rackflow", token=stack.token(user), timeout=180)


def _until(client: Any, task_id: str, states: set[str], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get_task(task_id, view="BASIC")
        if task.state in states:
            return task
        assert time.monotonic() < deadline, f"task {task_id} stuck in {task.state}"
        time.sleep(0.5)


# pytest-timeout counts the session's stack start (minutes on a loaded machine) in the first test.
@pytest.mark.timeout(900)
def test_py_tes_runs_cancels_lists_and_refuses_tasks(airflow_stack: Any, devfleet: Any) -> None:
    import tes

    from rackflow.hooks.scheduler import BatchSchedulerHook
    from tests.core.test_slurm_real import BURN

    airflow_stack.wait_for_dag("rackflow_job")
    alice, bob = _client(airflow_stack, "alice"), _client(airflow_stack, "bob")
    admin = airflow_stack.session("admin")
    s3 = devfleet.s3.client()
    prefix = f"tes/{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket="rackflow-jobs", Key=f"{prefix}/in.txt", Body=b"hello tes\n")

    assert alice.get_service_info().type["artifact"] == "tes"

    # An invalid task (no executors): 400, and no run is recorded.
    before = admin.get(f"{airflow_stack.url}{RUNS}", timeout=180).json()["total_entries"]
    with pytest.raises(requests.HTTPError) as refused:
        alice.create_task(tes.Task(name="invalid", executors=[]))
    assert refused.value.response.status_code == 400
    assert "executors" in refused.value.response.text

    two_steps = alice.create_task(
        tes.Task(
            name="two steps",
            inputs=[tes.Input(url=f"s3://rackflow-jobs/{prefix}/in.txt", path="/data/in.txt")],
            outputs=[tes.Output(url=f"s3://rackflow-results/{prefix}/out.txt", path="/data/out.txt")],
            executors=[
                tes.Executor(
                    image="alpine", command=["sh", "-c", "tr a-z A-Z < data/in.txt > data/up.txt; echo one"]
                ),
                tes.Executor(image="alpine", command=["sh", "-c", "cp data/up.txt data/out.txt; echo two"]),
            ],
            resources=tes.Resources(cpu_cores=1, ram_gb=0.25),
        )
    )
    failing = alice.create_task(
        tes.Task(name="exit 3", executors=[tes.Executor(image="a", command=["sh", "-c", "exit 3"])])
    )
    sleeper = alice.create_task(
        tes.Task(name="sleeper", executors=[tes.Executor(image="a", command=["sleep", "600"])])
    )
    bobs = bob.create_task(tes.Task(name="bob's", executors=[tes.Executor(image="a", command=["true"])]))
    # About 2 s of CPU holding 200 MB (the job API's usage test burns the same).
    burner = alice.create_task(
        tes.Task(
            name="burn", executors=[tes.Executor(image="python", command=["/usr/bin/python3", "-c", BURN])]
        )
    )
    after = admin.get(f"{airflow_stack.url}{RUNS}", timeout=180).json()["total_entries"]
    assert after == before + 5  # the refused task recorded nothing

    # Cancel the sleeper once Slurm runs it: CANCELING, then CANCELED, and its Slurm job is gone.
    running = _until(alice, sleeper, {"RUNNING"})
    slurm_id = running.logs[0].metadata["scheduler_job_id"]
    alice.cancel_task(sleeper)
    assert alice.get_task(sleeper, view="MINIMAL").state in ("CANCELING", "CANCELED")
    assert _until(alice, sleeper, {"CANCELED", "SYSTEM_ERROR", "COMPLETE"}).state == "CANCELED"
    hook = BatchSchedulerHook()
    try:
        assert hook.statuses([slurm_id])[slurm_id].native_state == "CANCELLED"
    finally:
        hook.close()

    done = alice.wait(two_steps, timeout=300)
    assert done.state == "COMPLETE", alice.get_task(two_steps, view="FULL")
    full = alice.get_task(two_steps, view="FULL")
    assert full.state == "COMPLETE" and full.name == "two steps"
    log = full.logs[0]
    assert [(e.exit_code, e.stdout) for e in log.logs] == [(0, "one\n"), (0, "two\n")]
    assert log.start_time is not None and log.end_time is not None
    assert log.metadata["scheduler"] == "slurm" and "wall_time" in log.metadata
    assert any("staged out" in line for line in log.system_logs)
    # The output is read back from the rackflow DB: the job directory is gone by now.
    workdir = admin.get(f"{airflow_stack.url}/rackflow/api/jobs/{two_steps}", timeout=180).json()
    assert not Path(workdir["properties"]["workdir"]).exists()
    out = s3.get_object(Bucket="rackflow-results", Key=f"{prefix}/out.txt")["Body"].read()
    assert out == b"HELLO TES\n"

    # Resource usage from Slurm's accounting (sacct through slurmdbd) in the task log's metadata.
    burnt = alice.wait(burner, timeout=300)
    assert burnt.state == "COMPLETE", alice.get_task(burner, view="FULL")
    usage = alice.get_task(burner, view="BASIC").logs[0].metadata
    assert float(usage["cpu_time"]) >= 1, usage
    assert int(usage["max_memory"]) >= 150 * 10**6, usage
    assert float(usage["wall_time"]) >= 2 and usage["nodes"], usage

    failed = alice.wait(failing, timeout=300)
    assert failed.state == "EXECUTOR_ERROR"
    assert [e.exit_code for e in alice.get_task(failing, view="FULL").logs[0].logs] == [3]

    # list_tasks: alice's own tasks only (bob's is not among them), each one alice's in the job API.
    listed = [t.id for t in alice.list_tasks(view="MINIMAL").tasks]
    assert {two_steps, failing, sleeper, burner} <= set(listed) and bobs not in listed
    for task_id in listed:
        owner = admin.get(f"{airflow_stack.url}/rackflow/api/jobs/{task_id}", timeout=180).json()["owner"]
        assert owner == "alice"
    assert bobs in [t.id for t in bob.list_tasks().tasks]
    with pytest.raises(requests.HTTPError) as hidden:
        bob.get_task(two_steps)
    assert hidden.value.response.status_code == 404
