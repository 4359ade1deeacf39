"""Job directories of the S3 intake on the execution host: this host, or a login node over SFTP.

A :class:`JobDirectory` is what stage-in, the manifest, stage-out and submit need from the directory a
job runs in (``<job_base_dir>/<prefix>``): create it fresh, create files and sub-directories in it,
list it, read results back. :class:`LocalJobDirectory` uses this host's file system;
:class:`SftpJobDirectory` uses paramiko's ``SFTPClient`` on the login node's SSH connection (the ssh
provider's ``SSHHook``, through :class:`~rackflow.hooks.scheduler.BatchSchedulerHook`, which runs the
scheduler commands on the same node). Both keep the same rules:

* the job directory is created here, mode 0700, and must not exist before (a job never reuses an old
  directory); its base is made 0711 when missing and refused when group- or world-writable (anyone
  could swap a job's directory there). The submit then hands it to the intake's ``run_as`` account;
* files are created exclusively (``O_EXCL``; over SFTP paramiko's ``"x"`` mode, which OpenSSH's
  sftp-server passes on as ``O_CREAT|O_EXCL``, so an existing file or a symlink there is refused);
* every directory created or descended inside the job directory is ``lstat``-ed first and a symlink
  is refused, so nothing is written or read outside the job directory;
* a result is opened read-only only after ``lstat`` says regular file (locally also ``O_NOFOLLOW``);
* content moves through file objects in chunks, never whole.

``~`` in a path is the execution host's user's home: the worker's locally, the remote user's over SFTP
(``sftp.normalize(".")``, where OpenSSH starts the session).
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from rackflow.core.s3_protocol import EntryStat, UnsafeKeyError, validate_job_prefix

if TYPE_CHECKING:
    from rackflow.hooks.scheduler import BatchSchedulerHook

_NS = 1_000_000_000
BASE_MODE = 0o711
JOB_DIR_MODE = 0o700


class UnsafeBaseError(OSError):
    """A job directory base that others may write to."""


def check_base_mode(base: str, mode: int) -> None:
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeBaseError(
            errno.EPERM,
            f"job directory base is group- or world-writable (mode {stat.S_IMODE(mode):o}); "
            "use one only its owner can write (0711)",
            base,
        )


def job_dir_path(base_dir: str | Path, prefix: str) -> str:
    """``<base>/<prefix>`` before ``~`` is expanded (that happens on the execution host)."""
    return posixpath.join(str(base_dir), validate_job_prefix(prefix))


class JobDirectory(ABC):
    """One job's directory on the execution host. Relative paths are POSIX, ``parts`` are components
    already checked by :func:`~rackflow.core.s3_protocol.key_parts`. Use as a context manager (closes
    the connection, if any)."""

    path: str
    """Absolute path on the execution host, ``~`` expanded."""
    where: str
    """``local`` or the SSH connection id, for messages."""

    @abstractmethod
    def lexists(self) -> bool:
        """Whether anything (a symlink too) is at :attr:`path`."""

    @abstractmethod
    def create(self) -> None:
        """Create the missing parents (the base: 0711) and the job directory itself (0700);
        FileExistsError if it is there, :class:`UnsafeBaseError` if the base is group/world-writable."""

    @abstractmethod
    def make_dirs(self, parts: Sequence[str]) -> None:
        """Create ``parts`` as nested directories inside; UnsafeKeyError on a symlink on the way."""

    @abstractmethod
    def open_new(self, parts: Sequence[str]) -> contextlib.AbstractContextManager[BinaryIO]:
        """A new file at ``parts`` (parents created as by :meth:`make_dirs`) open for writing; an
        existing file or symlink there raises OSError."""

    @abstractmethod
    def is_regular_file(self, rel: str) -> bool:
        """Whether ``rel`` is a regular file (not through a final symlink)."""

    @abstractmethod
    def list_dir(self, rel_dir: str) -> list[EntryStat]:
        """The entries of directory ``rel_dir`` (``""`` or ``"sub/dir/"``) as lstat sees them; OSError
        when it cannot be listed or is not a directory. A :data:`~rackflow.core.s3_protocol.DirLister`."""

    @abstractmethod
    def open_result(self, rel: str) -> tuple[BinaryIO, int]:
        """``rel`` open read-only and its size; OSError unless it is a regular file reached without a
        symlink. The caller closes it."""

    def read_tail(self, rel: str, max_bytes: int) -> tuple[bytes, int]:
        """The last ``max_bytes`` of the regular file ``rel`` and its size, opened as
        :meth:`open_result` does (no symlink anywhere on the way), read in chunks from where the tail
        starts: never more than ``max_bytes`` in memory, whatever the file's size."""
        handle, size = self.open_result(rel)
        with handle:
            start = max(0, size - max_bytes)
            handle.seek(start)
            chunks: list[bytes] = []
            remaining = size - start  # a file still growing is read up to the size it had
            while remaining > 0:
                chunk = handle.read(min(1 << 16, remaining))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        return b"".join(chunks), size

    @abstractmethod
    def lstat(self, rel: str) -> EntryStat | None:
        """``rel`` as lstat sees it (a final symlink is itself); None when absent. OSError (or
        UnsafeKeyError) when a directory on the way is a symlink or not a directory."""

    @abstractmethod
    def remove(self, parts: Sequence[str]) -> None:
        """Unlink the file (or symlink: never its target) at ``parts``; nothing when it is absent."""

    def close(self) -> None:  # noqa: B027
        """Release the connection, if any (a local directory holds none)."""

    def __enter__(self) -> JobDirectory:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __str__(self) -> str:
        return self.path if self.where == "local" else f"{self.where}:{self.path}"


def open_job_dir(
    path: str | Path, ssh_conn_id: str | None = None, *, scheduler_hook: BatchSchedulerHook | None = None
) -> JobDirectory:
    """The job directory at ``path`` on this host (``ssh_conn_id`` None) or on that login node
    (sharing ``scheduler_hook``'s SSH connection when given)."""
    if ssh_conn_id:
        return SftpJobDirectory(str(path), ssh_conn_id, scheduler_hook=scheduler_hook)
    return LocalJobDirectory(path)


def as_job_directory(job_dir: Path | JobDirectory) -> JobDirectory:
    return LocalJobDirectory(job_dir) if isinstance(job_dir, Path) else job_dir


# -- this host ----------------------------------------------------------------------------------------


class LocalJobDirectory(JobDirectory):
    """A job directory on this host's file system.

    Every access walks from the job directory down with one ``openat`` per component
    (``O_DIRECTORY|O_NOFOLLOW``), so no path inside it is ever resolved through a symlink, even one
    planted between a check and the use. The job directory itself must not be a symlink; its parents
    are the site's configuration and may be.
    """

    where = "local"

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path).expanduser()
        self.path = str(self._path)

    def lexists(self) -> bool:
        return self._path.exists() or self._path.is_symlink()

    def create(self) -> None:
        base = self._path.parent
        if not base.exists():
            base.mkdir(parents=True, exist_ok=True)
            base.chmod(BASE_MODE)
        check_base_mode(str(base), base.stat().st_mode)
        self._path.mkdir(mode=JOB_DIR_MODE)  # FileExistsError: a job of this name ran here before
        self._path.chmod(JOB_DIR_MODE)  # whatever the umask

    @contextlib.contextmanager
    def _dir_fd(self, parts: Sequence[str], *, create: bool = False) -> Iterator[int]:
        """An fd of the directory ``parts`` inside, reached without following a symlink."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path, flags)
        try:
            for depth, part in enumerate(parts, 1):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    child = os.open(part, flags, dir_fd=fd)
                except OSError as err:
                    with contextlib.suppress(OSError):
                        if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                            raise UnsafeKeyError(
                                "/".join(parts), f"{'/'.join(parts[:depth])} is a symlink"
                            ) from err
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def make_dirs(self, parts: Sequence[str]) -> None:
        with self._dir_fd(parts, create=True):
            pass

    @contextlib.contextmanager
    def open_new(self, parts: Sequence[str]) -> Iterator[BinaryIO]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._dir_fd(parts[:-1], create=True) as parent:
            fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            yield out

    def lstat(self, rel: str) -> EntryStat | None:
        parts = [p for p in rel.split("/") if p]
        if not parts:
            st = os.stat(self._path, follow_symlinks=False)
            return EntryStat("", st.st_mode, st.st_size, st.st_mtime_ns)
        try:
            with self._dir_fd(parts[:-1]) as parent:
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:  # the file, or a directory on the way, is absent
            return None
        return EntryStat(parts[-1], st.st_mode, st.st_size, st.st_mtime_ns)

    def is_regular_file(self, rel: str) -> bool:
        try:
            st = self.lstat(rel)
        except OSError:
            return False
        return st is not None and stat.S_ISREG(st.mode)

    def list_dir(self, rel_dir: str) -> list[EntryStat]:
        with self._dir_fd([p for p in rel_dir.split("/") if p]) as fd:
            entries: list[EntryStat] = []
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError as err:
                        entries.append(EntryStat(entry.name, 0, 0, 0, f"cannot stat: {err.strerror}"))
                        continue
                    entries.append(EntryStat(entry.name, st.st_mode, st.st_size, st.st_mtime_ns))
            return entries

    def open_result(self, rel: str) -> tuple[BinaryIO, int]:
        parts = [p for p in rel.split("/") if p]
        with self._dir_fd(parts[:-1]) as parent:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", rel)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size

    def remove(self, parts: Sequence[str]) -> None:
        with self._dir_fd(parts[:-1]) as parent, contextlib.suppress(FileNotFoundError):
            os.unlink(parts[-1], dir_fd=parent)


# -- a login node over SFTP -----------------------------------------------------------------------


def remote_path(path: str, home: str) -> str:
    """``path`` on the remote side: ``~``/``~/x`` and relative paths from the remote ``home``."""
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    elif path.startswith("~"):
        raise ValueError(f"{path!r}: only the connecting user's '~' is supported, not '~user'")
    elif not path.startswith("/"):
        path = posixpath.join(home, path)
    return posixpath.normpath(path)


class SftpJobDirectory(JobDirectory):
    """A job directory on a login node, through SFTP on the SSH connection ``ssh_conn_id``.

    SFTP (v3) carries whole-second modification times, so a staged file is back-dated by one second
    after it is written: a job that rewrites it with the same size within that second still changes
    what the manifest recorded.

    :param path: the directory; ``~`` and relative paths are from the remote user's home.
    :param ssh_conn_id: Airflow SSH connection of the login node.
    :param scheduler_hook: a connected hook to share (default: a new one on ``ssh_conn_id``).
    """

    def __init__(
        self, path: str, ssh_conn_id: str, *, scheduler_hook: BatchSchedulerHook | None = None
    ) -> None:
        from rackflow.hooks.scheduler import BatchSchedulerHook

        self.where = ssh_conn_id
        self._own_hook = scheduler_hook is None
        self._hook = scheduler_hook or BatchSchedulerHook(ssh_conn_id=ssh_conn_id)
        try:
            self._sftp: Any = self._hook.open_sftp()
            try:
                self.home = str(self._sftp.normalize("."))
                self.path = remote_path(path, self.home)
            except BaseException:
                self._sftp.close()
                raise
        except BaseException:
            if self._own_hook:
                self._hook.close()
            raise

    def close(self) -> None:
        self._sftp.close()
        if self._own_hook:
            self._hook.close()

    def _join(self, rel: str | Sequence[str]) -> str:
        parts = rel.split("/") if isinstance(rel, str) else list(rel)
        return posixpath.join(self.path, *[p for p in parts if p])

    def _lstat(self, path: str) -> Any:
        """The path's SFTP attributes without following a final symlink; None when it is absent."""
        try:
            return self._sftp.lstat(path)
        except FileNotFoundError:
            return None

    def _stat(self, path: str) -> Any:
        try:
            return self._sftp.stat(path)
        except FileNotFoundError:
            return None

    def lexists(self) -> bool:
        return self._lstat(self.path) is not None

    def _make_parents(self, path: str) -> None:
        """``mkdir -p`` of the configured base: symlinks there (``/home -> /data/home``) are the site's."""
        st = self._stat(path)
        if st is not None:
            if not stat.S_ISDIR(st.st_mode or 0):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            return
        parent = posixpath.dirname(path)
        if parent != path:
            self._make_parents(parent)
        try:
            self._sftp.mkdir(path, 0o755)
        except OSError:
            st = self._stat(path)  # created meanwhile by another job's stage-in
            if st is None or not stat.S_ISDIR(st.st_mode or 0):
                raise

    def create(self) -> None:
        base = posixpath.dirname(self.path)
        if self._stat(base) is None:
            self._make_parents(base)
            self._sftp.chmod(base, BASE_MODE)
        check_base_mode(base, self._sftp.stat(base).st_mode or 0)
        try:
            self._sftp.mkdir(self.path, JOB_DIR_MODE)
        except OSError as err:
            # OpenSSH answers an existing path with a generic failure; tell it apart by looking.
            if self._lstat(self.path) is not None:
                raise FileExistsError(errno.EEXIST, "job directory exists", str(self)) from err
            raise
        self._sftp.chmod(self.path, JOB_DIR_MODE)  # whatever the server's umask

    def make_dirs(self, parts: Sequence[str]) -> None:
        current = self.path
        for depth, part in enumerate(parts, 1):
            current = posixpath.join(current, part)
            st = self._lstat(current)
            if st is None:
                with contextlib.suppress(OSError):  # lost a race: the lstat below decides
                    self._sftp.mkdir(current, 0o755)
                st = self._lstat(current)
            if st is not None and stat.S_ISLNK(st.st_mode or 0):
                raise UnsafeKeyError("/".join(parts), f"{'/'.join(parts[:depth])} is a symlink")
            if st is None or not stat.S_ISDIR(st.st_mode or 0):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", current)

    @contextlib.contextmanager
    def open_new(self, parts: Sequence[str]) -> Iterator[BinaryIO]:
        self.make_dirs(parts[:-1])
        target = self._join(parts)
        try:
            # "x" is O_CREAT|O_EXCL on the server (it adds no write flag: "w" does).
            handle = self._sftp.open(target, "wx")
        except OSError as err:
            if self._lstat(target) is not None:
                raise FileExistsError(errno.EEXIST, "file or symlink exists", target) from err
            raise
        with handle:
            handle.set_pipelined(True)  # stream writes without a round trip per chunk
            yield cast(BinaryIO, handle)
            handle.flush()
            written = handle.stat()  # after the writes: the server handles requests in order
            handle.utime((written.st_atime or written.st_mtime, written.st_mtime - 1))

    def _check_parents(self, rel: str) -> None:
        """Refuse ``rel`` when a directory on the way to it is not a real directory (a symlink)."""
        current = self.path
        for part in rel.split("/")[:-1]:
            current = posixpath.join(current, part)
            st = self._lstat(current)
            if st is None or not stat.S_ISDIR(st.st_mode or 0):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory (or a symlink)", current)

    def is_regular_file(self, rel: str) -> bool:
        st = self._lstat(self._join(rel))
        return st is not None and stat.S_ISREG(st.st_mode or 0)

    def list_dir(self, rel_dir: str) -> list[EntryStat]:
        path = self._join(rel_dir)
        self._check_parents(rel_dir.rstrip("/"))
        st = self._lstat(path)
        if st is None or not stat.S_ISDIR(st.st_mode or 0):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory (or a symlink)", path)
        try:
            attrs = self._sftp.listdir_attr(path)
        except UnicodeDecodeError as err:  # paramiko decodes names as strict UTF-8
            raise OSError(errno.EILSEQ, "a name in it is not valid UTF-8", path) from err
        # OpenSSH's sftp-server lstat()s each entry; open_result() lstat()s again before reading.
        return [EntryStat(a.filename, a.st_mode or 0, a.st_size or 0, (a.st_mtime or 0) * _NS) for a in attrs]

    def lstat(self, rel: str) -> EntryStat | None:
        rel = rel.strip("/")
        current = self.path
        for part in rel.split("/")[:-1]:
            current = posixpath.join(current, part)
            st = self._lstat(current)
            if st is None:
                return None
            if stat.S_ISLNK(st.st_mode or 0):
                raise UnsafeKeyError(rel, f"{current} is a symlink")
            if not stat.S_ISDIR(st.st_mode or 0):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", current)
        st = self._lstat(self._join(rel))
        if st is None:
            return None
        return EntryStat(rel.rpartition("/")[2], st.st_mode or 0, st.st_size or 0, (st.st_mtime or 0) * _NS)

    def remove(self, parts: Sequence[str]) -> None:
        self._check_parents("/".join(parts))
        with contextlib.suppress(FileNotFoundError):
            self._sftp.remove(self._join(parts))  # SFTP REMOVE unlinks a symlink itself

    def open_result(self, rel: str) -> tuple[BinaryIO, int]:
        self._check_parents(rel)
        path = self._join(rel)
        st = self._lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode or 0):
            raise OSError(errno.EINVAL, "not a regular file (lstat)", path)
        handle = self._sftp.open(path, "r")
        opened = handle.stat()
        if not stat.S_ISREG(opened.st_mode or 0):
            handle.close()
            raise OSError(errno.EINVAL, "not a regular file once opened", path)
        return cast(BinaryIO, handle), int(opened.st_size or 0)


__all__ = [
    "JobDirectory",
    "LocalJobDirectory",
    "SftpJobDirectory",
    "UnsafeBaseError",
    "as_job_directory",
    "job_dir_path",
    "open_job_dir",
    "remote_path",
]
