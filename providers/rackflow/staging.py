"""Stage a batch job's files in and out of its job directory on the cluster side.

Sources and targets (see :class:`~rackflow.core.jobspec.Location`): ``s3://bucket/key`` through the
amazon provider's ``S3Hook``; ``sftp://<ssh_conn_id>/path`` through the ssh provider; ``https://``
(download only); and local paths, which are on the cluster side (the job directory's filesystem,
reached through the :class:`~rackflow.hooks.scheduler.LocalSchedulerHook`, locally or over SFTP).
Relative local paths are relative to the job directory. An S3 key or SFTP path ending in ``/`` copies
a whole prefix/directory. Files stream through a spooled temporary file, never whole into memory.
"""

from __future__ import annotations

import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import IO, Any

from rackflow.core.jobspec import Location, StagingEntry
from rackflow.hooks.scheduler import LocalSchedulerHook

SPOOL_BYTES = 8 << 20


class StagingError(RuntimeError):
    """A file could not be staged; the message names the entry and the cause."""


@contextmanager
def _spool() -> Iterator[IO[bytes]]:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as buf:
        yield buf  # type: ignore[misc]


def _s3(aws_conn_id: str | None) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=aws_conn_id)


def _sftp(conn_id: str) -> Any:
    from airflow.providers.ssh.hooks.ssh import SSHHook

    client = SSHHook(ssh_conn_id=conn_id).get_conn()
    return client, client.open_sftp()


def _cluster_path(loc: Location, workdir: str) -> str:
    return loc.resolve_local(workdir)


def stage_in(
    entries: Sequence[StagingEntry], *, workdir: str, hook: LocalSchedulerHook, aws_conn_id: str | None = None
) -> list[str]:
    """Copy every ``stage_in`` entry into the job directory (created); returns one line per file copied."""
    hook.make_dirs(workdir)
    done: list[str] = []
    for i, entry in enumerate(entries):
        src, dst = entry.source_location, entry.target_location
        target = _cluster_path(dst, workdir)
        try:
            for rel, reader in _read(src, aws_conn_id, hook, workdir):
                path = str(PurePosixPath(target) / rel) if rel else target
                hook.make_dirs(str(PurePosixPath(path).parent))
                with _spool() as buf:
                    reader(buf)
                    buf.seek(0)
                    hook.put_fileobj(buf, path)
                done.append(f"{src.uri}{'/' + rel if rel and not src.uri.endswith('/') else rel} -> {path}")
        except StagingError:
            raise
        except Exception as exc:
            raise StagingError(f"stage_in[{i}] {entry.source} -> {entry.target}: {exc}") from exc
    return done


def stage_out(
    entries: Sequence[StagingEntry], *, workdir: str, hook: LocalSchedulerHook, aws_conn_id: str | None = None
) -> list[str]:
    """Copy every ``stage_out`` entry from the job directory to its target; returns one line per file."""
    done: list[str] = []
    for i, entry in enumerate(entries):
        src, dst = entry.source_location, entry.target_location
        source = _cluster_path(src, workdir)
        try:
            files = hook.list_files(source)
        except Exception as exc:
            raise StagingError(f"stage_out[{i}] {entry.source}: no such file in the job directory") from exc
        if not files:
            raise StagingError(f"stage_out[{i}] {entry.source}: no such file in the job directory")
        try:
            for rel in files:
                path = str(PurePosixPath(source) / rel) if rel else source
                with _spool() as buf:
                    hook.get_fileobj(path, buf)
                    buf.seek(0)
                    where = _write(dst, rel, buf, aws_conn_id, hook, workdir)
                done.append(f"{path} -> {where}")
        except Exception as exc:
            raise StagingError(f"stage_out[{i}] {entry.source} -> {entry.target}: {exc}") from exc
    return done


def _read(
    src: Location, aws_conn_id: str | None, hook: LocalSchedulerHook, workdir: str
) -> Iterator[tuple[str, Any]]:
    """(relative path, writer into a file object) for each file the source stands for."""
    if src.kind == "s3":
        s3 = _s3(aws_conn_id)
        bucket, key = src.host, src.path
        if key.endswith("/"):
            keys = s3.list_keys(bucket_name=bucket, prefix=key) or []
            if not keys:
                raise StagingError(f"{src.uri}: no objects under this prefix")
            for k in keys:
                if not k.endswith("/"):
                    yield k[len(key) :], _s3_reader(s3, bucket, k)
            return
        if not s3.check_for_key(key, bucket_name=bucket):
            raise StagingError(f"{src.uri}: no such object")
        yield "", _s3_reader(s3, bucket, key)
    elif src.kind == "sftp":
        assert src.host is not None
        client, sftp = _sftp(src.host)
        try:
            if src.path.endswith("/"):
                for name in sorted(sftp.listdir(src.path)):
                    yield name, (lambda buf, p=src.path + name: sftp.getfo(p, buf))
            else:
                yield "", (lambda buf: sftp.getfo(src.path, buf))
        finally:
            sftp.close()
            client.close()
    elif src.kind in ("https", "http"):

        def fetch(buf: IO[bytes]) -> None:
            with urllib.request.urlopen(src.uri, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
                    buf.write(chunk)

        yield "", fetch
    else:
        path = _cluster_path(src, workdir)
        for rel in hook.list_files(path):
            full = str(PurePosixPath(path) / rel) if rel else path
            yield rel, (lambda buf, p=full: hook.get_fileobj(p, buf))


def _s3_reader(s3: Any, bucket: str | None, key: str) -> Any:
    def read(buf: IO[bytes]) -> None:
        s3.get_conn().download_fileobj(bucket, key, buf)

    return read


def _write(
    dst: Location, rel: str, buf: IO[bytes], aws_conn_id: str | None, hook: LocalSchedulerHook, workdir: str
) -> str:
    if dst.kind == "s3":
        key = dst.path + rel if dst.path.endswith("/") or not rel else f"{dst.path}/{rel}"
        if dst.path.endswith("/") and not rel:
            raise StagingError(f"{dst.uri} is a prefix: name the object (or stage a directory)")
        _s3(aws_conn_id).get_conn().upload_fileobj(buf, dst.host, key)
        return f"s3://{dst.host}/{key}"
    if dst.kind == "sftp":
        assert dst.host is not None
        path = str(PurePosixPath(dst.path) / rel) if rel else dst.path
        client, sftp = _sftp(dst.host)
        try:
            sftp.putfo(buf, path)
        finally:
            sftp.close()
            client.close()
        return f"sftp://{dst.host}{path}"
    if dst.kind in ("https", "http"):
        raise StagingError(f"{dst.uri}: staging out to {dst.kind} is not supported (use s3 or sftp)")
    target = _cluster_path(dst, workdir)
    path = str(PurePosixPath(target) / rel) if rel else target
    hook.make_dirs(str(PurePosixPath(path).parent))
    hook.put_fileobj(buf, path)
    return path


__all__ = ["StagingError", "stage_in", "stage_out"]
