"""The S3 job intake protocol of aws-jobmanager, kept byte-compatible so existing uploaders keep working.

A bucket holds one prefix per job (``job0001/``): the job script ``aws-job-run.sh``, the input files,
and, uploaded last, ``aws-job-stat.txt`` containing ``FILE_UPLOAD`` -- "everything is uploaded, take
it". From then on rackflow owns the status object and writes it back as up to three lines::

    STATUS
    scheduler job id        (empty line when there is none yet but a reason follows)
    reason                  (one line; on FAILED or CANCELED)

Job files land in a job directory named after the prefix (on this host or on a login node over SFTP);
files the job creates or changes there are uploaded back under the same prefix. Everything here is
pure: S3 and the file system are touched only by the callers, and by ``result_files``/``take_manifest``
when given a local directory (any other job directory hands them a :data:`DirLister`).
"""

from __future__ import annotations

import enum
import itertools
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

JOB_SCRIPT_NAME = "aws-job-run.sh"
STATUS_FILE_NAME = "aws-job-stat.txt"
MISSING_SCRIPT_REASON = f"{JOB_SCRIPT_NAME} is missing"
MAX_REASON_CHARS = 500
# Enough for any status file rackflow or an uploader writes; a huge object is garbage, not a status.
MAX_STATUS_BYTES = 64 * 1024
# One path component: starts with a letter or digit (so never "." or ".."), then a safe set that needs
# no quoting in a shell, a scheduler job name or a URL.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_JOB_ID_RE = re.compile(r"^\S{1,255}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NAME_MAX_BYTES = 255
EMPTY_STATUS_PROBLEM = "status object is empty (0 bytes)"


class JobStatus(enum.StrEnum):
    """What ``aws-job-stat.txt`` says. ``UNKNOWN`` is never written: it is how garbage reads."""

    FILE_UPLOAD = "FILE_UPLOAD"
    ACCEPTED = "ACCEPTED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    STAGING_OUT = "STAGING_OUT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})
_HAPPY_PATH = (
    JobStatus.FILE_UPLOAD,
    JobStatus.ACCEPTED,
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.STAGING_OUT,
    JobStatus.COMPLETED,
)


def _build_transitions() -> dict[JobStatus, frozenset[JobStatus]]:
    table: dict[JobStatus, frozenset[JobStatus]] = {}
    for current, following in itertools.pairwise(_HAPPY_PATH):
        table[current] = frozenset({following, JobStatus.FAILED, JobStatus.CANCELED})
    for status in (*TERMINAL_STATUSES, JobStatus.UNKNOWN):
        # UNKNOWN has no way out: an unreadable status file may be a user's mistake in progress, so
        # rackflow reports it instead of overwriting the user's object.
        table[status] = frozenset()
    return table


ALLOWED_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = _build_transitions()


class StatusTransitionError(ValueError):
    """A status write that would move a job backwards, out of a terminal state, or nowhere."""


def is_transition_allowed(current: JobStatus, new: JobStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


def check_transition(current: JobStatus, new: JobStatus) -> None:
    """Raise unless ``current -> new`` is allowed; a same-state write is refused as a no-op bug."""
    if not is_transition_allowed(current, new):
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "nothing"
        raise StatusTransitionError(f"status {current} cannot change to {new}; allowed: {allowed}")


def sanitize_reason(reason: str) -> str:
    """One printable line: control characters (CR, LF, NUL, ...) become spaces, runs collapse, long cut."""
    line = " ".join(_CONTROL_RE.sub(" ", reason).split())
    if len(line) > MAX_REASON_CHARS:
        line = line[: MAX_REASON_CHARS - 3] + "..."
    return line


@dataclass(frozen=True)
class JobStatusFile:
    """The parsed or to-be-written content of ``aws-job-stat.txt``.

    ``problem`` is set only on ``UNKNOWN`` and says why the bytes were not a status, so a poll can log
    it and move on instead of dying on one bad object.
    """

    status: JobStatus
    scheduler_job_id: str | None = None
    reason: str | None = None
    problem: str | None = None

    def __post_init__(self) -> None:
        if self.scheduler_job_id is not None and not _JOB_ID_RE.match(self.scheduler_job_id):
            raise ValueError(f"scheduler job id must be one token without spaces: {self.scheduler_job_id!r}")
        if self.reason is not None:
            object.__setattr__(self, "reason", sanitize_reason(self.reason) or None)

    @property
    def is_valid(self) -> bool:
        return self.status is not JobStatus.UNKNOWN

    @property
    def is_ready(self) -> bool:
        """True when the uploader has finished and the job is rackflow's to take."""
        return self.status is JobStatus.FILE_UPLOAD

    @classmethod
    def parse(cls, data: bytes) -> JobStatusFile:
        """Read any bytes; never raise. Unreadable content gives ``UNKNOWN`` with ``problem`` set."""
        if not data:
            return cls(JobStatus.UNKNOWN, problem=EMPTY_STATUS_PROBLEM)
        if len(data) > MAX_STATUS_BYTES:
            return cls(JobStatus.UNKNOWN, problem=f"status object is {len(data)} bytes, too large")
        text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
        # splitlines handles \n, \r\n and a lone \r, and drops the trailing newline.
        lines = text.splitlines()
        first = lines[0].split() if lines else []
        word = first[0] if first else ""
        try:
            status = JobStatus(word)
        except ValueError:
            return cls(JobStatus.UNKNOWN, problem=f"unknown status {word[:40]!r}")
        if status is JobStatus.UNKNOWN or len(first) > 1:
            return cls(JobStatus.UNKNOWN, problem=f"unexpected first line {lines[0][:80]!r}")
        job_id = lines[1].strip() if len(lines) > 1 else ""
        reason = lines[2].strip() if len(lines) > 2 else ""
        if job_id and not _JOB_ID_RE.match(job_id):
            return cls(JobStatus.UNKNOWN, problem=f"scheduler job id {job_id[:80]!r} is not one token")
        return cls(status, scheduler_job_id=job_id or None, reason=reason or None)

    def render(self) -> bytes:
        """The exact bytes to PUT: lines joined by ``\\n`` with a trailing newline, UTF-8.

        ``FILE_UPLOAD`` renders as ``b"FILE_UPLOAD\\n"``, what ``echo FILE_UPLOAD > aws-job-stat.txt``
        writes in the uploader's step.
        """
        if not self.is_valid:
            raise ValueError("UNKNOWN is how unreadable content parses; it is never written")
        lines = [self.status.value]
        if self.scheduler_job_id or self.reason:
            lines.append(self.scheduler_job_id or "")
        if self.reason:
            lines.append(self.reason)
        return ("\n".join(lines) + "\n").encode("utf-8")


class UnsafeKeyError(ValueError):
    """An S3 key or job prefix that must not become a local path; ``reason`` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"refusing key {key!r}: {reason}")
        self.key = key
        self.reason = reason


def validate_job_prefix(prefix: str) -> str:
    """The job's name from ``job0001`` or ``job0001/``: one safe path component, else UnsafeKeyError."""
    name = prefix.removesuffix("/")
    if not _PREFIX_RE.match(name):
        raise UnsafeKeyError(
            prefix,
            "a job prefix must be one path component of letters, digits, '.', '_' or '-' "
            "(at most 128, starting with a letter or digit)",
        )
    return name


def status_key(prefix: str) -> str:
    return f"{validate_job_prefix(prefix)}/{STATUS_FILE_NAME}"


def script_key(prefix: str) -> str:
    return f"{validate_job_prefix(prefix)}/{JOB_SCRIPT_NAME}"


@dataclass(frozen=True)
class PrefixScan:
    """Job prefixes found in a delimiter listing, and the ones refused with their reasons."""

    jobs: list[str]
    rejected: dict[str, str]


def job_prefixes_from_listing(common_prefixes: Iterable[Mapping[str, Any] | str]) -> PrefixScan:
    """Job names from ``CommonPrefixes`` (``[{"Prefix": "job0001/"}]`` or plain strings), sorted, unique."""
    jobs: set[str] = set()
    rejected: dict[str, str] = {}
    for entry in common_prefixes:
        raw = entry if isinstance(entry, str) else str(entry.get("Prefix", ""))
        try:
            jobs.add(validate_job_prefix(raw))
        except UnsafeKeyError as err:
            rejected[raw] = err.reason
    return PrefixScan(jobs=sorted(jobs), rejected=rejected)


def intake_decision(prefix: str, keys: Iterable[str]) -> JobStatusFile:
    """What to write over ``FILE_UPLOAD``: ACCEPTED, or FAILED with the reason the job cannot run.

    ``keys`` are the object keys listed under the prefix.
    """
    try:
        name = validate_job_prefix(prefix)
    except UnsafeKeyError as err:
        return JobStatusFile(JobStatus.FAILED, reason=f"job prefix is not usable: {err.reason}")
    if f"{name}/{JOB_SCRIPT_NAME}" not in set(keys):
        return JobStatusFile(JobStatus.FAILED, reason=MISSING_SCRIPT_REASON)
    return JobStatusFile(JobStatus.ACCEPTED)


def refusal_reason(status: JobStatusFile, prefix_problem: str | None = None) -> str | None:
    """The reason to write with ``FAILED`` over a status object rackflow will not run; None to leave it.

    Refused: a job prefix whose name rackflow refuses (``prefix_problem``) once its status says
    ``FILE_UPLOAD``, and any status object that cannot be parsed (whatever the prefix). An empty object
    is left alone: nothing has been said yet (some upload tools create the object before writing it).
    The uploader sees why; writing ``FILE_UPLOAD`` again submits the job once it can run.
    """
    unreadable = not status.is_valid and status.problem != EMPTY_STATUS_PROBLEM
    if prefix_problem is not None:
        if status.is_ready or unreadable:
            return f"job prefix is not usable: {prefix_problem}; rackflow did not run this job"
        return None
    if unreadable:
        return (
            f"status object cannot be read ({status.problem}); rackflow did not run this job: "
            f"write {JobStatus.FILE_UPLOAD.value} alone in {STATUS_FILE_NAME} to submit it"
        )
    return None


def job_of_status_key(key: str) -> str | None:
    """``job0001`` for ``job0001/aws-job-stat.txt``; None for any other key (nested ones included)."""
    head, sep, tail = key.partition("/")
    if not sep or tail != STATUS_FILE_NAME or not head:
        return None
    return head


@dataclass(frozen=True)
class _CacheEntry:
    etag: str
    last_modified: Any
    status: JobStatusFile


@dataclass(frozen=True)
class PollPlan:
    """What one listing page asks of the caller.

    ``to_fetch``: status objects new or changed since last seen, as the listing's dicts -- GET each and
    ``record`` it. ``ready``: jobs whose cached status is ``FILE_UPLOAD``. ``invalid``: job -> problem
    for cached unreadable status objects (unchanged since, so not fetched again).
    """

    to_fetch: list[Mapping[str, Any]] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)


class StatusCache:
    """Parsed status objects keyed by S3 key, with the ETag and LastModified they were read at.

    A poll lists the bucket and GETs only status objects whose ETag or LastModified moved, so a bucket
    of 1,000 finished jobs costs listing pages and no GETs. Not thread-safe; one poller owns one cache.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _CacheEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: str) -> JobStatusFile | None:
        entry = self._entries.get(key)
        return entry.status if entry else None

    def _is_current(self, key: str, etag: str, last_modified: Any) -> bool:
        entry = self._entries.get(key)
        if entry is None or entry.etag != etag:
            return False
        # After our own PUT only the ETag is known; then the ETag alone decides.
        return entry.last_modified is None or last_modified is None or entry.last_modified == last_modified

    def poll(self, page: Iterable[Mapping[str, Any]]) -> PollPlan:
        """Plan the GETs for one listing page of ``{"Key", "ETag", "LastModified"}`` objects."""
        plan = PollPlan()
        for obj in page:
            key = str(obj.get("Key", ""))
            job = job_of_status_key(key)
            if job is None:
                continue
            if not self._is_current(key, str(obj.get("ETag", "")), obj.get("LastModified")):
                plan.to_fetch.append(obj)
                continue
            status = self._entries[key].status
            if status.is_ready:
                plan.ready.append(job)
            elif not status.is_valid:
                plan.invalid[job] = status.problem or "unreadable"
        return plan

    def record(self, key: str, etag: str, last_modified: Any, body: bytes) -> JobStatusFile:
        """Store a GET's result (use the GET response's ETag and LastModified) and return it parsed."""
        status = JobStatusFile.parse(body)
        self._entries[key] = _CacheEntry(etag=str(etag), last_modified=last_modified, status=status)
        return status

    def record_written(self, key: str, etag: str, status: JobStatusFile, last_modified: Any = None) -> None:
        """Store what rackflow just PUT, so its own write does not cost a GET on the next poll."""
        self._entries[key] = _CacheEntry(etag=str(etag), last_modified=last_modified, status=status)

    def statuses(self) -> dict[str, tuple[JobStatusFile, Any]]:
        """Every cached job's status and the LastModified it was read at, by job prefix."""
        out = {}
        for key, entry in self._entries.items():
            job = job_of_status_key(key)
            if job is not None:
                out[job] = (entry.status, entry.last_modified)
        return out

    def ready_jobs(self) -> list[str]:
        """All jobs whose cached status is ``FILE_UPLOAD`` (after the GETs of a poll are recorded)."""
        jobs = (job_of_status_key(k) for k, e in self._entries.items() if e.status.is_ready)
        return sorted(j for j in jobs if j is not None)

    def prune(self, seen_keys: Collection[str]) -> list[str]:
        """Forget keys missing from a complete listing (job deleted); returns the forgotten keys."""
        gone = [k for k in self._entries if k not in seen_keys]
        for key in gone:
            del self._entries[key]
        return sorted(gone)


def _check_component(key: str, part: str) -> None:
    if part == "":
        raise UnsafeKeyError(key, "empty path component ('//' or a trailing '/')")
    if part in (".", ".."):
        raise UnsafeKeyError(key, f"'{part}' path component")
    if "\\" in part:
        raise UnsafeKeyError(key, "backslash in a name (a path separator to some clients)")
    if len(part.encode("utf-8", errors="surrogateescape")) > _NAME_MAX_BYTES:
        raise UnsafeKeyError(key, f"a path component is longer than {_NAME_MAX_BYTES} bytes")


def key_parts(prefix: str, key: str) -> tuple[str, ...]:
    """The path components of object ``key`` inside job ``prefix``'s directory; UnsafeKeyError if unsafe.

    Lexical only (no file system): refuses NUL or any control character (newlines included -- they
    would break line-based logs and manifests and the job's own shell scripts), absolute keys, keys
    outside ``prefix/``, empty, ``.`` or ``..`` components and backslashes. Spaces and other printable
    characters are fine. Directory markers (``job/dir/``) are refused as empty components; callers
    strip the slash or skip them. Symlinks already in the job directory are the caller's to refuse
    while it descends (see :func:`local_path_for_key`, or the SFTP job directory's lstat walk).
    """
    if _CONTROL_RE.search(key):
        raise UnsafeKeyError(key, "control character (NUL, newline, ...) in key")
    if key.startswith("/"):
        raise UnsafeKeyError(key, "absolute key")
    name = validate_job_prefix(prefix)
    if not key.startswith(name + "/"):
        raise UnsafeKeyError(key, f"key is not under job prefix {name + '/'!r}")
    parts = tuple(key[len(name) + 1 :].split("/"))
    for part in parts:
        _check_component(key, part)
    return parts


def local_path_for_key(job_dir: Path, prefix: str, key: str) -> Path:
    """Where object ``key`` of job ``prefix`` goes inside ``job_dir``; UnsafeKeyError if anywhere else.

    :func:`key_parts`, plus a ``resolve()`` check against symlinks already in ``job_dir``. A symlink
    planted between this check and the write is the caller's to prevent (stage into a directory the
    job cannot yet run in, refuse symlinks while descending, create files with ``O_NOFOLLOW``).
    """
    parts = key_parts(prefix, key)
    base = job_dir.resolve()
    target = base.joinpath(*parts)
    if not target.resolve().is_relative_to(base):
        raise UnsafeKeyError(key, "resolves outside the job directory")
    return target


class ManifestEntry(NamedTuple):
    size: int
    mtime_ns: int


# Relative POSIX path -> (size, mtime_ns); directories end in "/" and carry size 0.
Manifest = dict[str, ManifestEntry]


@dataclass(frozen=True)
class ResultScan:
    """Files to upload after the job, as relative POSIX keys, and what was skipped and why."""

    keys: list[str]
    skipped: dict[str, str]


class EntryStat(NamedTuple):
    """One directory entry as ``lstat`` sees it (a symlink is itself, never its target).

    ``error`` is set (and the numbers are 0) when the entry could not be stat'ed.
    """

    name: str
    mode: int
    size: int
    mtime_ns: int
    error: str | None = None


# Lists one directory of a job dir given its relative POSIX path ("" or "sub/dir/"); raises OSError
# when the directory cannot be listed. Local: :func:`local_lister`; SFTP: the job directory's own.
DirLister = Callable[[str], Iterable[EntryStat]]


def local_lister(job_dir: Path) -> DirLister:
    """A :data:`DirLister` over a local directory (``os.scandir``, ``lstat`` per entry)."""

    def list_dir(rel_dir: str) -> list[EntryStat]:
        entries: list[EntryStat] = []
        for entry in os.scandir(job_dir / rel_dir if rel_dir else job_dir):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as err:
                entries.append(EntryStat(entry.name, 0, 0, 0, f"cannot stat: {err.strerror}"))
                continue
            entries.append(EntryStat(entry.name, st.st_mode, st.st_size, st.st_mtime_ns))
        return entries

    return list_dir


def _lister(job_dir: Path | DirLister) -> DirLister:
    return local_lister(job_dir) if isinstance(job_dir, Path) else job_dir


def _walk(list_dir: DirLister) -> tuple[Manifest, dict[str, str]]:
    """Regular files and directories under the job dir, never following a symlink; others skipped."""
    found: Manifest = {}
    skipped: dict[str, str] = {}
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(list_dir(rel_dir))
        except OSError as err:
            skipped[rel_dir or "."] = f"cannot list directory: {err.strerror or err}"
            continue
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            if _CONTROL_RE.search(entry.name):
                skipped[rel] = "control character in name"
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                skipped[rel] = "name is not valid UTF-8"
                continue
            if entry.error is not None:
                skipped[rel] = entry.error
            elif stat.S_ISLNK(entry.mode):
                skipped[rel] = "symlink (not followed)"
            elif stat.S_ISDIR(entry.mode):
                found[rel + "/"] = ManifestEntry(0, entry.mtime_ns)
                pending.append(rel + "/")
            elif stat.S_ISREG(entry.mode):
                found[rel] = ManifestEntry(entry.size, entry.mtime_ns)
            else:
                skipped[rel] = "not a regular file or directory"
    return found, skipped


def take_manifest(job_dir: Path | DirLister) -> Manifest:
    """Snapshot the job dir (a local path, or any job directory's lister) right after stage-in, for
    ``result_files`` to compare against."""
    return _walk(_lister(job_dir))[0]


def result_files(job_dir: Path | DirLister, since_manifest: Manifest) -> ResultScan:
    """Files the job created or changed since stage-in, as relative POSIX keys to upload, sorted.

    A file counts when it is new or its (size, mtime_ns) differs from the manifest. A new empty
    directory is kept as a ``dir/`` key (an S3 folder marker) so it survives the trip; other
    directories are carried by their files. Symlinks are never followed and are reported in
    ``skipped``, as are special files, unencodable or control-character names, and a top-level
    ``aws-job-stat.txt``, which rackflow alone writes.
    """
    current, skipped = _walk(_lister(job_dir))
    non_empty = {rel.rstrip("/").rpartition("/")[0] + "/" for rel in current}
    keys: list[str] = []
    for rel, entry in current.items():
        if rel == STATUS_FILE_NAME:
            if since_manifest.get(rel) != entry:
                skipped[rel] = "the status object is written by rackflow, not uploaded as a result"
            continue
        if rel.endswith("/"):
            if rel not in since_manifest and rel not in non_empty:
                keys.append(rel)
            continue
        if since_manifest.get(rel) != entry:
            keys.append(rel)
    return ResultScan(keys=sorted(keys), skipped=dict(sorted(skipped.items())))


def result_key(prefix: str, relative: str) -> str:
    """The S3 key a result goes to: the job prefix plus the relative POSIX path."""
    return f"{validate_job_prefix(prefix)}/{relative}"
