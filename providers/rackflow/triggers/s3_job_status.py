"""Triggers of the S3 job intake: wait for ready jobs in a bucket, and for a submitted job to end.

They run in the triggerer, so nothing holds a worker slot while a bucket is idle. A submitted job
waits like every batch job, on the cluster's shared poller: :class:`S3JobWaitTrigger` is
:class:`~rackflow.triggers.scheduler.BatchSchedulerJobTrigger` with an
:class:`~rackflow.hooks.s3_jobs.S3StatusFollower`, told its job by the intake's accept task. The S3
calls are blocking clients; they run in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from rackflow.core.s3_protocol import StatusCache

# Imported here, not in run(): importing boto3 and the amazon provider inside run() would block the
# triggerer's event loop for seconds on first use.
from rackflow.hooks.s3_jobs import S3JobsHook, S3StatusFollower
from rackflow.triggers.scheduler import BatchSchedulerJobTrigger


class S3JobStatusTrigger(BaseTrigger):
    """
    Poll an intake bucket until at least one job's status object says ``FILE_UPLOAD``.

    One poll lists the bucket and GETs only status objects that are new or changed since the previous
    poll of this trigger (ETag/LastModified cache). Fires ``{"status": "ready", "jobs": [{"prefix",
    "etag"}, ...]}``, or ``{"status": "timeout"}`` after ``timeout`` seconds without a ready job.

    :param bucket_name: the intake bucket.
    :param aws_conn_id: Airflow AWS connection.
    :param poll_interval: seconds between polls.
    :param timeout: seconds to wait before firing ``timeout``; None waits forever.
    :param max_jobs: fire with at most this many jobs (sorted by prefix); None takes all.
    """

    def __init__(
        self,
        *,
        bucket_name: str,
        aws_conn_id: str,
        poll_interval: float = 5.0,
        timeout: float | None = None,
        max_jobs: int | None = None,
    ) -> None:
        super().__init__()
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_jobs = max_jobs

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "bucket_name": self.bucket_name,
                "aws_conn_id": self.aws_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "max_jobs": self.max_jobs,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = S3JobsHook(self.aws_conn_id, bucket_name=self.bucket_name)
        cache = StatusCache()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        reported: dict[str, str] = {}
        while True:
            result = await asyncio.to_thread(hook.poll, cache)
            reported = _log_problems(self, result, reported)
            if result.ready:
                jobs = result.ready[: self.max_jobs] if self.max_jobs else result.ready
                self.log.info("s3://%s: %d job(s) ready: %s", self.bucket_name, len(jobs), jobs)
                yield TriggerEvent({"status": "ready", "jobs": [j.to_dict() for j in jobs]})
                return
            if deadline is not None and time.monotonic() >= deadline:
                yield TriggerEvent({"status": "timeout", "timeout": self.timeout})
                return
            await asyncio.sleep(self.poll_interval)


class S3JobsReadyEventTrigger(BaseEventTrigger):
    """
    Watch an intake bucket from the triggerer and fire whenever jobs become ready (``FILE_UPLOAD``).

    The event trigger of the intake DAG's :class:`~airflow.sdk.AssetWatcher`: each event makes an asset
    event, which starts a DAG run -- so a run exists only when there is work, and a job is seen within
    one ``poll_interval`` of its upload however long the previous run takes. Runs forever; one poll is a
    paginated listing plus a GET per new or changed status object (ETag cache).

    A prefix rackflow will not run -- a name it refuses, or a status object it cannot parse -- gets
    ``FAILED`` with the reason in its status object (a conditional write on the ETag the poll read; an
    empty object, or one that is not ``FILE_UPLOAD`` under a refused name, is left alone), so the
    uploader learns why instead of waiting.

    A ready job is announced once per ETag. If it is still ``FILE_UPLOAD`` ``refire_after`` seconds later
    (its run crashed before the claim, or took only ``max_jobs`` of many) it is announced again; the
    conditional claim makes a repeated announcement harmless.

    Events: ``{"status": "ready", "jobs": [{"prefix", "etag"}, ...]}`` (the newly ready jobs).

    :param bucket_name: the intake bucket.
    :param aws_conn_id: Airflow AWS connection.
    :param poll_interval: seconds between polls.
    :param refire_after: seconds after which a job still waiting is announced again.
    """

    def __init__(
        self,
        *,
        bucket_name: str,
        aws_conn_id: str,
        poll_interval: float = 1.0,
        refire_after: float = 20.0,
    ) -> None:
        super().__init__()
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id
        self.poll_interval = poll_interval
        self.refire_after = refire_after

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "bucket_name": self.bucket_name,
                "aws_conn_id": self.aws_conn_id,
                "poll_interval": self.poll_interval,
                "refire_after": self.refire_after,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = S3JobsHook(self.aws_conn_id, bucket_name=self.bucket_name)
        cache = StatusCache()
        announced: dict[tuple[str, str], float] = {}  # (prefix, etag) -> when it was last announced
        reported: dict[str, str] = {}
        while True:
            try:
                result = await asyncio.to_thread(hook.poll, cache)
            except Exception as err:  # S3 down for a moment: keep watching, say so once per poll
                self.log.warning("s3://%s: poll failed, retrying: %s", self.bucket_name, err)
                await asyncio.sleep(self.poll_interval)
                continue
            reported = _log_problems(self, result, reported)
            if result.unrunnable:
                # Tell the uploader: FAILED with the reason, conditional on what this poll read.
                try:
                    written = await asyncio.to_thread(hook.refuse, cache, result.unrunnable)
                except Exception as err:
                    self.log.warning("s3://%s: could not write FAILED statuses: %s", self.bucket_name, err)
                    written = {}
                for key, reason in written.items():
                    self.log.warning("s3://%s/%s: FAILED: %s", self.bucket_name, key, reason)
            now = time.monotonic()
            ready = {(j.prefix, j.etag): j for j in result.ready}
            announced = {k: t for k, t in announced.items() if k in ready}  # forget claimed/removed jobs
            due = [
                j for k, j in ready.items() if now - announced.get(k, -self.refire_after) >= self.refire_after
            ]
            if due:
                for job in due:
                    announced[(job.prefix, job.etag)] = now
                self.log.info("s3://%s: %d job(s) ready: %s", self.bucket_name, len(due), due)
                yield TriggerEvent({"status": "ready", "jobs": [j.to_dict() for j in due]})
            await asyncio.sleep(self.poll_interval)


class S3JobWaitTrigger(BatchSchedulerJobTrigger):
    """
    Wait on the cluster's shared poller for an S3 intake job the accept task submitted.

    The shared :class:`~rackflow.triggers.scheduler.BatchSchedulerJobTrigger` (one status query per
    cluster and interval, state changes and termination through the job record, cancel on kill), for
    the job given as ``job``: the accept task's dict for it (``prefix``, ``job_id``, ``job_key``,
    ``run_as``), or that dict as JSON -- which is how the intake's mapped wait task, started from the
    triggerer (``start_from_trigger``), receives it: a template over the accept task's result rendered
    here. Its :class:`~rackflow.hooks.s3_jobs.S3StatusFollower` writes ``RUNNING`` to the status object.

    :param job: the submitted job (a dict or its JSON). (templated)
    :param bucket_name: the intake bucket.
    :param aws_conn_id: Airflow AWS connection.
    :param dag_id: the intake DAG (with the job's key, its job record).
    :param kwargs: the rest of :class:`~rackflow.triggers.scheduler.BatchSchedulerJobTrigger`'s
        arguments (``scheduler``, ``ssh_conn_id``, ``scheduler_env``, ``poll_interval``, ...).
    """

    def __init__(
        self,
        *,
        job: dict[str, Any] | str,
        bucket_name: str,
        aws_conn_id: str,
        dag_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        for derived in ("scheduler_job_id", "run_id", "account", "follower", "follower_kwargs"):
            kwargs.pop(derived, None)
        super().__init__(
            scheduler_job_id="",
            dag_id=dag_id,
            follower=f"{S3StatusFollower.__module__}.{S3StatusFollower.__qualname__}",
            **kwargs,
        )
        self.job = job
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id
        self._take_job()

    def _take_job(self) -> None:
        """Fill in the scheduler job, the record key and the follower from :attr:`job` (once rendered)."""
        job: Any = self.job
        if isinstance(job, str):
            try:
                job = json.loads(job)
            except ValueError:  # not rendered yet (the template itself)
                return
        if not isinstance(job, dict) or not job.get("job_id"):
            return
        self.scheduler_job_id = str(job["job_id"])
        self.run_id = job.get("job_key") or None
        self.account = job.get("run_as") or None
        self.follower_kwargs = {
            "bucket_name": self.bucket_name,
            "aws_conn_id": self.aws_conn_id,
            "prefix": str(job["prefix"]),
        }

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()  # the job's fields too (for reading): rebuilt from job
        kwargs.update(job=self.job, bucket_name=self.bucket_name, aws_conn_id=self.aws_conn_id)
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self._take_job()
        if not self.scheduler_job_id:
            yield TriggerEvent({"status": "error", "message": f"no submitted job given: {self.job!r}"})
            return
        async for event in super().run():
            yield event

    async def on_kill(self) -> None:
        self._take_job()
        if self.scheduler_job_id:
            await super().on_kill()


def _log_problems(trigger: Any, result: Any, reported: dict[str, str]) -> dict[str, str]:
    """Warn once about each unreadable status or refused prefix of a poll; returns what is now reported."""
    problems = {**result.invalid, **result.rejected}
    for job, problem in problems.items():
        if reported.get(job) != problem:
            trigger.log.warning("s3://%s: ignoring %s: %s", trigger.bucket_name, job, problem)
    return problems
