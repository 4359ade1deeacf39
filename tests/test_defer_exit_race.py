"""Issue 14 item 2, deterministically: Airflow 3.3's defer-exit race (apache/airflow#72716, #71580)
provoked on demand, and rackflow's jobs surviving it.

The race: a task defers, its worker process exits and the executor will report ``success`` for that try;
the trigger fires and the task resumes on a worker with the same try number; the scheduler then drains
the stale ``success`` and, the task instance being ``queued`` or ``running``, fails the resumed try
("state mismatch", "killed externally"). A real executor is late with that event only under load (a
burst of task starts on a busy scheduler), which no real server does on demand: the one mock here is
:class:`tests.slow_executor.DeferExitDelayingExecutor`, a LocalExecutor that holds a deferred try's exit
event back until the task is resumed on a worker or has ended (``HOLD_S`` seconds at most). Everything
else is real: Postgres, a separate api-server, scheduler (with that executor), dag-processor and
triggerer, the devfleet's Slurm and SeaweedFS.

* The control -- a task that defers on a trigger which fires at once and resumes on a worker
  (``method_name``) -- must fail under that executor, with the scheduler's "state mismatch": this is
  what shows the fault bites and what lets this module fail.
* A job-API job (``/bin/true``): its ``submit`` defers and its trigger ends the task itself
  (end-from-trigger): nothing resumes on a worker, the stale event is released on a finished task and
  does nothing. One Slurm job, COMPLETED, ``submit`` and ``finish`` succeed at their first try.
* An S3 intake job: ``wait`` starts in the triggerer (``start_from_trigger``), so it has no worker try
  that deferred; it completes once, one Slurm job, ``accept`` and ``wait`` at their first try.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rackflow_devfleet.postgres import Postgres
from rackflow_devfleet.servers import free_port
from tests.airflow_topology import Topology, start_topology, topology_env, wait_until, write_intake_file
from tests.conftest import REPO
from tests.dag_factories.s3_intake_support import read_status, slurm_jobs_named, upload_job
from tests.plugins.jobs_support import JOBS, job_finished, wait_for_job

pytestmark = pytest.mark.slow

CONTROL_DAG = "defer_exit_race_control"
INTAKE = "norace"
INTAKE_DAG = f"s3_intake_{INTAKE}"
BUCKET = "rf-intake-norace"
HOLD_S = 120
# The control's resumed try sleeps this long: it is still on its worker when the scheduler fails it.
RESUME_SLEEP_S = 20
CONTROL_DAG_FILE = f'''
"""A task that defers on a trigger firing at once and resumes on a worker (tests/test_defer_exit_race.py)."""
import time
from datetime import datetime

from airflow.sdk import DAG, BaseOperator
from airflow.triggers.testing import SuccessTrigger


class DeferOnceThenResume(BaseOperator):
    def execute(self, context):
        self.defer(trigger=SuccessTrigger(), method_name="resume")

    def resume(self, context, event=None):
        time.sleep({RESUME_SLEEP_S})
        return "resumed"


with DAG("{CONTROL_DAG}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    DeferOnceThenResume(task_id="defer_once", retries=0)
'''


@pytest.fixture(scope="module")
def race_stack(
    postgres: Postgres, devfleet: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    """api-server, scheduler with :class:`DeferExitDelayingExecutor`, dag-processor and triggerer; a dags
    folder with the control DAG, the job DAG and one S3 intake DAG (bucket ``BUCKET``)."""
    home = tmp_path_factory.mktemp("race-airflow-home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "defer_exit_race_control.py").write_text(CONTROL_DAG_FILE)
    for name in ("rackflow_job.py", "rackflow_s3_intake.py"):
        shutil.copy(REPO / "dags" / name, dags / name)
    intake_file, job_base = write_intake_file(
        home, INTAKE, BUCKET, scheduler_poll_interval=0.5, prefix="rackflow-race-aws-job-"
    )
    client = devfleet.s3.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)

    port = free_port()
    env = topology_env(
        home,
        postgres,
        "race",
        port,
        {
            "AIRFLOW__CORE__EXECUTOR": "tests.slow_executor.DeferExitDelayingExecutor",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "RACKFLOW_TEST_DEFER_EXIT_HOLD_S": str(HOLD_S),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__RACKFLOW__S3_INTAKE_FILE": str(intake_file),
        },
    )
    topology = start_topology(home, env, port)
    try:
        for component in ("scheduler", "dag-processor", "triggerer"):
            topology.start(component, [component])
        for dag_id in (CONTROL_DAG, "rackflow_job", INTAKE_DAG):
            topology.wait_for_dag(dag_id)
        yield topology
    finally:
        topology.stop()
        shutil.rmtree(job_base, ignore_errors=True)


def _tis(stack: Topology, dag_id: str, run_id: str | None = None) -> list[tuple[str, int, str, int]]:
    """``(task_id, map_index, state, try_number)`` of a DAG's task instances (of one run if given)."""
    query = "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = :d"
    params: dict[str, Any] = {"d": dag_id}
    if run_id is not None:
        query += " AND run_id = :r"
        params["r"] = run_id
    return sorted((r[0], r[1], r[2], r[3]) for r in stack.sql(query, **params))


def _mismatches(stack: Topology, dag_id: str) -> list[str]:
    """The scheduler's "state mismatch" audit entries (a stale executor event failing a task) of a DAG."""
    rows = stack.sql("SELECT extra FROM log WHERE event = 'state mismatch' AND dag_id = :d", d=dag_id)
    return [str(r[0]) for r in rows]


def _executor_lines(stack: Topology, what: str, dag_id: str, run_id: str | None = None) -> list[str]:
    """The slowed executor's ``defer-exit event <what>`` lines about a DAG (one run if given)."""
    key = re.escape(f"dag_id='{dag_id}'") + (".*" + re.escape(f"run_id='{run_id}'") if run_id else "")
    log = (stack.logs / "scheduler.log").read_text(errors="replace")
    return [line for line in log.splitlines() if f"defer-exit event {what}" in line and re.search(key, line)]


def test_control_task_resumed_on_a_worker_is_failed_by_the_held_defer_exit_event(
    race_stack: Topology,
) -> None:
    admin = race_stack.session("admin")
    resp = admin.post(
        f"{race_stack.url}/api/v2/dags/{CONTROL_DAG}/dagRuns", json={"logical_date": None}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]

    def ended() -> str | None:
        state = admin.get(f"{race_stack.url}/api/v2/dags/{CONTROL_DAG}/dagRuns/{run_id}", timeout=60).json()
        return state["state"] if state["state"] in ("success", "failed") else None

    state = wait_until(ended, 180, f"control run {run_id} ended ({race_stack.logs}/scheduler.log)")
    released = _executor_lines(race_stack, "released", CONTROL_DAG, run_id)
    print(f"\ncontrol {run_id}: {state}; {_tis(race_stack, CONTROL_DAG, run_id)}; executor: {released}")
    # The fault bit: the exit event of the deferring try was handed over once the resumed try was on a
    # worker, and the scheduler failed that try as "killed externally".
    assert any("resumed try" in line for line in released), (released, race_stack.log_tail("scheduler"))
    assert state == "failed"
    assert _tis(race_stack, CONTROL_DAG, run_id) == [("defer_once", -1, "failed", 1)]
    mismatches = _mismatches(race_stack, CONTROL_DAG)
    assert any(
        re.search(
            r"finished with state success, but the task instance's state attribute is (queued|running)", m
        )
        for m in mismatches
    ), mismatches


def test_job_api_job_ends_from_its_trigger_while_its_defer_exit_event_is_held(
    race_stack: Topology, devfleet: Any
) -> None:
    from rackflow.hooks.scheduler import BatchSchedulerHook

    alice = race_stack.session("alice")
    resp = alice.post(f"{race_stack.url}{JOBS}", json={"executable": "/bin/true"}, timeout=60)
    assert resp.status_code == 201, resp.text
    job_id = str(resp.json()["job_id"])
    final = wait_for_job(race_stack, alice, job_id, job_finished, timeout=240)
    assert final["state"] == "COMPLETED", (final["message"], [e["message"] for e in final["events"]])

    # submit's exit event was held; the trigger ended submit while it was (no try resumed on a
    # worker meanwhile: that would have released it on a running task); handed over on the finished
    # task instance, it changed nothing.
    wait_until(
        lambda: _executor_lines(race_stack, "released", "rackflow_job", job_id),
        60,
        f"submit's held exit event of {job_id} released",
    )
    held = _executor_lines(race_stack, "held", "rackflow_job", job_id)
    released = _executor_lines(race_stack, "released", "rackflow_job", job_id)
    print(f"\njob {job_id}: held {held}; released {released}")
    assert len(held) == 1 and "task_id='submit'" in held[0], held
    assert len(released) == 1 and "task ended while held" in released[0], released
    assert "task instance now success " in released[0], released
    assert _mismatches(race_stack, "rackflow_job") == []
    assert _tis(race_stack, "rackflow_job", job_id) == [
        ("finish", -1, "success", 1),
        ("submit", -1, "success", 1),
    ]

    slurm_id = final["properties"]["scheduler_job_id"]
    name = final["properties"]["workdir"].rsplit("/", 1)[-1]
    assert BatchSchedulerHook().find_by_name(name) == [slurm_id]  # submitted once
    assert not any("lost track" in e["message"] for e in final["events"])


def test_s3_intake_job_completes_once_under_the_slowed_executor(race_stack: Topology, devfleet: Any) -> None:
    client = devfleet.s3.client()
    prefix = f"r{uuid.uuid4().hex[:8]}"
    upload_job(client, BUCKET, prefix)

    def final() -> str | None:
        status = read_status(client, BUCKET, prefix).split("\n")[0]
        return status if status in ("COMPLETED", "FAILED", "CANCELED") else None

    state = wait_until(final, 240, f"S3 job {prefix} final ({race_stack.logs}/scheduler.log)")
    status = read_status(client, BUCKET, prefix).splitlines()
    assert state == "COMPLETED", status
    assert client.get_object(Bucket=BUCKET, Key=f"{prefix}/out.txt")["Body"].read().startswith(b"hello")
    names = slurm_jobs_named(devfleet, f"rf_s3_{prefix}_")
    assert len(names) == 1, names  # one Slurm job

    # Every task of the intake succeeded at its first try; the one job's wait too.
    def settled() -> list[tuple[str, int, str, int]] | None:
        tis = _tis(race_stack, INTAKE_DAG)
        return tis if all(s in ("success", "skipped") for _, _, s, _ in tis) else None

    tis = wait_until(settled, 60, f"every task of {INTAKE_DAG} ended well")
    print(f"\nS3 job {prefix}: {status[:2]}; {tis}; held: {_executor_lines(race_stack, 'held', INTAKE_DAG)}")
    assert all(t == 1 for _, _, _, t in tis), tis
    waits = [ti for ti in tis if ti[0] == "wait" and ti[1] >= 0]
    assert waits == [("wait", 0, "success", 1)], tis
    assert _mismatches(race_stack, INTAKE_DAG) == []
    # start_from_trigger: wait never had a worker try that deferred, so no exit event of it was held.
    assert not any("task_id='wait'" in line for line in _executor_lines(race_stack, "held", INTAKE_DAG)), tis
