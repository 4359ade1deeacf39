"""Issue 13 acceptance on a real Airflow standalone and Slurm: a job submitted through the job API runs
as its owner's Unix account, sees none of the worker's environment and can read no Airflow secret and
no other account's job directory; a run whose id is crafted to collide with another user's job gets
a scheduler job and a directory of its own.

Everything asserted is the jobs' real output, brought back by their own ``stage_out`` to S3.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from rackflow_devfleet.fleet import JOB_ACCOUNTS
from tests.confinement import PROBE, assert_confined
from tests.plugins.jobs_support import JOBS, job_finished, wait_for_job

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")

RESULTS = "rackflow-results"


def test_job_api_job_runs_as_its_account_without_the_workers_environment_or_secrets(
    airflow_stack: Any, devfleet: Any, rackflow_db: str
) -> None:
    airflow_stack.wait_for_dag("rackflow_job")
    url = airflow_stack.url
    alice, bob = airflow_stack.session("alice"), airflow_stack.session("bob")
    # bob's job keeps a file in its directory while alice's probe runs.
    bob_id = bob.post(
        f"{url}{JOBS}",
        json={"executable": "/bin/sh", "arguments": ["-c", "echo bob-only > secret.txt; sleep 120"]},
        timeout=180,
    ).json()["job_id"]
    bob_job = wait_for_job(airflow_stack, bob, bob_id, lambda j: j["state"] == "ACTIVE", timeout=240)
    bob_dir = bob_job["properties"]["workdir"]
    assert (Path(bob_dir) / "secret.txt").read_text() == "bob-only\n"
    stack_home = airflow_stack.log.parent
    targets = [
        str(stack_home / "airflow.cfg"),
        str(stack_home / "simple_auth_manager_passwords.json.generated"),
        rackflow_db.removeprefix("sqlite:///"),
        bob_dir,
        f"{bob_dir}/secret.txt",
    ]
    assert all(Path(t).exists() for t in targets), targets  # they exist: a refusal is a refusal
    key = f"confinement/{uuid.uuid4().hex}/probe.txt"

    resp = alice.post(
        f"{url}{JOBS}",
        json={
            "executable": "/bin/sh",
            "arguments": ["-c", PROBE, "probe", *targets],
            "stdout_path": "probe.txt",
            "stage_out": [{"source": "probe.txt", "target": f"s3://{RESULTS}/{key}"}],
        },
        timeout=180,
    )
    assert resp.status_code == 201, resp.text
    done = wait_for_job(airflow_stack, alice, resp.json()["job_id"], job_finished, timeout=240)
    assert done["state"] == "COMPLETED", done

    output = devfleet.s3.client().get_object(Bucket=RESULTS, Key=key)["Body"].read().decode()
    assert_confined(output, JOB_ACCOUNTS["alice"], targets)
    assert bob.post(f"{url}{JOBS}/{bob_id}/terminate", json={}, timeout=180).status_code == 202


def test_run_id_crafted_to_collide_gets_its_own_scheduler_job_and_leaves_the_other_directory(
    airflow_stack: Any, devfleet: Any
) -> None:
    """Before issue 13 the scheduler job name was ``rf.<dag_id>.<run_id>`` with unsafe characters made
    ``_``: a run id differing from alice's only by a ``+`` mapped to her job, adopted it, and its
    cleanup deleted her directory. The crafted run is created through Airflow's own /api/v2."""
    from rackflow.hooks.scheduler import BatchSchedulerHook

    airflow_stack.wait_for_dag("rackflow_job")
    url = airflow_stack.url
    alice = airflow_stack.session("alice")
    alice_id = alice.post(
        f"{url}{JOBS}",
        json={"executable": "/bin/sh", "arguments": ["-c", "echo mine > mine.txt; sleep 60"]},
        timeout=180,
    ).json()["job_id"]
    alice_job = wait_for_job(airflow_stack, alice, alice_id, lambda j: j["state"] == "ACTIVE", timeout=240)
    alice_dir, alice_slurm = alice_job["properties"]["workdir"], alice_job["properties"]["scheduler_job_id"]

    crafted = alice_id.replace("__", "_+", 1)  # same name under the old normalisation
    assert crafted != alice_id and crafted.replace("+", "_") == alice_id
    admin = airflow_stack.session("admin")
    resp = admin.post(
        f"{url}/api/v2/dags/rackflow_job/dagRuns",
        json={"dag_run_id": crafted, "logical_date": None, "conf": {"job": {"executable": "/bin/true"}}},
        timeout=180,
    )
    assert resp.status_code == 200, resp.text
    other = wait_for_job(airflow_stack, admin, crafted, job_finished, timeout=240)

    assert other["state"] == "COMPLETED", other
    assert other["owner"] == "admin"
    assert other["properties"]["scheduler_job_id"] not in (None, alice_slurm)
    assert other["properties"]["workdir"] != alice_dir
    assert not Path(other["properties"]["workdir"]).exists()  # its own directory, cleaned up
    assert (Path(alice_dir) / "mine.txt").read_text() == "mine\n"  # alice's is untouched
    hook = BatchSchedulerHook()
    assert hook.statuses([alice_slurm])[alice_slurm].state.value == "ACTIVE"
    assert hook.find_by_name(Path(alice_dir).name) == [alice_slurm]
    assert alice.post(f"{url}{JOBS}/{alice_id}/terminate", json={}, timeout=180).status_code == 202
