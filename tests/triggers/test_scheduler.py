"""BatchSchedulerJobTrigger on the devfleet's real Slurm: N waiting triggers share one squeue per poll."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from rackflow.core.jobspec import parse_job_description
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow.triggers.scheduler import BatchSchedulerJobTrigger, ClusterPoller
from rackflow_devfleet.fleet import JOB_ACCOUNTS
from rackflow_devfleet.instrument import count_scheduler_commands


def test_serialize_round_trips_to_an_importable_classpath() -> None:
    trigger = BatchSchedulerJobTrigger(
        scheduler_job_id="42",
        ssh_conn_id="login",
        scheduler_env={"SLURM_CONF": "/x"},
        poll_interval=2,
        dag_id="d",
        run_id="r",
    )
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls(**kwargs).serialize() == (classpath, kwargs)


def test_many_waiting_jobs_on_one_cluster_cost_one_status_query_per_interval(
    devfleet: object, shared_tmp: Path
) -> None:
    hook = BatchSchedulerHook(scheduler="slurm")
    tmp_path = shared_tmp
    exits = [0, 0, 3, 0, 1, 0, 0, 2]
    ids = []
    for i, code in enumerate(exits):
        job = parse_job_description({"executable": "/bin/sh", "arguments": ["-c", f"sleep 1; exit {code}"]})
        ids.append(
            hook.submit(
                job,
                job_name=f"rf.trig.{uuid.uuid4().hex[:6]}.{i}",
                comment="t",
                workdir=str(tmp_path / str(i)),
                account=JOB_ACCOUNTS["alice"],
            ).scheduler_job_id
        )
    triggers = [BatchSchedulerJobTrigger(scheduler_job_id=i, poll_interval=0.3) for i in ids]

    async def wait_all() -> tuple[list[dict], int]:
        async def first_event(t: BatchSchedulerJobTrigger) -> dict:
            async for event in t.run():
                return dict(event.payload)
            raise AssertionError("trigger ended without an event")

        task = asyncio.gather(*(first_event(t) for t in triggers))
        await asyncio.sleep(0.05)
        poller = ClusterPoller._pollers[(id(asyncio.get_running_loop()), hook.cluster_key)]
        results = await task
        return results, poller.polls

    with count_scheduler_commands() as commands:
        events, polls = asyncio.run(wait_all())
    squeue_calls = commands[(hook.cluster_key, "squeue")]

    assert [e["job_status"]["exit_code"] for e in events] == exits
    assert [e["job_status"]["state"] for e in events] == ["COMPLETED" if c == 0 else "FAILED" for c in exits]
    # One squeue per poll for all eight jobs (they take several polls: only two run at a time).
    assert polls >= 3
    assert squeue_calls == polls
    assert not ClusterPoller._pollers  # the last trigger to finish stopped the poll loop
