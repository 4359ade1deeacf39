"""S3 job intake I/O over the amazon provider's S3Hook: poll, claim, status writes, stage-in, stage-out.

The protocol itself (status file bytes, transitions, safe paths, result selection) is pure and lives in
:mod:`rackflow.core.s3_protocol`; this hook only moves bytes. Properties it keeps:

* A poll is a paginated ``ListObjectsV2`` of the bucket plus one GET per status object that is new or
  changed since the last poll (ETag/LastModified cache). A bucket of idle finished jobs costs listing
  pages only. (A delimiter listing cannot carry the ETags of ``<job>/aws-job-stat.txt``, so the poll
  lists flat; :meth:`S3JobsHook.list_job_prefixes` is the delimiter listing for job names alone.)
* Every status write is a conditional PUT (``If-Match`` on the ETag last seen), so two pollers can never
  both claim a job, and nobody overwrites a status object the uploader changed or deleted meanwhile.
* Downloads and uploads are streamed through boto3's managed transfer (chunked, multipart for big
  files); no object or file is read into memory whole. Files are created exclusively, never through a
  symlink, inside a job directory rackflow creates itself -- on this host or on a login node over SFTP
  (:mod:`rackflow.hooks.job_dirs`) -- and every key goes through
  :func:`~rackflow.core.s3_protocol.key_parts`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk import BaseHook
from botocore.exceptions import ClientError

from rackflow.core.s3_protocol import (
    JOB_SCRIPT_NAME,
    MAX_STATUS_BYTES,
    STATUS_FILE_NAME,
    TERMINAL_STATUSES,
    JobStatus,
    JobStatusFile,
    Manifest,
    StatusCache,
    UnsafeKeyError,
    check_transition,
    intake_decision,
    job_of_status_key,
    job_prefixes_from_listing,
    key_parts,
    refusal_reason,
    result_files,
    result_key,
    status_key,
    validate_job_prefix,
)
from rackflow.core.schedulers import JobState
from rackflow.core.schedulers import JobStatus as SchedulerJobStatus
from rackflow.hooks.job_dirs import JobDirectory, as_job_directory
from rackflow.hooks.scheduler import JobFollower

if TYPE_CHECKING:
    from rackflow.hooks.scheduler import BatchSchedulerHook

log = logging.getLogger(__name__)

# Error codes S3 servers answer a conditional write with when the object moved (or vanished) under us.
_CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "NoSuchKey", "404", "ConditionalRequestConflict"})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Statuses only rackflow writes, between its claim and the end: the ones it may end itself.
_OWNED_STATUSES = frozenset({JobStatus.ACCEPTED, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.STAGING_OUT})
# The user metadata (``x-amz-meta-rackflow-claim``) a claim writes with its ACCEPTED status object: the
# claimant's job key. The body stays the protocol's exact bytes; the key lets a retried accept that died
# between its claim and its job record tell its own claim from another poller's.
CLAIM_METADATA = "rackflow-claim"


class StatusConflict(RuntimeError):
    """The status object is not what this writer last saw: another poller claimed it, or the uploader
    changed or deleted it. The writer must stop touching the job."""


@dataclass(frozen=True)
class ReadyJob:
    """A job whose status object read ``FILE_UPLOAD`` at ``etag`` when polled."""

    prefix: str
    etag: str

    def to_dict(self) -> dict[str, str]:
        return {"prefix": self.prefix, "etag": self.etag}


@dataclass(frozen=True)
class Unrunnable:
    """A status object rackflow will not run (refused prefix, unreadable status), read at ``etag``,
    and the reason to write with ``FAILED`` (see :func:`~rackflow.core.s3_protocol.refusal_reason`)."""

    key: str
    etag: str
    reason: str


class _StatusObject(NamedTuple):
    """A status object as one GET read it: the head of its body, ETag, LastModified, user metadata."""

    body: bytes
    etag: str
    last_modified: Any
    metadata: Mapping[str, str]


@dataclass
class PollResult:
    """One poll of a bucket: ready jobs, claimed ones, unreadable status objects, refused prefixes, the
    status objects to mark FAILED for those, request counts."""

    ready: list[ReadyJob] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # jobs whose status reads ACCEPTED (claimed)
    invalid: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    unrunnable: list[Unrunnable] = field(default_factory=list)
    list_requests: int = 0
    get_requests: int = 0


@dataclass(frozen=True)
class ClaimResult:
    """What a claim did: ``won`` with ACCEPTED, ``won`` with FAILED (job refused), or lost (skip)."""

    won: bool
    status: JobStatusFile | None
    etag: str | None
    keys: list[str]
    reason: str = ""


@dataclass
class TransferResult:
    """Keys moved by a stage-in or stage-out, and the ones refused with their reasons."""

    keys: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class S3JobsHook(BaseHook):
    """
    Read and write one S3 intake bucket with the aws-jobmanager job protocol.

    Uses the amazon provider's :class:`~airflow.providers.amazon.aws.hooks.s3.S3Hook` for the
    connection (credentials, ``endpoint_url`` in the connection's extra). Each :meth:`poll` reports the
    listing pages and status GETs it made (the sensor logs them).

    :param aws_conn_id: Airflow connection of type Amazon Web Services.
    :param bucket_name: the intake bucket.
    :param page_size: keys per listing page (S3 caps it at 1,000).
    :param transfer_chunk_mib: part size of multipart transfers; memory held per file is about
        ``transfer_chunk_mib * transfer_concurrency`` whatever the file size.
    :param transfer_concurrency: parallel parts per file transfer.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "rackflow S3 job intake"

    def __init__(
        self,
        aws_conn_id: str = default_conn_name,
        *,
        bucket_name: str,
        page_size: int = 1000,
        transfer_chunk_mib: int = 8,
        transfer_concurrency: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from boto3.s3.transfer import TransferConfig

        chunk = transfer_chunk_mib * 1024 * 1024
        self.transfer_config = TransferConfig(
            multipart_threshold=chunk,
            multipart_chunksize=chunk,
            max_concurrency=transfer_concurrency,
            max_io_queue=transfer_concurrency * 4,
            io_chunksize=256 * 1024,
        )
        # s3transfer's read-ahead bounds (defaults: 10 upload parts, 1,000 download io chunks).
        self.transfer_config.max_in_memory_upload_chunks = transfer_concurrency
        self.transfer_config.max_in_memory_download_chunks = transfer_concurrency * 8
        self.aws_conn_id = aws_conn_id
        self.bucket_name = bucket_name
        self.page_size = page_size

    @cached_property
    def s3_hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def client(self) -> Any:
        return self.s3_hook.get_conn()

    def get_conn(self) -> Any:
        return self.client

    # -- listing ------------------------------------------------------------------------------------

    def iter_pages(self, prefix: str = "", delimiter: str | None = None) -> Iterator[Mapping[str, Any]]:
        """Raw ``ListObjectsV2`` pages of the bucket (continuation tokens followed)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket_name, "Prefix": prefix, "MaxKeys": self.page_size}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            page = self.client.list_objects_v2(**kwargs)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def list_job_prefixes(self) -> list[str]:
        """Job names at the top of the bucket (delimiter listing, paginated); unsafe names are logged."""
        common: list[Mapping[str, Any]] = []
        for page in self.iter_pages(delimiter="/"):
            common.extend(page.get("CommonPrefixes", []))
        scan = job_prefixes_from_listing(common)
        for raw, reason in scan.rejected.items():
            log.warning("ignoring prefix %r in s3://%s: %s", raw, self.bucket_name, reason)
        return scan.jobs

    def list_job_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix/`` (paginated)."""
        name = validate_job_prefix(prefix)
        keys: list[str] = []
        for page in self.iter_pages(prefix=f"{name}/"):
            keys.extend(str(obj["Key"]) for obj in page.get("Contents", []))
        return keys

    # -- polling ------------------------------------------------------------------------------------

    def _get_status_object(self, key: str, counted: PollResult | None = None) -> _StatusObject | None:
        """The status object at ``key`` (its body's first MAX_STATUS_BYTES + 1 bytes); None when it
        is gone. A poll's GETs are counted in its ``counted`` result."""
        counted = counted or PollResult()
        counted.get_requests += 1
        try:
            resp = self.client.get_object(
                Bucket=self.bucket_name, Key=key, Range=f"bytes=0-{MAX_STATUS_BYTES}"
            )
        except ClientError as err:
            if _error_code(err) in _NOT_FOUND_CODES:
                return None
            if _error_code(err) == "InvalidRange":  # a 0-byte object cannot satisfy any range
                counted.get_requests += 1
                resp = self.client.get_object(Bucket=self.bucket_name, Key=key)
            else:
                raise
        with resp["Body"] as body:
            data = body.read(MAX_STATUS_BYTES + 1)
        return _StatusObject(data, str(resp["ETag"]), resp.get("LastModified"), resp.get("Metadata") or {})

    def poll(self, cache: StatusCache) -> PollResult:
        """List the bucket, GET only new or changed status objects, and report the ready jobs."""
        result = PollResult()
        etags: dict[str, str] = {}  # status key -> the ETag the status was read at
        top_level: set[str] = set()
        for page in self.iter_pages():
            result.list_requests += 1
            contents = page.get("Contents", [])
            for obj in contents:
                head = str(obj["Key"]).partition("/")[0]
                top_level.add(head + "/")
            status_objs = [o for o in contents if job_of_status_key(str(o["Key"])) is not None]
            etags.update({str(o["Key"]): str(o.get("ETag", "")) for o in status_objs})
            plan = cache.poll(status_objs)
            for obj in plan.to_fetch:
                key = str(obj["Key"])
                got = self._get_status_object(key, result)
                if got is None:
                    del etags[key]
                    continue
                cache.record(key, got.etag, got.last_modified, got.body)
                etags[key] = got.etag
        cache.prune(etags.keys())
        scan = job_prefixes_from_listing(sorted(top_level))
        result.rejected = scan.rejected
        valid = set(scan.jobs)
        for key, etag in sorted(etags.items()):
            job = job_of_status_key(key)
            status = cache.get(key)
            if job is None or status is None:
                continue
            refusal = refusal_reason(
                status, None if job in valid else scan.rejected.get(job + "/", "refused")
            )
            if refusal is not None:
                result.unrunnable.append(Unrunnable(key=key, etag=etag, reason=refusal))
            if job not in valid:
                continue
            if status.is_ready:
                result.ready.append(ReadyJob(prefix=job, etag=etag))
            elif status.status is JobStatus.ACCEPTED:
                result.accepted.append(job)
            elif not status.is_valid:
                result.invalid[job] = status.problem or "unreadable"
        return result

    # -- status -------------------------------------------------------------------------------------

    def read_status(self, prefix: str) -> tuple[JobStatusFile, str] | None:
        """The job's parsed status and the ETag it was read at; None when there is no status object."""
        got = self._get_status_object(status_key(prefix))
        if got is None:
            return None
        return JobStatusFile.parse(got.body), got.etag

    def put_status(
        self, prefix: str, status: JobStatusFile, *, if_match: str, metadata: dict[str, str] | None = None
    ) -> str:
        """Conditional PUT of ``status`` over the object last seen at ``if_match``; the new ETag.
        ``metadata``: S3 user metadata stored with it (never in the body).

        Raises :class:`StatusConflict` when the object changed or vanished since.
        """
        return self._put_status_key(status_key(prefix), status, if_match=if_match, metadata=metadata)

    def _put_status_key(
        self, key: str, status: JobStatusFile, *, if_match: str, metadata: dict[str, str] | None = None
    ) -> str:
        try:
            resp = self.client.put_object(
                Bucket=self.bucket_name,
                Key=key,
                Body=status.render(),
                ContentType="text/plain",
                IfMatch=if_match,
                **({"Metadata": metadata} if metadata else {}),
            )
        except ClientError as err:
            if _error_code(err) in _CONFLICT_CODES:
                raise StatusConflict(
                    f"s3://{self.bucket_name}/{key} changed since ETag {if_match} "
                    f"({_error_code(err)}); not writing {status.status}"
                ) from err
            raise
        return str(resp["ETag"])

    def refuse(self, cache: StatusCache, unrunnable: list[Unrunnable]) -> dict[str, str]:
        """Write ``FAILED`` with its reason over each status object of a poll's ``unrunnable``.

        Each write is conditional on the ETag the poll read, so a status the uploader changed since (or
        another poller already answered) is left to the next poll. Returns ``{key: reason}`` written.
        """
        written: dict[str, str] = {}
        for item in unrunnable:
            status = JobStatusFile(JobStatus.FAILED, reason=item.reason)
            try:
                etag = self._put_status_key(item.key, status, if_match=item.etag)
            except StatusConflict as err:
                log.info("not refusing %s: %s", item.key, err)
                continue
            except ClientError as err:
                log.warning("could not write FAILED to s3://%s/%s: %s", self.bucket_name, item.key, err)
                continue
            cache.record_written(item.key, etag, status)
            written[item.key] = status.reason or item.reason
        return written

    def transition(
        self,
        prefix: str,
        new: JobStatus,
        *,
        scheduler_job_id: str | None = None,
        reason: str | None = None,
        repeat_ok: bool = False,
    ) -> str:
        """Move the job's status to ``new`` (read, check the transition, conditional PUT); the new ETag.

        The scheduler job id written is ``scheduler_job_id``, the one rackflow submitted: never the
        one read from the object (the uploader can write any line 2 there). ``repeat_ok``: a status
        that says ``new`` with that job id already (an earlier try's write) is left as it is. Raises
        :class:`StatusConflict` when the status object is gone or changes under us, and
        :class:`~rackflow.core.s3_protocol.StatusTransitionError` for a move the protocol forbids.
        """
        current = self.read_status(prefix)
        if current is None:
            raise StatusConflict(f"s3://{self.bucket_name}/{status_key(prefix)} is gone; not writing {new}")
        seen, etag = current
        if repeat_ok and seen.status is new and seen.scheduler_job_id == scheduler_job_id:
            return etag
        check_transition(seen.status, new)
        return self.put_status(
            prefix, JobStatusFile(new, scheduler_job_id=scheduler_job_id, reason=reason), if_match=etag
        )

    def mark_running(self, prefix: str, scheduler_job_id: str | None) -> None:
        """``QUEUED`` -> ``RUNNING`` (conditional write); any other status is left as it is. Raises
        :class:`StatusConflict` when the status object is gone."""
        current = self.read_status(prefix)
        if current is None:
            raise StatusConflict(f"{prefix}: status object is gone")
        if current[0].status is JobStatus.QUEUED:
            self.transition(prefix, JobStatus.RUNNING, scheduler_job_id=scheduler_job_id)

    def fail(self, prefix: str, reason: str, *, scheduler_job_id: str | None = None) -> bool:
        """Best effort: mark the job FAILED with ``reason``; False (logged) when that is not possible."""
        try:
            self.transition(prefix, JobStatus.FAILED, scheduler_job_id=scheduler_job_id, reason=reason)
        except Exception as err:
            log.warning("could not mark %s FAILED (%s): %s", prefix, reason, err)
            return False
        return True

    def end_unless_terminal(
        self,
        prefix: str,
        new: JobStatus,
        *,
        reason: str,
        scheduler_job_id: str | None = None,
        attempts: int = 3,
    ) -> JobStatusFile | None:
        """Write terminal ``new`` with ``reason`` over a job rackflow owns (ACCEPTED .. STAGING_OUT).

        Never overwrites a terminal status, and leaves alone a status object that is gone, back to
        ``FILE_UPLOAD`` (the uploader started over) or unreadable. A conditional write that loses to a
        concurrent one is retried from a fresh read. Returns what the object says afterwards (None when
        it is gone).
        """
        if new not in TERMINAL_STATUSES:
            raise ValueError(f"{new} is not a terminal status")
        for _ in range(attempts):
            current = self.read_status(prefix)
            if current is None:
                log.info("%s: status object is gone; not writing %s", prefix, new)
                return None
            seen, etag = current
            if seen.status not in _OWNED_STATUSES:
                log.info("%s: status is %s; not writing %s (%s)", prefix, seen.status, new, reason)
                return seen
            written = JobStatusFile(new, scheduler_job_id=scheduler_job_id, reason=reason)
            try:
                self.put_status(prefix, written, if_match=etag)
            except StatusConflict as err:
                log.info("%s: status changed while writing %s, reading again: %s", prefix, new, err)
                continue
            log.info("%s: wrote %s: %s", prefix, new, reason)
            return written
        raise StatusConflict(f"{prefix}: status kept changing; {new} not written after {attempts} tries")

    # -- claim --------------------------------------------------------------------------------------

    def claim(self, prefix: str, seen_etag: str, token: str | None = None) -> ClaimResult:
        """Take a ready job exactly once: conditional PUT over the ``FILE_UPLOAD`` seen at ``seen_etag``.

        Writes ACCEPTED, or FAILED with the reason when the job cannot run (no job script); ``token``
        (the claimant's job key) goes with it as user metadata (:meth:`claim_token` reads it back). A
        loser -- someone else wrote first, or the uploader changed the object -- gets ``won=False``.
        """
        keys = self.list_job_keys(prefix)
        decision = intake_decision(prefix, keys)
        metadata = {CLAIM_METADATA: token} if token else None
        try:
            etag = self.put_status(prefix, decision, if_match=seen_etag, metadata=metadata)
        except StatusConflict as err:
            return ClaimResult(won=False, status=None, etag=None, keys=keys, reason=str(err))
        return ClaimResult(won=True, status=decision, etag=etag, keys=keys, reason=decision.reason or "")

    def claim_token(self, prefix: str) -> str | None:
        """The claimant's token while the job's status is still the ``ACCEPTED`` of a claim (None for
        any other status, a claim without a token, or no status object)."""
        got = self._get_status_object(status_key(prefix))
        if got is None or JobStatusFile.parse(got.body).status is not JobStatus.ACCEPTED:
            return None
        token = got.metadata.get(CLAIM_METADATA)
        return str(token) if token else None

    # -- transfers ----------------------------------------------------------------------------------

    def stage_in(self, prefix: str, job_dir: Path | JobDirectory, keys: list[str]) -> TransferResult:
        """Download the job's objects into ``job_dir``, which must not exist yet (rackflow creates it).

        ``job_dir`` is a local path or a :class:`~rackflow.hooks.job_dirs.JobDirectory` (e.g. on a
        login node over SFTP). The status object is not copied. Unsafe keys (``..``, absolute, control
        characters, ...) and keys that collide with a directory or a symlink are skipped with a log
        line; nothing is written outside ``job_dir``.
        """
        name = validate_job_prefix(prefix)
        directory = as_job_directory(job_dir)
        directory.create()  # FileExistsError: a job of this name ran here before
        result = TransferResult()
        for key in sorted(keys):
            if key == f"{name}/{STATUS_FILE_NAME}" or key == f"{name}/":
                continue
            with contextlib.ExitStack() as stack:
                try:
                    if key.endswith("/"):  # a folder marker
                        directory.make_dirs(key_parts(name, key.rstrip("/")))
                        result.keys.append(key)
                        continue
                    out = stack.enter_context(directory.open_new(key_parts(name, key)))
                except (UnsafeKeyError, OSError) as err:
                    reason = err.reason if isinstance(err, UnsafeKeyError) else f"{type(err).__name__}: {err}"
                    log.warning("stage-in of %s: skipping key %r: %s", name, key, reason)
                    result.skipped[key] = reason
                    continue
                self.client.download_fileobj(self.bucket_name, key, out, Config=self.transfer_config)
                result.bytes += out.tell()
            result.keys.append(key)
        if f"{name}/{JOB_SCRIPT_NAME}" in keys and not directory.is_regular_file(JOB_SCRIPT_NAME):
            result.skipped.setdefault(f"{name}/{JOB_SCRIPT_NAME}", "job script was not staged")
        return result

    def stage_out(self, prefix: str, job_dir: Path | JobDirectory, manifest: Manifest) -> TransferResult:
        """Upload every file or directory created or changed in ``job_dir`` since ``manifest``.

        Symlinks, special files and names with control characters are skipped (logged); the local
        status file is never uploaded. Nothing is deleted on either side.
        """
        name = validate_job_prefix(prefix)
        directory = as_job_directory(job_dir)
        scan = result_files(directory.list_dir, manifest)
        result = TransferResult(skipped=dict(scan.skipped))
        for rel, reason in scan.skipped.items():
            log.warning("stage-out of %s: skipping %r: %s", name, rel, reason)
        for rel in scan.keys:
            key = result_key(name, rel)
            if rel.endswith("/"):
                self.client.put_object(Bucket=self.bucket_name, Key=key, Body=b"")
                result.keys.append(key)
                continue
            try:
                src, size = directory.open_result(rel)
            except OSError as err:
                result.skipped[rel] = f"cannot open: {err.strerror or err}"
                log.warning("stage-out of %s: skipping %r: %s", name, rel, err)
                continue
            with src:
                self.client.upload_fileobj(src, self.bucket_name, key, Config=self.transfer_config)
            result.bytes += size
            result.keys.append(key)
        return result


# -- scheduler bridge ---------------------------------------------------------------------------------
# The uploader's own job script (with its own directives) is submitted as-is from the job directory, as
# the intake's run_as account, idempotently by job name, through the batch-jobs layer's
# BatchSchedulerHook.submit_script (options rackflow manages on the command line).


def cancel_intake_job(
    hook: S3JobsHook,
    scheduler: BatchSchedulerHook,
    prefix: str,
    job_id: str,
    why: str,
    account: str | None = None,
) -> JobStatusFile | None:
    """Cancel a submitted intake job (as ``account``, the intake's run_as) and write ``CANCELED`` with
    ``why`` unless its status is terminal.

    The scheduler job is cancelled first (so a status reading CANCELED never hides a live job); what the
    status object says afterwards is returned (None when it is gone).
    """
    known = scheduler.cancel(job_id, account=account)
    log.info("%s: scheduler job %s %s", prefix, job_id, "cancelled" if known else "was already gone")
    return write_canceled(hook, prefix, job_id, why)


def write_canceled(hook: S3JobsHook, prefix: str, job_id: str, why: str) -> JobStatusFile | None:
    """``CANCELED`` with ``why`` after rackflow cancelled ``job_id``, unless the status is terminal."""
    return hook.end_unless_terminal(
        prefix, JobStatus.CANCELED, reason=f"{why}; scheduler job {job_id} cancelled", scheduler_job_id=job_id
    )


class S3StatusFollower(JobFollower):
    """Keeps an intake job's status object in step while the shared cluster poller waits for it.

    Given to :class:`~rackflow.triggers.scheduler.BatchSchedulerJobTrigger` by the intake's wait task:
    in the triggerer it writes ``RUNNING`` when the job starts (a conditional write, and only over
    ``QUEUED``), and ``CANCELED`` when the waiting task is killed. The task itself resumes only when the
    job has ended, for the stage-out.

    :param bucket_name: the intake bucket.
    :param aws_conn_id: Airflow AWS connection.
    :param prefix: the job's prefix in the bucket.
    """

    def __init__(self, *, bucket_name: str, aws_conn_id: str, prefix: str) -> None:
        super().__init__(bucket_name=bucket_name, aws_conn_id=aws_conn_id, prefix=prefix)
        self.hook = S3JobsHook(aws_conn_id, bucket_name=bucket_name)
        self.prefix = prefix

    def on_state(self, job_id: str, status: SchedulerJobStatus) -> None:
        if status.state is JobState.ACTIVE:
            self.hook.mark_running(self.prefix, job_id)

    def on_killed(self, job_id: str, why: str) -> None:
        write_canceled(self.hook, self.prefix, job_id, why)
