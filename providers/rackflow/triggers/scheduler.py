"""Deferrable wait for batch scheduler jobs: N waiting jobs on one cluster cost ONE status query per interval.

Every :class:`BatchSchedulerJobTrigger` in a triggerer process subscribes its job to the
:class:`ClusterPoller` of its cluster (scheduler kind + SSH connection + environment). The poller
runs one status command for all subscribed jobs each interval and hands each trigger its job's
status; it also asks the rackflow database, in one query, which of its jobs a user asked to
terminate, and cancels those (once: the cancel is claimed in the database first).

A front door whose jobs have more to follow than the rackflow record (the S3 intake's status object)
passes a :class:`JobFollower`: it is told every intermediate state change and a kill, in the triggerer,
so the waiting task resumes only once, when the job has ended.

With ``end_from_trigger`` the trigger also completes the job in the triggerer (final state, exit code
and usage from the scheduler's accounting, into the job record: :func:`record_job_end`) and ends its
task itself (Airflow's ``TaskSuccessEvent``/``TaskFailedEvent``/``TaskSkippedEvent``): the task never
resumes on a worker, so its wait costs no second task start and no resumed try can lose Airflow's
defer-exit race (apache/airflow#72716: a stale executor event failing the resumed try).

Airflow's triggerer calls ``on_kill`` for every trigger it no longer runs: a user's mark-failed, a
failed run, but also a cleared task and a trigger moved to another triggerer. The trigger asks Airflow
for its task's and run's state first and cancels the scheduler job only when the task or the run has
ended (or a termination was requested); a cleared task's next try re-attaches to the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import (
    BaseTrigger,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)

from rackflow.core.schedulers import JobDetail, JobState, JobStatus
from rackflow.hooks.scheduler import BatchSchedulerHook, JobFollower, cluster_key

log = logging.getLogger(__name__)

JobKey = tuple[str, str]  # (dag_id, run_id) of the job's DAG run


@dataclass(eq=False)
class _Subscription:
    job_id: str
    job_key: JobKey | None
    interval: float
    queue: asyncio.Queue[JobStatus | BaseException] = field(default_factory=asyncio.Queue)


class ClusterPoller:
    """One poll loop per cluster and event loop; started by the first subscriber, ends with the last."""

    _pollers: dict[tuple[int, str], ClusterPoller] = {}

    def __init__(self, hook: BatchSchedulerHook, loop_id: int) -> None:
        self.hook = hook
        self.key = (loop_id, hook.cluster_key)
        self.subscriptions: set[_Subscription] = set()
        self.task: asyncio.Task[None] | None = None
        self.polls = 0

    @classmethod
    def for_hook(cls, hook: BatchSchedulerHook) -> ClusterPoller:
        loop_id = id(asyncio.get_running_loop())
        key = (loop_id, hook.cluster_key)
        poller = cls._pollers.get(key)
        if poller is None:
            poller = cls._pollers[key] = cls(hook, loop_id)
        return poller

    def subscribe(self, job_id: str, job_key: JobKey | None, interval: float) -> _Subscription:
        sub = _Subscription(job_id, job_key, interval)
        self.subscriptions.add(sub)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"poll {self.key[1]}")
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        self.subscriptions.discard(sub)
        if not self.subscriptions and self._pollers.get(self.key) is self:
            del self._pollers[self.key]
            if self.task is not None and self.task is not asyncio.current_task():
                self.task.cancel()
            self.hook.close()

    async def _run(self) -> None:
        # The deferring task checked its job just before deferring: the first query waits one interval
        # (and every trigger that starts meanwhile joins it).
        await asyncio.sleep(min((s.interval for s in self.subscriptions), default=0))
        while self.subscriptions:
            subs = list(self.subscriptions)
            try:
                await asyncio.to_thread(self._cancel_requested, subs)
                statuses = await asyncio.to_thread(self.hook.statuses, [s.job_id for s in subs])
                self.polls += 1
                for sub in subs:
                    sub.queue.put_nowait(statuses[sub.job_id])
            except Exception as exc:
                log.warning("status poll of %s failed: %s", self.key[1], exc)
                for sub in subs:
                    sub.queue.put_nowait(exc)
            await asyncio.sleep(min(s.interval for s in subs))

    def _cancel_requested(self, subs: list[_Subscription]) -> None:
        keyed = {s.job_key: s for s in subs if s.job_key is not None}
        if not keyed:
            return
        from rackflow.db import jobs

        for key in jobs.pending_terminations(keyed):
            sub = keyed[key]
            cancel_claimed_job(self.hook, key, sub.job_id, "termination requested")


def cancel_claimed_job(hook: BatchSchedulerHook, key: JobKey, job_id: str, why: str) -> bool:
    """Cancel ``job_id`` if this caller wins the job's cancel claim; record the event. True if it acted."""
    from rackflow.db import jobs

    if not jobs.claim_cancel(*key):
        return False
    row = jobs.get_job(*key)
    known = hook.cancel(job_id, account=row.account if row is not None else None)
    jobs.record_event(
        *key,
        None,
        f"{why}: {'cancel sent to' if known else 'scheduler no longer knows'} "
        f"{hook.adapter.kind} job {job_id}",
        scheduler_job_id=job_id,
    )
    return True


def load_follower(path: str | None, kwargs: dict[str, Any] | None) -> JobFollower | None:
    """The :class:`JobFollower` named ``module.Class``, built with ``kwargs``; None for no follower."""
    if not path:
        return None
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, JobFollower)):
        raise TypeError(f"{path} is not a JobFollower")
    return cls(**(kwargs or {}))


# The ends of a waited-for job as the task sees them (see :func:`record_job_end`).
ENDED_COMPLETED = "completed"
ENDED_FAILED = "failed"
ENDED_TERMINATED = "terminated"


@dataclass(frozen=True)
class JobEnd:
    """A job's end as recorded: ``outcome`` (``completed``, ``failed`` or ``terminated`` through the
    job API), the task's result (``result``, an XCom-able dict) and a one-line ``message``."""

    outcome: str
    result: dict[str, Any]
    message: str


def _seconds(d: Any) -> int | None:
    return None if d is None else int(d.total_seconds())


def _scheduler_time(at: datetime | None) -> datetime | None:
    """A time from the scheduler in UTC; Slurm prints local time without a zone (a naive value)."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.astimezone()  # local time of this host (same as the scheduler's for local/SSH)
    return at.astimezone(UTC)


def usage_text(result: dict[str, Any]) -> str:
    """``"; used 2 s of CPU, peak memory 214.6 MiB, 3 s wall time"`` from a completion result, or ``""``."""
    parts = []
    if result.get("cpu_time") is not None:
        parts.append(f"{result['cpu_time']} s of CPU")
    if result.get("max_memory") is not None:
        parts.append(f"peak memory {result['max_memory'] / (1 << 20):.1f} MiB")
    if result.get("wall_time") is not None:
        parts.append(f"{result['wall_time']} s wall time")
    return "; used " + ", ".join(parts) if parts else ""


@dataclass(frozen=True)
class JobAccounting:
    """A job's observed end completed from the scheduler's accounting: the ``status`` that stands,
    the accounting record (``detail``, None when accounting had none) and the completion ``result``
    (exit code, nodes, ``cpu_time``/``wall_time`` in seconds, ``max_memory`` in bytes)."""

    status: JobStatus
    detail: JobDetail | None
    result: dict[str, Any]

    @property
    def usage_fields(self) -> dict[str, Any]:
        """The job record's usage columns (for :func:`rackflow.db.jobs.record_event`)."""
        return {
            "exit_code": self.result["exit_code"],
            "wall_time_s": self.result["wall_time"],
            "cpu_time_s": self.result["cpu_time"],
            "max_memory": self.result["max_memory"],
            "nodes": ",".join(self.result["nodes"]) or None,
        }


def job_accounting(
    hook: BatchSchedulerHook, job_id: str, status: JobStatus, *, log_: Any = log
) -> JobAccounting:
    """Usage, node list and times of a job whose end was observed (``status``), from the scheduler's
    accounting (best effort). The observed state stands: only an ``UNKNOWN`` one is replaced by
    accounting's final record. Every front door's job end takes its usage from here."""
    detail: JobDetail | None = None
    try:
        detail = hook.final_detail(job_id)
    except Exception as exc:  # accounting is best effort; the observed state is what matters
        log_.warning("No accounting for job %s: %s", job_id, exc)
    if status.native_state == "UNKNOWN" and detail is not None and detail.status.state.is_final:
        status = detail.status  # observed before accounting had the job's record
    exit_code = status.exit_code if status.exit_code is not None else (detail.exit_code if detail else None)
    nodes = status.nodes or (detail.nodes if detail else ())
    result: dict[str, Any] = {
        "scheduler_job_id": job_id,
        "scheduler": hook.adapter.kind,
        "state": status.state.value,
        "native_state": status.native_state,
        "exit_code": exit_code,
        "signal": status.signal,
        "reason": status.reason,
        "nodes": list(nodes),
        "cpu_time": _seconds(detail.cpu_time) if detail else None,
        "wall_time": _seconds(detail.wall_time) if detail else None,
        "max_memory": detail.max_memory if detail else None,
    }
    return JobAccounting(status, detail, result)


def record_job_end(
    hook: BatchSchedulerHook,
    job_id: str,
    status: JobStatus,
    job_key: JobKey | None,
    *,
    log_: Any = log,
) -> JobEnd:
    """Complete a job whose end was observed (``status``): usage, node list and times from the
    scheduler's accounting (:func:`job_accounting`), the end event in the job record when ``job_key``
    is given.

    The one completion step, run by the trigger (``end_from_trigger``) or by the task that resumed.
    """
    accounting = job_accounting(hook, job_id, status, log_=log_)
    status, detail, result = accounting.status, accounting.detail, accounting.result
    kind = hook.adapter.kind
    exit_code = result["exit_code"]
    nodes = tuple(result["nodes"])
    terminated_by = None
    if job_key is not None:
        from rackflow.db import jobs

        terminated_by = jobs.termination_requested(*job_key)
        seen = jobs.states_seen(*job_key)
        start = _scheduler_time(detail.started_at if detail else None)
        if "ACTIVE" not in seen and start is not None:
            # The job ran between two polls: its start is known from the scheduler's record.
            jobs.record_event(
                *job_key,
                "ACTIVE",
                f"{kind} job {job_id} started" + (f" on {','.join(nodes)}" if nodes else ""),
                scheduler_job_id=job_id,
                node=",".join(nodes) or None,
                at=start,
            )
        message = f"{kind} job {job_id} ended {status.native_state}"
        if exit_code is not None:
            message += f", exit code {exit_code}"
        if status.reason:
            message += f" ({status.reason})"
        if terminated_by and status.state == JobState.CANCELED:
            message += f"; terminated at the request of {terminated_by}"
        message += usage_text(result)
        jobs.record_event(
            *job_key,
            status.state.value,
            message,
            scheduler_job_id=job_id,
            node=",".join(nodes) or None,
            at=_scheduler_time(detail.ended_at if detail else None),
            **accounting.usage_fields,
        )
    if status.state == JobState.CANCELED and terminated_by:
        return JobEnd(ENDED_TERMINATED, result, f"job {job_id} canceled at the request of {terminated_by}")
    summary = (
        f"{kind} job {job_id} {status.state.value} ({status.native_state})"
        + (f", exit code {exit_code}" if exit_code is not None else "")
        + (f": {status.reason}" if status.reason else "")
    )
    return JobEnd(ENDED_COMPLETED if status.state == JobState.COMPLETED else ENDED_FAILED, result, summary)


# Task and run states after which a trigger's ``on_kill`` is a real kill (the task will not run again).
_ENDED_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
_ENDED_RUN_STATES = frozenset({"success", "failed"})


class BatchSchedulerJobTrigger(BaseTrigger):
    """Wait until a batch scheduler job ends; fires ``{"status": "done", "job_status": {...}}``.

    :param scheduler_job_id: the scheduler's job id.
    :param scheduler: adapter kind (``slurm``, ``pbspro``, ``lsf``, ``sge``).
    :param ssh_conn_id: SSH connection of the login node; None runs commands on the triggerer host.
    :param scheduler_env: extra environment for scheduler commands.
    :param poll_interval: seconds between status queries (shared by all jobs of the cluster).
    :param dag_id: with ``run_id``, the job record to write state changes to and read termination from.
    :param run_id: the job's DAG run id.
    :param last_state: the PSI/J state already recorded (no event is written for it again); with a job
        record, the record's state when the trigger starts.
    :param max_errors: consecutive failed polls before the trigger gives up with an ``error`` event.
    :param account: Unix account the job runs as; a kill without a job record cancels as this account.
    :param follower: import path of a :class:`JobFollower` told of state changes and a kill.
    :param follower_kwargs: the follower's constructor arguments (JSON values).
    :param end_from_trigger: complete the job here (:func:`record_job_end`) and end the task without
        resuming it: success when the job COMPLETED, skipped when it was terminated through the job
        API, failed otherwise; the task's return value (XCom) is the completion result. Only when the
        trigger loses track of the job (``max_errors`` failed polls) does the task resume, with an
        ``error`` event, to re-attach (see the operators).
    """

    def __init__(
        self,
        *,
        scheduler_job_id: str,
        scheduler: str = "slurm",
        ssh_conn_id: str | None = None,
        scheduler_env: dict[str, str] | None = None,
        poll_interval: float = 5.0,
        dag_id: str | None = None,
        run_id: str | None = None,
        last_state: str | None = "QUEUED",
        max_errors: int = 12,
        account: str | None = None,
        follower: str | None = None,
        follower_kwargs: dict[str, Any] | None = None,
        end_from_trigger: bool = False,
    ) -> None:
        super().__init__()
        self.scheduler_job_id = scheduler_job_id
        self.scheduler = scheduler
        self.ssh_conn_id = ssh_conn_id
        self.scheduler_env = dict(scheduler_env or {})
        self.poll_interval = poll_interval
        self.dag_id = dag_id
        self.run_id = run_id
        self.last_state = last_state
        self.max_errors = max_errors
        self.account = account
        self.follower = follower
        self.follower_kwargs = dict(follower_kwargs or {})
        self.end_from_trigger = end_from_trigger

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "scheduler_job_id": self.scheduler_job_id,
                "scheduler": self.scheduler,
                "ssh_conn_id": self.ssh_conn_id,
                "scheduler_env": self.scheduler_env,
                "poll_interval": self.poll_interval,
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "last_state": self.last_state,
                "max_errors": self.max_errors,
                "account": self.account,
                "follower": self.follower,
                "follower_kwargs": self.follower_kwargs,
                "end_from_trigger": self.end_from_trigger,
            },
        )

    @property
    def job_key(self) -> JobKey | None:
        return (self.dag_id, self.run_id) if self.dag_id and self.run_id else None

    @property
    def cluster_key(self) -> str:
        return cluster_key(self.scheduler, self.ssh_conn_id, self.scheduler_env)

    def _hook(self) -> BatchSchedulerHook:
        return BatchSchedulerHook(
            scheduler=self.scheduler, ssh_conn_id=self.ssh_conn_id, scheduler_env=self.scheduler_env
        )

    def _recorded_state(self) -> None:
        """Start from the job record's state (a re-attached wait writes no event twice)."""
        key = self.job_key
        if key is None:
            return
        from rackflow.db import jobs

        row = jobs.get_job(*key)
        if row is not None and row.state not in jobs.FINAL_STATES:
            self.last_state = row.state

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # (in a thread: a follower's module may import boto3, seconds the event loop must not block)
        follower = await asyncio.to_thread(load_follower, self.follower, self.follower_kwargs)
        await asyncio.to_thread(self._recorded_state)
        poller = ClusterPoller.for_hook(self._hook())
        sub = poller.subscribe(self.scheduler_job_id, self.job_key, self.poll_interval)
        errors = 0
        status: JobStatus | None = None
        lost: str | None = None
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, BaseException):
                    errors += 1
                    if errors >= self.max_errors:
                        lost = f"{errors} status polls failed in a row; last: {item}"
                        break
                    continue
                errors = 0
                status = item
                if status.state.value != self.last_state and not status.state.is_final:
                    await asyncio.to_thread(self._record, status, follower)
                    self.last_state = status.state.value
                if status.state.is_final:
                    break
        finally:
            poller.unsubscribe(sub)
        if self.end_from_trigger and lost is None:
            yield await asyncio.to_thread(self._end_task, status)
            return
        if lost is not None:
            yield TriggerEvent(
                {"status": "error", "scheduler_job_id": self.scheduler_job_id, "message": lost}
            )
            return
        assert status is not None
        yield TriggerEvent(
            {
                "status": "done",
                "scheduler_job_id": self.scheduler_job_id,
                "job_status": status.model_dump(mode="json"),
            }
        )

    def _end_task(self, status: JobStatus | None) -> TriggerEvent:
        """Complete the job and say how its task ends (``end_from_trigger``)."""
        assert status is not None
        hook = self._hook()
        try:
            end = record_job_end(hook, self.scheduler_job_id, status, self.job_key)
        finally:
            hook.close()
        log.info("%s", end.message)
        xcoms: dict[str, Any] = {"return_value": end.result}
        if end.outcome == ENDED_COMPLETED:
            return TaskSuccessEvent(xcoms=xcoms)
        if end.outcome == ENDED_TERMINATED:
            return TaskSkippedEvent(xcoms=xcoms)
        return TaskFailedEvent(xcoms=xcoms)

    def _record(self, status: JobStatus, follower: JobFollower | None = None) -> None:
        """Write an intermediate state to the job record and tell the follower (both best effort for
        the follower: its failure is logged, the wait goes on)."""
        if follower is not None:
            try:
                follower.on_state(self.scheduler_job_id, status)
            except Exception as exc:
                log.warning("follower of job %s failed on %s: %s", self.scheduler_job_id, status.state, exc)
        key = self.job_key
        if key is None:
            return
        from rackflow.db import jobs

        where = f" on {','.join(status.nodes)}" if status.nodes else ""
        why = f" ({status.reason})" if status.reason else ""
        jobs.record_event(
            *key,
            status.state.value,
            f"{self.scheduler} job {self.scheduler_job_id} is {status.native_state}{where}{why}",
            scheduler_job_id=self.scheduler_job_id,
            node=",".join(status.nodes) or None,
            nodes=",".join(status.nodes) or None,
        )

    def _killed_for_good(self) -> bool | None:
        """Whether Airflow ended the task this trigger serves or its run (True), or the task waits on
        (False: cleared, retried, or moved to another triggerer); None when it cannot be told."""
        ti = self.task_instance
        if ti is None:
            return None
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        map_index = getattr(ti, "map_index", -1)
        key = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}_{map_index}"
        states = RuntimeTaskInstance.get_task_states(
            dag_id=ti.dag_id,
            task_ids=[ti.task_id],
            run_ids=[ti.run_id],
            map_index=None if map_index is None or map_index < 0 else map_index,
        )
        task_state = states.get(ti.run_id, {}).get(key)
        run_state = RuntimeTaskInstance.get_dagrun_state(dag_id=ti.dag_id, run_id=ti.run_id)
        return str(task_state) in _ENDED_TASK_STATES or str(run_state) in _ENDED_RUN_STATES

    async def on_kill(self) -> None:
        """The triggerer stopped this trigger on a user's action: cancel the scheduler job if the task
        or its run was ended (mark failed/success, a failed run) or a termination was requested, and
        it still runs. A cleared task (or a trigger moved to another triggerer) cancels nothing: the
        next try re-attaches to the same job."""
        key = self.job_key
        try:
            ended = await asyncio.to_thread(self._killed_for_good)
        except Exception as exc:  # Airflow cannot say: a live job is left alone
            log.warning(
                "on_kill: state of the task waiting for job %s unknown (%s): not cancelling it",
                self.scheduler_job_id,
                exc,
            )
            return
        if ended is False:
            terminated = None
            if key is not None:
                from rackflow.db import jobs

                terminated = await asyncio.to_thread(jobs.termination_requested, *key)
            if not terminated:
                log.info(
                    "on_kill: the task waiting for job %s is not ended (cleared or moved): the job goes on",
                    self.scheduler_job_id,
                )
                return
        hook = self._hook()
        why = "the Airflow task waiting for it was killed"
        try:
            status = (await asyncio.to_thread(hook.statuses, [self.scheduler_job_id]))[self.scheduler_job_id]
            if status.state.is_final:
                log.info("job %s already ended %s: nothing to cancel", self.scheduler_job_id, status.state)
                return
            if key is not None:
                await asyncio.to_thread(cancel_claimed_job, hook, key, self.scheduler_job_id, why)
            else:
                await asyncio.to_thread(hook.cancel, self.scheduler_job_id, self.account)
            follower = await asyncio.to_thread(load_follower, self.follower, self.follower_kwargs)
            if follower is not None:
                await asyncio.to_thread(follower.on_killed, self.scheduler_job_id, why)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(hook.close)


__all__ = [
    "ENDED_COMPLETED",
    "ENDED_FAILED",
    "ENDED_TERMINATED",
    "BatchSchedulerJobTrigger",
    "ClusterPoller",
    "JobAccounting",
    "JobEnd",
    "JobFollower",
    "cancel_claimed_job",
    "job_accounting",
    "load_follower",
    "record_job_end",
    "usage_text",
]
