"""Issue 7, acceptance 4 on a real ``airflow standalone`` (scheduler, triggerer, LocalExecutor): two intake
DAG runs at once over 20 ready jobs give exactly 20 Slurm jobs.

Both runs are created through the REST API while the DAG is paused and start together on unpausing. What
is checked is what an operator could check from outside: the status objects in SeaweedFS, Slurm's job
list, and Airflow's REST API (run states; the mapped per-job task instances of every run, their states
and the job each one was given). Nothing depends on how a run finds the ready jobs or what its tasks
are called: the per-job task is the one task right after the DAG's root (today the root ``accept``
claims, stages in and submits the run's jobs in one task, and ``wait`` is mapped over the jobs it
claimed, so a job appears in exactly the runs that claimed it; a claim lost to another run leaves no
task instance), and the job of each mapped instance comes from its rendered arguments.

Unpausing also starts the DAG's asset watcher, whose runs see whatever is still ``FILE_UPLOAD`` when
they look; so "claimed once" is checked over every run of the DAG that could have seen the jobs, and the
two runs created here must both succeed. The jobs both runs saw ready (the
overlap, printed) are the ones whose single claim was decided by SeaweedFS's conditional write.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from rackflow.operators.s3_intake import scheduler_job_name
from tests.dag_factories.s3_intake_support import read_status, upload_job

DAG_ID = "s3_intake_race"
JOBS = 20
TRIVIAL_SCRIPT = b"#!/bin/bash\ntrue\n"
ENDED = {"success", "failed"}


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(1)


def _ok(resp: Any) -> Any:
    assert resp.status_code == 200, f"{resp.request.method} {resp.url}: {resp.text}"
    return resp.json()


def _get_all(api: Any, url: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every entry of a paginated v2 collection."""
    items: list[dict[str, Any]] = []
    while True:
        page = _ok(api.get(url, params={**params, "limit": 100, "offset": len(items)}, timeout=30))
        items.extend(page[key])
        if not page[key] or len(items) >= page["total_entries"]:
            return items


def _set_paused(api: Any, url: str, paused: bool) -> None:
    _ok(api.patch(f"{url}/api/v2/dags/{DAG_ID}", json={"is_paused": paused}, timeout=30))


def _wait_parsed(api: Any, url: str) -> None:
    """Parsed by the dag-processor (not unpaused: a scheduled run must not start before the jobs exist)."""
    _wait_until(
        lambda: api.get(f"{url}/api/v2/dags/{DAG_ID}", timeout=30).status_code == 200,
        120,
        f"{DAG_ID} parsed",
    )


def _claim_task_id(api: Any, url: str) -> str:
    """The task mapped over the ready jobs: the one task right after the DAG's root task(s)."""
    tasks = _ok(api.get(f"{url}/api/v2/dags/{DAG_ID}/tasks", timeout=30))["tasks"]
    downstream = {t["task_id"]: set(t["downstream_task_ids"] or ()) for t in tasks}
    has_upstream = set().union(*downstream.values())
    first = set().union(*(d for t, d in downstream.items() if t not in has_upstream))
    assert len(first) == 1, f"one task after the root expected: {downstream}"
    return str(first.pop())


def _job_prefix(rendered: Any) -> str | None:
    """The ``prefix`` of the job dict among a task instance's rendered fields."""
    if isinstance(rendered, dict):
        if isinstance(rendered.get("prefix"), str):
            return str(rendered["prefix"])
        rendered = list(rendered.values())
    if isinstance(rendered, list | tuple):
        for value in rendered:
            found = _job_prefix(value)
            if found is not None:
                return found
    return None


def _claims(api: Any, url: str, run_id: str, claim_task: str) -> list[tuple[str, str]]:
    """``(prefix, state)`` of every expanded claim of a run (none when its upstream found nothing)."""
    tis = _get_all(
        api,
        f"{url}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
        "task_instances",
        task_id=claim_task,
    )
    out = []
    for ti in tis:
        if ti["map_index"] < 0:  # not expanded: the upstream produced no jobs (skipped)
            assert ti["state"] == "skipped", ti
            continue
        prefix = _job_prefix(ti["rendered_fields"])
        assert prefix is not None, f"no job prefix in the rendered fields of {ti}"
        out.append((prefix, ti["state"]))
    return out


def _squeue(devfleet: Any) -> dict[str, str]:
    """``{job id: job name}`` of every job Slurm still lists (MinJobAge keeps ended ones)."""
    lines = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i %j"],
        env={**os.environ, **devfleet.slurm.env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    jobs = [line.split() for line in lines if line.strip()]
    return {job_id: name for job_id, name in jobs}


@pytest.mark.timeout(1800)
def test_two_dag_runs_at_once_over_20_ready_jobs_make_exactly_20_slurm_jobs(
    airflow_stack, devfleet, intake_buckets
):
    started = time.monotonic()
    client = devfleet.s3.client()
    bucket = intake_buckets["race"]
    url = airflow_stack.url
    api = airflow_stack.session("admin")
    _wait_parsed(api, url)
    _set_paused(api, url, True)
    claim_task = _claim_task_id(api, url)

    tag = uuid.uuid4().hex[:5]
    prefixes = [f"q{tag}{i:02d}" for i in range(JOBS)]
    for prefix in prefixes:
        upload_job(client, bucket, prefix, script=TRIVIAL_SCRIPT, files={})
    runs = [
        _ok(api.post(f"{url}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None}, timeout=30))[
            "dag_run_id"
        ]
        for _ in range(2)
    ]
    assert len(set(runs)) == 2, runs

    statuses: dict[str, str] = {}
    slurm: dict[str, str] = {}  # every job Slurm listed while the runs went on: {id: name}
    all_claimed_at: list[datetime] = []

    def all_completed() -> bool:
        slurm.update(_squeue(devfleet))
        statuses.update({p: read_status(client, bucket, p).split("\n")[0] for p in prefixes})
        if not all_claimed_at and "FILE_UPLOAD" not in statuses.values():
            all_claimed_at.append(datetime.now(UTC))
        ended_badly = {p: s for p, s in statuses.items() if s in {"FAILED", "CANCELED"}}
        assert not ended_badly, f"jobs ended badly: {ended_badly} (see {airflow_stack.log})"
        return set(statuses.values()) == {"COMPLETED"}

    def runs_to_settle() -> dict[str, str]:
        """``{run id: state}`` of the two runs and of every run with a task that started before the last
        job left FILE_UPLOAD (only such a run can have seen a job ready: anything that started later
        found none), plus every run that has ended anyway (checked too, at no cost).

        Not "every run created before then": on a loaded host scheduled runs can queue up behind each
        other for minutes (seen with a schedule-driven DAG whose one-at-a-time sensor outlasted its
        interval), and waiting for those proves nothing.
        """
        listed = _get_all(api, f"{url}/api/v2/dags/{DAG_ID}/dagRuns", "dag_runs")
        started_early = {
            ti["dag_run_id"]
            for ti in _get_all(
                api,
                f"{url}/api/v2/dags/{DAG_ID}/dagRuns/~/taskInstances",
                "task_instances",
                start_date_lte=all_claimed_at[0].isoformat(),
            )
        }
        return {
            r["dag_run_id"]: r["state"]
            for r in listed
            if r["dag_run_id"] in runs or r["dag_run_id"] in started_early or r["state"] in ENDED
        }

    _set_paused(api, url, False)
    try:
        # Generous: on a loaded two-CPU host with parallelism 4 each task takes seconds, and every run
        # that saw a job ready runs a claiming task for it.
        _wait_until(all_completed, 900, f"all 20 jobs COMPLETED (last seen {statuses}; {airflow_stack.log})")
        _wait_until(
            lambda: set(runs_to_settle().values()) <= ENDED,
            300,
            f"every run of {DAG_ID} that could have seen the jobs ended ({airflow_stack.log})",
        )
        states = runs_to_settle()
    finally:
        _set_paused(api, url, True)

    seen: dict[str, set[str]] = {}
    claimed_by: dict[str, list[str]] = {p: [] for p in prefixes}
    lost_by: dict[str, list[str]] = {p: [] for p in prefixes}
    for run_id in states:
        ours = [(p, s) for p, s in _claims(api, url, run_id, claim_task) if p in claimed_by]
        seen[run_id] = {p for p, _ in ours}
        for prefix, state in ours:
            assert state in {"success", "skipped"}, f"{run_id} {claim_task}[{prefix}] is {state}"
            (claimed_by if state == "success" else lost_by)[prefix].append(run_id)

    run_a, run_b = runs
    overlap = seen[run_a] & seen[run_b]
    contested = [p for p in prefixes if len(claimed_by[p]) + len(lost_by[p]) > 1]
    print(
        f"\nrace intake on {url}, {time.monotonic() - started:.0f}s: "
        f"overlap (jobs both created runs saw ready): {len(overlap)}/{JOBS}; "
        f"jobs seen ready by more than one run: {len(contested)}/{JOBS}"
    )
    for run_id, state in states.items():
        if run_id not in runs and not seen[run_id]:
            continue
        won = sorted(p for p, by in claimed_by.items() if run_id in by)
        print(
            f"  {run_id}: {state}, saw {len(seen[run_id])} ready, claimed {len(won)}, "
            f"lost {len(seen[run_id]) - len(won)}{' (created here)' if run_id in runs else ''}"
        )
    print(f"  {sum(1 for r in states if r not in runs and not seen[r])} other ended run(s) saw none")

    # Both runs ran to their end; neither failed (a lost claim is a skip, not a failure).
    assert states[run_a] == "success" and states[run_b] == "success", states
    # Each job was claimed by exactly one run of the DAG; every other run that saw it ready lost the claim
    # (its claiming task was skipped, never failed).
    assert {p: len(by) for p, by in claimed_by.items()} == dict.fromkeys(prefixes, 1), claimed_by
    # Exactly one Slurm job per job prefix, named for the run that claimed it, and named in its status.
    ours = {job_id: name for job_id, name in slurm.items() if name.startswith(f"rf_s3_q{tag}")}
    assert len(ours) == JOBS, ours
    for prefix in prefixes:
        mine = [(job_id, name) for job_id, name in ours.items() if name.startswith(f"rf_s3_{prefix}_")]
        assert len(mine) == 1, (prefix, ours)
        job_id, name = mine[0]
        assert name == scheduler_job_name(bucket, prefix, claimed_by[prefix][0]), (prefix, name, claimed_by)
        status = read_status(client, bucket, prefix).splitlines()
        assert status[:2] == ["COMPLETED", job_id], (prefix, status)
