"""S3JobStatusSensor: wait until jobs in an intake bucket say ``FILE_UPLOAD``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from rackflow import settings
from rackflow.core.s3_protocol import StatusCache
from rackflow.triggers.s3_job_status import S3JobStatusTrigger


class S3JobStatusSensor(BaseSensorOperator):
    """
    Wait for jobs whose ``<prefix>/aws-job-stat.txt`` says ``FILE_UPLOAD`` in an intake bucket.

    Each poll lists the bucket with the amazon provider's S3 hook (paginated) and reads only the status
    objects that are new or changed since the previous poll. Returns (XCom) the ready jobs as
    ``[{"prefix": "job0001", "etag": "\\"...\\""}, ...]``; the ETag is what a claim must match.

    :param bucket_name: the intake bucket. (templated)
    :param aws_conn_id: Airflow AWS connection (``endpoint_url`` in extra for non-AWS S3). (templated)
    :param max_jobs: return at most this many jobs per run (sorted by prefix); None returns all.
    :param deferrable: wait in the triggerer instead of a worker slot. Default from
        ``[operators] default_deferrable``.
    :param poke_interval: seconds between polls; default ``[rackflow] s3_poll_interval``.
    :param announced_only: in a run started by
        :class:`~rackflow.triggers.s3_job_status.S3JobsReadyEventTrigger` asset events, take only the
        jobs those events announced (so runs started one after another by a burst of uploads do not
        all chase the same jobs); a run without such events (manual, ``dag.test()``) takes every ready job.
    """

    template_fields: Sequence[str] = ("bucket_name", "aws_conn_id")
    ui_color = "#f3e0c4"

    def __init__(
        self,
        *,
        bucket_name: str,
        aws_conn_id: str = "aws_default",
        max_jobs: int | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float | None = None,
        announced_only: bool = False,
        **kwargs: Any,
    ) -> None:
        if poke_interval is None:
            poke_interval = settings.poll_interval("s3", 5.0)
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.bucket_name = bucket_name
        self.aws_conn_id = aws_conn_id
        self.max_jobs = max_jobs
        self.deferrable = deferrable
        self.announced_only = announced_only
        self._cache = StatusCache()

    def poke(self, context: Any) -> PokeReturnValue | bool:
        from rackflow.hooks.s3_jobs import S3JobsHook

        hook = S3JobsHook(self.aws_conn_id, bucket_name=self.bucket_name)
        result = hook.poll(self._cache)
        for job, problem in {**result.invalid, **result.rejected}.items():
            self.log.warning("s3://%s: ignoring %s: %s", self.bucket_name, job, problem)
        self.log.info(
            "s3://%s: %d ready job(s) (%d listing page(s), %d status GET(s))",
            self.bucket_name,
            len(result.ready),
            result.list_requests,
            result.get_requests,
        )
        ready = result.ready
        announced = announced_jobs(context) if self.announced_only else None
        if announced is not None:
            ready = [j for j in ready if j.prefix in announced]
            self.log.info(
                "this run was started for %s; %d of them still ready", sorted(announced), len(ready)
            )
        if not ready:
            return False
        jobs = ready[: self.max_jobs] if self.max_jobs else ready
        return PokeReturnValue(is_done=True, xcom_value=[j.to_dict() for j in jobs])

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One synchronous poll first: jobs already waiting start without a trip through the triggerer.
        done = self.poke(context)
        if isinstance(done, PokeReturnValue):
            return done.xcom_value
        self.defer(
            trigger=S3JobStatusTrigger(
                bucket_name=self.bucket_name,
                aws_conn_id=self.aws_conn_id,
                poll_interval=self.poke_interval,
                timeout=self.timeout,
                max_jobs=self.max_jobs,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        if event and event.get("status") == "ready":
            return event["jobs"]
        message = f"no job in s3://{self.bucket_name} said FILE_UPLOAD within {self.timeout} s"
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)


def announced_jobs(context: Any) -> set[str] | None:
    """Prefixes announced by the S3 intake's asset events that started this run; None without any."""
    ready = announced_ready_jobs(context)
    return None if ready is None else {j["prefix"] for j in ready}


def announced_ready_jobs(context: Any) -> list[dict[str, str]] | None:
    """The jobs (``prefix``, ``etag``: the ``FILE_UPLOAD`` the watcher read) announced by the S3
    intake's asset events that started this run, by prefix (the latest ETag of a prefix announced
    twice); None for a run without such events (manual, ``dag.test()``)."""
    events = context.get("triggering_asset_events") or {}
    announced: dict[str, str] | None = None
    for asset_events in events.values():
        for event in asset_events:
            jobs = ((event.extra or {}).get("payload") or {}).get("jobs")
            if not isinstance(jobs, list):
                continue
            announced = announced if announced is not None else {}
            for job in jobs:
                if isinstance(job, dict) and isinstance(job.get("prefix"), str):
                    announced[job["prefix"]] = str(job.get("etag", ""))
    if announced is None:
        return None
    return [{"prefix": p, "etag": e} for p, e in sorted(announced.items())]
