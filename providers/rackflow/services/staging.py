"""Stage a batch job's files into and out of its job directory, and nowhere else.

The job's end of every entry is a relative path inside the job directory, reached through a
:class:`~rackflow.hooks.job_dirs.JobDirectory` (this host, or the login node over SFTP): files are
created exclusively, nothing is read or written through a symlink, and a symlink the job planted is
refused, never followed. The remote end (``s3://bucket/key``, ``sftp://<ssh_conn_id>/path``,
``http(s)://...`` for stage-in only) must be on the site's allow-lists
(:class:`~rackflow.core.staging_policy.StagingPolicy`, read from ``[rackflow] staging_*``): checked
when the job is submitted (:func:`check_staging`, 400 at the job API) and again here, because settings
change and ``/api/v2`` triggers skip the job API.

Web downloads resolve the host here, refuse it unless every address it resolves to is public, connect
to the checked address (no second lookup that DNS rebinding could answer differently) and do not
follow redirects. Every copy streams in chunks and stops at ``[rackflow] staging_max_file_size``; a
copy that fails leaves no partial file in the job directory (or on an SFTP target).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import IO, Any
from urllib.parse import urlsplit

from rackflow.core.jobspec import JobDescription, JobDescriptionError, Location, StagingEntry
from rackflow.core.staging_policy import (
    OPTION_NAMES,
    StagingPolicy,
    address_problem,
    host_problem,
    job_path_parts,
    job_path_problem,
)
from rackflow.hooks.job_dirs import JobDirectory

CHUNK_BYTES = 1 << 20
HTTP_TIMEOUT = 60.0


class StagingError(RuntimeError):
    """A file could not be staged; the message names the entry and the cause."""


def _policy(policy: StagingPolicy | None) -> StagingPolicy:
    if policy is not None:
        return policy
    from rackflow import settings

    return settings.staging_policy()


def check_staging(job: JobDescription, policy: StagingPolicy | None = None) -> None:
    """Raise :class:`JobDescriptionError` naming each staging entry the site's allow-lists refuse."""
    problems = _policy(policy).problems(
        [(e.source, e.target) for e in job.stage_in], [(e.source, e.target) for e in job.stage_out]
    )
    if problems:
        raise JobDescriptionError("staging refused: " + "; ".join(problems), problems)


# -- bounded copies ------------------------------------------------------------------------------------


def _too_big(size: int, limit: int) -> str:
    return f"{size} bytes, over the {limit}-byte limit per file ([rackflow] {OPTION_NAMES['max_file_bytes']})"


def _copy(read: Callable[[int], bytes], out: IO[bytes], limit: int) -> int:
    """Copy chunks from ``read`` to ``out``; StagingError as soon as more than ``limit`` bytes come."""
    total = 0
    while chunk := read(CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise StagingError(
                f"more than {limit} bytes: over the limit per file "
                f"([rackflow] {OPTION_NAMES['max_file_bytes']})"
            )
        out.write(chunk)
    return total


class _LimitedReader:
    """A file object for boto3's upload that fails once more than ``limit`` bytes are read."""

    def __init__(self, src: IO[bytes], limit: int) -> None:
        self._src, self._limit, self.total = src, limit, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._src.read(CHUNK_BYTES if size is None or size < 0 else size)
        self.total += len(chunk)
        if self.total > self._limit:
            raise StagingError(f"file grew past the {self._limit}-byte limit per file while uploading")
        return chunk


def _write_in(job_dir: JobDirectory, parts: Sequence[str], read: Callable[[int], bytes], limit: int) -> int:
    """A new file at ``parts`` in the job directory from ``read`` (an older regular file there, from a
    cleared earlier attempt, is replaced; a directory is not); removed again if the copy fails."""
    rel = "/".join(parts)
    existing = job_dir.lstat(rel)
    if existing is not None:
        if stat.S_ISDIR(existing.mode):
            raise StagingError(f"{rel} is a directory in the job directory")
        job_dir.remove(parts)  # a file or a symlink itself, never what a symlink points to
    try:
        with job_dir.open_new(parts) as out:
            return _copy(read, out, limit)
    except BaseException:
        job_dir.remove(parts)
        raise


def _writer(
    job_dir: JobDirectory, parts: Sequence[str], limit: int
) -> Callable[[Callable[[int], bytes]], int]:
    return lambda read: _write_in(job_dir, parts, read, limit)


# -- remote ends ---------------------------------------------------------------------------------------


def _s3(aws_conn_id: str | None) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=aws_conn_id)


@contextmanager
def _sftp(conn_id: str) -> Iterator[Any]:
    from airflow.providers.ssh.hooks.ssh import SSHHook

    client = SSHHook(ssh_conn_id=conn_id).get_conn()
    try:
        sftp = client.open_sftp()
        try:
            yield sftp
        finally:
            sftp.close()
    finally:
        client.close()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to ``address`` (already checked) for ``host``: no second DNS lookup."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` (already checked), verifying the certificate of ``host``."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        self._ctx = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._ctx)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def resolve_public(host: str, port: int) -> str:
    """The address to connect to for ``host``: every address it resolves to must be public."""
    problem = host_problem(host)
    if problem:
        raise StagingError(f"web host refused: {problem}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StagingError(f"cannot resolve {host!r}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        refused = address_problem(address)
        if refused:
            raise StagingError(f"web host {host!r} resolves to {address}, refused: {refused}")
    if not addresses:
        raise StagingError(f"{host!r} resolves to no address")
    return addresses[0]


def http_get(
    uri: str,
    write: Callable[[Callable[[int], bytes]], int],
    limit: int,
    resolve: Callable[[str, int], str] = resolve_public,
) -> int:
    """GET ``uri`` from the address ``resolve`` checked (default: public ones only), no redirects,
    at most ``limit`` bytes announced; hands the body's ``read`` to ``write`` and returns its result."""
    parts = urlsplit(uri)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    address = resolve(host, port)
    conn_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    conn = conn_class(host, port, address=address, timeout=HTTP_TIMEOUT)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers={"User-Agent": "rackflow-staging", "Accept-Encoding": "identity"})
        resp = conn.getresponse()
        if 300 <= resp.status < 400:
            raise StagingError(
                f"HTTP {resp.status} redirect to {resp.getheader('Location', '?')!r}: "
                "redirects are not followed"
            )
        if resp.status != 200:
            raise StagingError(f"HTTP {resp.status} {resp.reason}")
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise StagingError(_too_big(int(length), limit))
        return write(resp.read)
    finally:
        conn.close()


# -- stage-in ------------------------------------------------------------------------------------------


def _sources(src: Location, aws_conn_id: str | None) -> Iterator[tuple[str, int | None, Any]]:
    """(relative name or "", size if known, opener) per file the source stands for; an opener is a
    context manager factory giving a ``read(n)`` callable."""
    if src.kind == "s3":
        s3 = _s3(aws_conn_id)
        client = s3.get_conn()
        key = src.path
        if key.endswith("/"):
            keys = [k for k in (s3.list_keys(bucket_name=src.host, prefix=key) or []) if not k.endswith("/")]
            if not keys:
                raise StagingError(f"{src.uri}: no objects under this prefix")
            for k in sorted(keys):
                yield k[len(key) :], None, _s3_object(client, src.host, k)
            return
        yield "", None, _s3_object(client, src.host, key)
    elif src.kind == "sftp":
        assert src.host is not None
        with _sftp(src.host) as sftp:
            if src.path.endswith("/"):
                for attr in sorted(sftp.listdir_attr(src.path), key=lambda a: a.filename):
                    if stat.S_ISREG(attr.st_mode or 0):
                        yield attr.filename, attr.st_size, _sftp_file(sftp, src.path + attr.filename)
                return
            st = sftp.lstat(src.path)  # a symlink at the remote end is not followed either
            if not stat.S_ISREG(st.st_mode or 0):
                raise StagingError(f"{src.uri}: not a regular file (symlinks are not followed)")
            yield "", st.st_size, _sftp_file(sftp, src.path)
    else:
        raise StagingError(f"{src.uri}: {src.kind} is not a stage_in source")


def _s3_object(client: Any, bucket: str | None, key: str) -> Any:
    @contextmanager
    def opener(limit: int) -> Iterator[Callable[[int], bytes]]:
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey as exc:
            raise StagingError(f"s3://{bucket}/{key}: no such object") from exc
        body = resp["Body"]
        try:
            if int(resp.get("ContentLength") or 0) > limit:
                raise StagingError(f"s3://{bucket}/{key}: {_too_big(int(resp['ContentLength']), limit)}")
            yield body.read
        finally:
            body.close()

    return opener


def _sftp_file(sftp: Any, path: str) -> Any:
    @contextmanager
    def opener(limit: int) -> Iterator[Callable[[int], bytes]]:
        with sftp.open(path, "rb") as handle:
            handle.prefetch()
            yield handle.read

    return opener


def stage_in(
    entries: Sequence[StagingEntry],
    *,
    job_dir: JobDirectory,
    aws_conn_id: str | None = None,
    policy: StagingPolicy | None = None,
) -> list[str]:
    """Copy every ``stage_in`` entry into the job directory (created when missing); one line per file."""
    policy = _policy(policy)
    if not job_dir.lexists():
        job_dir.create()
    done: list[str] = []
    for i, entry in enumerate(entries):
        where = f"stage_in[{i}] {entry.source} -> {entry.target}"
        try:
            refused = policy.remote_problem(entry.source, stage_out=False) or job_path_problem(entry.target)
            if refused:
                raise StagingError(refused)
            target = job_path_parts(entry.target)
            src = entry.source_location
            if src.kind in ("http", "https"):
                fetched = http_get(
                    src.uri, _writer(job_dir, target, policy.max_file_bytes), policy.max_file_bytes
                )
                done.append(f"{src.uri} -> {entry.target} ({fetched} bytes)")
                continue
            for rel, size, opener in _sources(src, aws_conn_id):
                problem = job_path_problem(rel) if rel else None
                if problem:
                    raise StagingError(f"{src.uri}{rel}: {problem}")
                if size is not None and size > policy.max_file_bytes:
                    raise StagingError(f"{src.uri}{rel}: {_too_big(size, policy.max_file_bytes)}")
                parts = (*target, *job_path_parts(rel)) if rel else target
                with opener(policy.max_file_bytes) as read:
                    copied = _write_in(job_dir, parts, read, policy.max_file_bytes)
                done.append(f"{src.uri}{rel} -> {'/'.join(parts)} ({copied} bytes)")
        except StagingError as exc:
            raise StagingError(f"{where}: {exc}") from exc
        except Exception as exc:
            raise StagingError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return done


# -- stage-out -----------------------------------------------------------------------------------------


def _job_files(job_dir: JobDirectory, rel: str) -> tuple[list[str], list[str]]:
    """Regular files at or under ``rel`` (relative to ``rel``; ``[""]`` for a file) and what was
    skipped inside a directory (symlinks, special files). A symlink or special file at ``rel`` itself
    is refused."""
    st = job_dir.lstat(rel)
    if st is None:
        raise StagingError("no such file in the job directory")
    if stat.S_ISLNK(st.mode):
        raise StagingError("is a symlink in the job directory: refused, links are never followed")
    if stat.S_ISREG(st.mode):
        return [""], []
    if not stat.S_ISDIR(st.mode):
        raise StagingError("is not a regular file or directory")
    files: list[str] = []
    skipped: list[str] = []
    pending = [""]
    while pending:
        sub = pending.pop()
        for entry in job_dir.list_dir(f"{rel}/{sub}"):
            name = f"{sub}{entry.name}"
            if job_path_problem(name):
                skipped.append(f"{name} (unsafe name)")
            elif stat.S_ISDIR(entry.mode):
                pending.append(name + "/")
            elif stat.S_ISREG(entry.mode):
                files.append(name)
            else:
                skipped.append(
                    f"{name} ({'symlink, not followed' if stat.S_ISLNK(entry.mode) else 'not a file'})"
                )
    return sorted(files), sorted(skipped)


def _put(dst: Location, rel: str, src: IO[bytes], aws_conn_id: str | None, limit: int) -> str:
    if dst.kind == "s3":
        if dst.path.endswith("/") and not rel:
            raise StagingError(f"{dst.uri} is a prefix: name the object (or stage a directory)")
        key = dst.path + rel if dst.path.endswith("/") or not rel else f"{dst.path}/{rel}"
        # boto3 aborts a multipart upload that fails, and sends nothing for a small one: no partial object
        _s3(aws_conn_id).get_conn().upload_fileobj(_LimitedReader(src, limit), dst.host, key)
        return f"s3://{dst.host}/{key}"
    if dst.kind == "sftp":
        assert dst.host is not None
        path = dst.path.rstrip("/") + "/" + rel if rel else dst.path
        with _sftp(dst.host) as sftp:
            with suppress(FileNotFoundError):
                if stat.S_ISLNK(sftp.lstat(path).st_mode or 0):
                    raise StagingError(f"sftp://{dst.host}{path} is a symlink: not written through")
            try:
                with sftp.open(path, "wb") as out:
                    out.set_pipelined(True)
                    _copy(src.read, out, limit)
            except BaseException:
                with suppress(OSError):
                    sftp.remove(path)
                raise
        return f"sftp://{dst.host}{path}"
    raise StagingError(f"{dst.uri}: staging out to {dst.kind} is not supported (use s3 or sftp)")


def stage_out(
    entries: Sequence[StagingEntry],
    *,
    job_dir: JobDirectory,
    aws_conn_id: str | None = None,
    policy: StagingPolicy | None = None,
) -> list[str]:
    """Copy every ``stage_out`` entry from the job directory to its target; one line per file (and one
    per entry skipped inside a staged directory)."""
    policy = _policy(policy)
    done: list[str] = []
    for i, entry in enumerate(entries):
        where = f"stage_out[{i}] {entry.source} -> {entry.target}"
        try:
            refused = policy.remote_problem(entry.target, stage_out=True) or job_path_problem(entry.source)
            if refused:
                raise StagingError(refused)
            source = "/".join(job_path_parts(entry.source))
            files, skipped = _job_files(job_dir, source)
            for rel in files:
                path = f"{source}/{rel}" if rel else source
                handle, size = job_dir.open_result(path)
                with handle:
                    if size > policy.max_file_bytes:
                        raise StagingError(f"{path}: {_too_big(size, policy.max_file_bytes)}")
                    written = _put(entry.target_location, rel, handle, aws_conn_id, policy.max_file_bytes)
                done.append(f"{path} -> {written}")
            done.extend(f"{source}/{name}: skipped" for name in skipped)
        except StagingError as exc:
            raise StagingError(f"{where}: {exc}") from exc
        except Exception as exc:
            raise StagingError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return done


__all__ = ["StagingError", "check_staging", "http_get", "resolve_public", "stage_in", "stage_out"]
