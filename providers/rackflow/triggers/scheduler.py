"""Deferrable wait for batch scheduler jobs: N waiting jobs on one cluster cost ONE status query per interval.

Every :class:`LocalSchedulerJobTrigger` in a triggerer process subscribes its job to the
:class:`ClusterPoller` of its cluster (scheduler kind + SSH connection + environment). The poller
runs one status command for all subscribed jobs each interval and hands each trigger its job's
status; it also asks the rackflow database, in one query, which of its jobs a user asked to
terminate, and cancels those (once: the cancel is claimed in the database first).

A front door whose jobs have more to follow than the rackflow record (the S3 intake's status object)
passes a :class:`JobFollower`: it is told every intermediate state change and a kill, in the triggerer,
so the waiting task resumes only once, when the job has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rackflow.core.schedulers import JobStatus
from rackflow.hooks.scheduler import JobFollower, LocalSchedulerHook, cluster_key

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

    def __init__(self, hook: LocalSchedulerHook, loop_id: int) -> None:
        self.hook = hook
        self.key = (loop_id, hook.cluster_key)
        self.subscriptions: set[_Subscription] = set()
        self.task: asyncio.Task[None] | None = None
        self.polls = 0

    @classmethod
    def for_hook(cls, hook: LocalSchedulerHook) -> ClusterPoller:
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


def cancel_claimed_job(hook: LocalSchedulerHook, key: JobKey, job_id: str, why: str) -> bool:
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


class LocalSchedulerJobTrigger(BaseTrigger):
    """Wait until a batch scheduler job ends; fires ``{"status": "done", "job_status": {...}}``.

    :param scheduler_job_id: the scheduler's job id.
    :param scheduler: adapter kind (``slurm``, ``pbspro``, ``lsf``, ``sge``).
    :param ssh_conn_id: SSH connection of the login node; None runs commands on the triggerer host.
    :param env: extra environment for scheduler commands.
    :param poll_interval: seconds between status queries (shared by all jobs of the cluster).
    :param dag_id: with ``run_id``, the job record to write state changes to and read termination from.
    :param run_id: the job's DAG run id.
    :param last_state: the PSI/J state already recorded (no event is written for it again).
    :param max_errors: consecutive failed polls before the trigger gives up with an ``error`` event.
    :param account: Unix account the job runs as; a kill without a job record cancels as this account.
    :param follower: import path of a :class:`JobFollower` told of state changes and a kill.
    :param follower_kwargs: the follower's constructor arguments (JSON values).
    """

    def __init__(
        self,
        *,
        scheduler_job_id: str,
        scheduler: str = "slurm",
        ssh_conn_id: str | None = None,
        env: dict[str, str] | None = None,
        poll_interval: float = 5.0,
        dag_id: str | None = None,
        run_id: str | None = None,
        last_state: str | None = "QUEUED",
        max_errors: int = 12,
        account: str | None = None,
        follower: str | None = None,
        follower_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.scheduler_job_id = scheduler_job_id
        self.scheduler = scheduler
        self.ssh_conn_id = ssh_conn_id
        self.env = dict(env or {})
        self.poll_interval = poll_interval
        self.dag_id = dag_id
        self.run_id = run_id
        self.last_state = last_state
        self.max_errors = max_errors
        self.account = account
        self.follower = follower
        self.follower_kwargs = dict(follower_kwargs or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "scheduler_job_id": self.scheduler_job_id,
                "scheduler": self.scheduler,
                "ssh_conn_id": self.ssh_conn_id,
                "env": self.env,
                "poll_interval": self.poll_interval,
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "last_state": self.last_state,
                "max_errors": self.max_errors,
                "account": self.account,
                "follower": self.follower,
                "follower_kwargs": self.follower_kwargs,
            },
        )

    @property
    def job_key(self) -> JobKey | None:
        return (self.dag_id, self.run_id) if self.dag_id and self.run_id else None

    @property
    def cluster_key(self) -> str:
        return cluster_key(self.scheduler, self.ssh_conn_id, self.env)

    def _hook(self) -> LocalSchedulerHook:
        return LocalSchedulerHook(scheduler=self.scheduler, ssh_conn_id=self.ssh_conn_id, env=self.env)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # (in a thread: a follower's module may import boto3, seconds the event loop must not block)
        follower = await asyncio.to_thread(load_follower, self.follower, self.follower_kwargs)
        poller = ClusterPoller.for_hook(self._hook())
        sub = poller.subscribe(self.scheduler_job_id, self.job_key, self.poll_interval)
        errors = 0
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, BaseException):
                    errors += 1
                    if errors >= self.max_errors:
                        yield TriggerEvent(
                            {
                                "status": "error",
                                "scheduler_job_id": self.scheduler_job_id,
                                "message": f"{errors} status polls failed in a row; last: {item}",
                            }
                        )
                        return
                    continue
                errors = 0
                status = item
                if status.state.value != self.last_state and not status.state.is_final:
                    await asyncio.to_thread(self._record, status, follower)
                    self.last_state = status.state.value
                if status.state.is_final:
                    yield TriggerEvent(
                        {
                            "status": "done",
                            "scheduler_job_id": self.scheduler_job_id,
                            "job_status": status.model_dump(mode="json"),
                        }
                    )
                    return
        finally:
            poller.unsubscribe(sub)

    def _record(self, status: JobStatus, follower: JobFollower | None = None) -> None:
        """Write an intermediate state to the job record and tell the follower (both best effort for
        the follower: its failure is logged, the wait goes on)."""
        if follower is not None:
            try:
                follower.on_state(self.scheduler_job_id, status)
            except Exception as exc:
                log.warning("follower of job %s failed on %s: %s", self.scheduler_job_id, status.state, exc)
        if self.job_key is None:
            return
        from rackflow.db import jobs

        where = f" on {','.join(status.nodes)}" if status.nodes else ""
        why = f" ({status.reason})" if status.reason else ""
        jobs.record_event(
            *self.job_key,
            status.state.value,
            f"{self.scheduler} job {self.scheduler_job_id} is {status.native_state}{where}{why}",
            scheduler_job_id=self.scheduler_job_id,
            node=",".join(status.nodes) or None,
            nodes=",".join(status.nodes) or None,
        )

    async def on_kill(self) -> None:
        """The user killed the deferred task (mark failed/success, clear): cancel the scheduler job,
        unless it has ended already (then there is nothing to cancel and its end stands)."""
        hook = self._hook()
        why = "the Airflow task waiting for it was killed"
        try:
            status = (await asyncio.to_thread(hook.statuses, [self.scheduler_job_id]))[self.scheduler_job_id]
            if status.state.is_final:
                log.info("job %s already ended %s: nothing to cancel", self.scheduler_job_id, status.state)
                return
            if self.job_key is not None:
                await asyncio.to_thread(cancel_claimed_job, hook, self.job_key, self.scheduler_job_id, why)
            else:
                await asyncio.to_thread(hook.cancel, self.scheduler_job_id, self.account)
            follower = await asyncio.to_thread(load_follower, self.follower, self.follower_kwargs)
            if follower is not None:
                await asyncio.to_thread(follower.on_killed, self.scheduler_job_id, why)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(hook.close)


__all__ = ["ClusterPoller", "JobFollower", "LocalSchedulerJobTrigger", "cancel_claimed_job", "load_follower"]
