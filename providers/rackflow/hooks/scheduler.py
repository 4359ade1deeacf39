"""BatchSchedulerHook: run a batch scheduler adapter's commands on this host or on a login node over SSH.

The adapters in :mod:`rackflow.core.schedulers` only build command lines and parse output; this hook
runs them. Without ``ssh_conn_id`` commands run here (``subprocess``); with one they run on the login
node through the ssh provider's :class:`~airflow.providers.ssh.hooks.ssh.SSHHook`, and files go over
SFTP. One :meth:`statuses` call asks about any number of jobs with one scheduler command.

Confinement, the same locally and over SSH:

* No command inherits the worker's environment (``AIRFLOW__*`` secrets, ``AIRFLOW_CONN_*``): each
  gets :meth:`BatchSchedulerHook.command_env` -- a minimal ``PATH``, the scheduler client's own
  variables found in the worker's environment (locally only, e.g. ``SLURM_CONF``) and ``scheduler_env``.
* Submitting and cancelling run as the job's Unix account:
  ``sudo -n -u ACCOUNT -- env -i -C WORKDIR PATH=... <scheduler env> <command>`` (root needs no
  sudoers entry; a non-root service account needs one, see the README's security model).
* A job directory is made mode 0700 under a base that is not world-writable, and handed to the
  account (``chown -R``) after staging in, before the submit. The service account (root) still reads
  it for stage-out and removes it in cleanup.

A job's final state and usage come from what the live queue reports or, once the job has left it,
from the scheduler's accounting (Slurm: slurmdbd through ``sacct``), never from a controller that is
allowed to forget: accounting lags the end of a job by a second or so, so :meth:`final_detail` asks
again for up to ``accounting_lag`` seconds before taking its answer.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.sdk import BaseHook
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

from rackflow.core.jobspec import JobDescription
from rackflow.core.schedulers import (
    JobDetail,
    JobState,
    JobStatus,
    SchedulerAdapter,
    SchedulerError,
    get_adapter,
)

# PATH of every scheduler command (``scheduler_env`` may replace it, e.g. for /opt/slurm/bin).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The variables each scheduler's client commands read to find their cluster: the only part of the
# worker's environment a (local) scheduler command sees.
CLIENT_ENV: dict[str, tuple[str, ...]] = {
    "slurm": ("SLURM_CONF",),
    "pbspro": ("PBS_CONF_FILE", "PBS_SERVER"),
    "lsf": ("LSF_ENVDIR", "LSF_SERVERDIR", "LSF_BINDIR", "LSF_LIBDIR"),
    "sge": ("SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT", "SGE_CLUSTER_NAME"),
}
_ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def check_account(account: str) -> str:
    """A Unix account name as ``useradd`` takes it (no option, no path, no shell text)."""
    if not _ACCOUNT_RE.match(account) or account == "root":
        raise ValueError(f"{account!r} is not an unprivileged Unix account name")
    return account


class JobDirectoryError(RuntimeError):
    """The job directory or its base is unsafe (world-writable base, not a directory...)."""


class SchedulerCommandError(RuntimeError):
    """A scheduler command failed; ``stderr`` holds what the scheduler said."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        said = (stderr.strip() or stdout.strip() or f"exit status {returncode}").splitlines()
        super().__init__(f"{argv[0]} failed ({returncode}): {' '.join(said)[:2000]}")
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class SchedulerRejectedJob(SchedulerCommandError):
    """The scheduler refused the submission (bad resources, unknown partition...): not worth a retry."""


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SubmitResult:
    scheduler_job_id: str
    job_name: str
    existing: bool
    """True when a job of that name already existed and nothing was submitted."""


class BatchSchedulerHook(BaseHook):
    """Talk to the site's batch scheduler (Slurm, PBS Pro, LSF, Grid Engine) locally or over SSH.

    :param scheduler: adapter kind: ``slurm``, ``pbspro``, ``lsf`` or ``sge``.
    :param ssh_conn_id: SSH connection of a login node; None runs the commands on this host.
    :param scheduler_env: environment of the scheduler commands on top of a minimal ``PATH`` and the client's
        own variables (e.g. ``SLURM_CONF``); nothing else of the worker's environment is passed.
    :param command_timeout: seconds before a scheduler command is abandoned.
    :param accounting_lag: seconds to keep asking the scheduler's accounting about a job that has
        ended while it has no final record of it yet.
    """

    conn_name_attr = "ssh_conn_id"
    hook_name = "Batch scheduler (local or over SSH)"

    def __init__(
        self,
        *,
        scheduler: str = "slurm",
        ssh_conn_id: str | None = None,
        scheduler_env: dict[str, str] | None = None,
        command_timeout: float = 60.0,
        accounting_lag: float = 5.0,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.adapter: SchedulerAdapter = get_adapter(scheduler)
        self.ssh_conn_id = ssh_conn_id or None
        self.scheduler_env = dict(scheduler_env or {})
        self.command_timeout = command_timeout
        self.accounting_lag = accounting_lag
        self._ssh_client: Any = None
        self._ssh_hook: Any = None
        self._root: bool | None = None
        self._lock = threading.Lock()

    # -- identity -----------------------------------------------------------------------------------

    @property
    def cluster_key(self) -> str:
        """Which cluster this hook talks to: jobs with the same key can be polled together."""
        return cluster_key(self.adapter.kind, self.ssh_conn_id, self.scheduler_env)

    # -- running commands ---------------------------------------------------------------------------

    def _ssh(self) -> Any:
        if self._ssh_client is None:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            self._ssh_hook = SSHHook(ssh_conn_id=self.ssh_conn_id, cmd_timeout=self.command_timeout)
            self._ssh_client = self._ssh_hook.get_conn()
        return self._ssh_client

    def open_sftp(self) -> Any:
        """A new paramiko ``SFTPClient`` on the login node's connection; the caller closes it."""
        if self.ssh_conn_id is None:
            raise ValueError("no ssh_conn_id: this hook works on local files")
        with self._lock:
            return self._ssh().open_sftp()

    def close(self) -> None:
        if self._ssh_client is not None:
            self._ssh_client.close()
            self._ssh_client = None

    def command_env(self) -> dict[str, str]:
        """The whole environment of a scheduler command: a minimal PATH, the scheduler client's
        variables from this process (local commands only) and ``scheduler_env``."""
        env = {"PATH": DEFAULT_PATH}
        if self.ssh_conn_id is None:
            env.update({k: os.environ[k] for k in CLIENT_ENV.get(self.adapter.kind, ()) if k in os.environ})
        env.update(self.scheduler_env)
        return env

    def command_line(
        self, argv: list[str], *, account: str | None = None, cwd: str | None = None
    ) -> list[str]:
        """``argv`` as it runs: with its whole environment in front (``env -i``) and, for ``account``,
        through ``sudo -n -u ACCOUNT``. The same line runs locally and on a login node."""
        env_argv = [
            "env",
            "-i",
            *(["-C", cwd] if cwd else []),
            *(f"{k}={v}" for k, v in self.command_env().items()),
        ]
        if account is None:
            return [*env_argv, *argv]
        return ["sudo", "-n", "-u", check_account(account), "--", *env_argv, *argv]

    def _is_root(self) -> bool:
        if self._root is None:
            if self.ssh_conn_id is None:
                self._root = os.geteuid() == 0
            else:
                self._root = self.run(["id", "-u"]).stdout.strip() == "0"
        return self._root

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        account: str | None = None,
        cwd: str | None = None,
        privileged: bool = False,
    ) -> CommandResult:
        """Run one command (an argv list); raise :class:`SchedulerCommandError` on failure if ``check``.

        :param account: run it as this Unix account (``sudo -n -u``), never as the service account.
        :param cwd: its working directory.
        :param privileged: it needs root (``chown`` of a job directory): ``sudo -n`` unless root.
        """
        if privileged and account is None and not self._is_root():
            line = ["sudo", "-n", "--", *argv]  # sudo's env_reset: no environment of ours either
        else:
            line = self.command_line(argv, account=account, cwd=cwd)
        if self.ssh_conn_id is None:
            try:
                proc = subprocess.run(
                    line,
                    env={"PATH": DEFAULT_PATH},
                    capture_output=True,
                    text=True,
                    timeout=self.command_timeout,
                )
            except FileNotFoundError as exc:
                raise SchedulerCommandError(argv, 127, "", str(exc)) from exc
            result = CommandResult(proc.returncode, proc.stdout, proc.stderr)
        else:
            command = shlex.join(line)
            with self._lock:
                client = self._ssh()
                assert self._ssh_hook is not None
                rc, out, err = self._ssh_hook.exec_ssh_client_command(
                    client, command, get_pty=False, environment=None, timeout=self.command_timeout
                )
            result = CommandResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if check and result.returncode != 0:
            raise SchedulerCommandError(argv, result.returncode, result.stdout, result.stderr)
        return result

    # -- job directories ----------------------------------------------------------------------------

    def create_job_dir(self, workdir: str) -> None:
        """Make ``workdir`` (mode 0700) under its base directory, which is made 0711 when missing and
        must not be group- or world-writable (anyone could swap a job's directory there)."""
        base = str(PurePosixPath(workdir).parent)
        self.run(["mkdir", "-p", "-m", "0711", "--", base], privileged=True)
        mode = int(self.run(["stat", "-L", "-c", "%a", "--", base]).stdout.strip() or "0", 8)
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise JobDirectoryError(
                f"job directory base {base} is group- or world-writable (mode {mode:o}); use a base "
                "only root can write, e.g. /var/lib/rackflow/jobs (mode 0711)"
            )
        self.run(["mkdir", "-p", "-m", "0700", "--", workdir], privileged=True)

    def hand_over(self, workdir: str, account: str) -> None:
        """Give the job directory and everything staged into it to ``account``, mode 0700.

        ``chown -R`` does not follow symlinks inside the directory (GNU chown: ``-R`` implies ``-P``).
        """
        self.run(["chown", "-R", "--", f"{check_account(account)}:", workdir], privileged=True)
        self.run(["chmod", "0700", "--", workdir], privileged=True)

    # -- files on the cluster side ------------------------------------------------------------------

    def make_dirs(self, path: str) -> None:
        if self.ssh_conn_id is None:
            Path(path).mkdir(parents=True, exist_ok=True)
        else:
            self.run(["mkdir", "-p", "--", path])

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        self.put_fileobj(io.BytesIO(text.encode()), path, mode)

    def put_fileobj(self, fileobj: Any, path: str, mode: int | None = None) -> None:
        """Write a binary file object to ``path`` on the cluster side (parents must exist)."""
        if self.ssh_conn_id is None:
            with open(path, "wb") as out:
                while chunk := fileobj.read(1 << 20):
                    out.write(chunk)
            if mode is not None:
                os.chmod(path, mode)
            return
        with self._lock:
            sftp = self._ssh().open_sftp()
            try:
                sftp.putfo(fileobj, path)
                if mode is not None:
                    sftp.chmod(path, mode)
            finally:
                sftp.close()

    def get_fileobj(self, path: str, fileobj: Any) -> None:
        """Copy the cluster-side file ``path`` into a binary file object."""
        if self.ssh_conn_id is None:
            with open(path, "rb") as src:
                while chunk := src.read(1 << 20):
                    fileobj.write(chunk)
            return
        with self._lock:
            sftp = self._ssh().open_sftp()
            try:
                sftp.getfo(path, fileobj)
            finally:
                sftp.close()

    def list_files(self, path: str) -> list[str]:
        """Files under ``path`` (recursively, relative to it); ``[""]`` when ``path`` is a file."""
        out = self.run(["find", path, "-type", "f"]).stdout
        root = PurePosixPath(path)
        files = []
        for line in out.splitlines():
            if not line:
                continue
            p = PurePosixPath(line)
            files.append("" if p == root else str(p.relative_to(root)))
        return sorted(files)

    def remove_tree(self, path: str) -> None:
        self.run(["rm", "-rf", "--", path], privileged=True)

    # -- scheduler operations -----------------------------------------------------------------------

    def find_by_name(self, job_name: str) -> list[str]:
        """Ids of the scheduler's jobs named ``job_name`` (finished ones it still remembers too)."""
        out = self.run(self.adapter.find_by_name_command(job_name))
        return self.adapter.parse_find_by_name_output(out.stdout, job_name)

    def submit(
        self,
        job: JobDescription,
        *,
        job_name: str,
        comment: str,
        workdir: str,
        account: str,
        find_existing: bool = True,
    ) -> SubmitResult:
        """Submit ``job`` once, as ``account``: if a job named ``job_name`` exists already, return it.

        The submit script goes to ``<workdir>/<adapter.script_name>``; ``workdir`` is created (see
        :meth:`create_job_dir`) and handed to ``account`` before the submit.
        """
        job_name = self.adapter.normalize_job_name(job_name)
        if find_existing:
            existing = self.find_by_name(job_name)
            if existing:
                self.log.info("Job %s exists already as %s; not submitting again", job_name, existing[0])
                return SubmitResult(existing[0], job_name, existing=True)
        script = self.adapter.submit_script(job, job_name, comment, workdir)
        self.create_job_dir(workdir)
        script_path = str(PurePosixPath(workdir) / self.adapter.script_name)
        self.write_text(script_path, script, 0o755)
        return self._submit(script_path, job_name, comment, workdir, account, output=True)

    def submit_script(
        self,
        script_path: str,
        *,
        job_name: str,
        workdir: str,
        account: str,
        comment: str = "",
        find_existing: bool = True,
    ) -> SubmitResult:
        """Submit a ready-made script (e.g. an S3 upload's) once, as ``account``, from ``workdir``.

        Its own directives stay, except for the options rackflow manages (job name, working directory,
        environment), which the command line overrides. ``workdir`` is handed to ``account`` first.
        """
        job_name = self.adapter.normalize_job_name(job_name)
        if find_existing:
            existing = self.find_by_name(job_name)
            if existing:
                return SubmitResult(existing[0], job_name, existing=True)
        return self._submit(script_path, job_name, comment, workdir, account, output=False)

    def _submit(
        self, script_path: str, job_name: str, comment: str, workdir: str, account: str, *, output: bool
    ) -> SubmitResult:
        self.hand_over(workdir, account)
        argv = self.adapter.managed_submit_command(
            script_path, job_name=job_name, workdir=workdir, comment=comment, output=output
        )
        result = self.run(argv, check=False, account=account, cwd=workdir)
        if result.returncode != 0:
            raise SchedulerRejectedJob(argv, result.returncode, result.stdout, result.stderr)
        job_id = self.adapter.parse_submit_output(result.stdout)
        self.log.info(
            "Submitted %s to %s as job %s (account %s)", job_name, self.cluster_key, job_id, account
        )
        return SubmitResult(job_id, job_name, existing=False)

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The state of every job in ``job_ids`` with ONE status command.

        Jobs the status command no longer lists are looked up in the scheduler's accounting, one by
        one (:meth:`final_detail`); only a job neither knows is reported FAILED with native state
        ``UNKNOWN``, and one that accounting never saw end is reported FAILED with its last state.
        """
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        result = self.run(self.adapter.status_command(ids), check=False)
        if result.returncode != 0 and not self.adapter.is_unknown_job_error(result.stderr + result.stdout):
            raise SchedulerCommandError(
                self.adapter.status_command(ids), result.returncode, result.stdout, result.stderr
            )
        found = self.adapter.parse_status_output(result.stdout) if result.returncode == 0 else {}
        for job_id in ids:
            if job_id not in found:
                found[job_id] = self._status_from_accounting(job_id)
        return {job_id: found[job_id] for job_id in ids}

    def _status_from_accounting(self, job_id: str) -> JobStatus:
        """The status of a job the live queue no longer lists, from the scheduler's accounting."""
        detail = self.final_detail(job_id)
        kind = self.adapter.kind
        if detail is None:
            return JobStatus(
                state=JobState.FAILED,
                native_state="UNKNOWN",
                reason=f"neither {kind}'s queue nor its accounting knows job {job_id}",
            )
        if not detail.status.state.is_final:
            # Gone from the queue, yet accounting never recorded an end: the job cannot still be
            # running (the controller would list it), its end was lost (e.g. a controller reset).
            return detail.status.model_copy(
                update={
                    "state": JobState.FAILED,
                    "reason": f"{kind} no longer lists job {job_id} and its accounting never recorded "
                    f"its end (last {detail.status.native_state})",
                }
            )
        return detail.status

    def get_detail(self, job_id: str) -> JobDetail | None:
        """The scheduler's accounting for one job (state, exit code, times, usage where kept), asked
        once; None when the scheduler knows no such job (or no longer)."""
        argv = self.adapter.detail_command(job_id)
        result = self.run(argv, check=False)
        if result.returncode != 0 and not self.adapter.is_unknown_job_error(result.stderr + result.stdout):
            fallback = self.adapter.fallback_detail_command(job_id, result.stderr + result.stdout)
            if fallback is not None:
                argv = fallback
                result = self.run(argv, check=False)
        if result.returncode != 0:
            if self.adapter.is_unknown_job_error(result.stderr + result.stdout):
                return None
            raise SchedulerCommandError(argv, result.returncode, result.stdout, result.stderr)
        if not result.stdout.strip():
            return None  # sacct prints nothing for an id it has no record of
        try:
            return self.adapter.parse_detail(result.stdout, job_id)
        except SchedulerError:
            if self.adapter.is_unknown_job_error(result.stdout):
                return None
            raise

    def final_detail(self, job_id: str) -> JobDetail | None:
        """:meth:`get_detail` of a job that has ended, asked again every half second while accounting
        has no final record of it yet, for up to ``accounting_lag`` seconds; then its last answer."""

        def last_answer(state: RetryCallState) -> JobDetail | None:
            assert state.outcome is not None
            return state.outcome.result()  # type: ignore[no-any-return]

        retrying = Retrying(
            retry=retry_if_result(lambda d: d is None or not d.status.state.is_final),
            stop=stop_after_delay(self.accounting_lag),
            wait=wait_fixed(0.5),
            retry_error_callback=last_answer,
        )
        return retrying(self.get_detail, job_id)  # type: ignore[no-any-return]

    def get_times(self, job_id: str) -> dict[str, str]:
        """``SubmitTime``/``StartTime``/``EndTime`` from the job's accounting, as ISO text in the
        scheduler's own time (naive: its host's local time), where known."""
        try:
            detail = self.get_detail(job_id)
        except (SchedulerCommandError, SchedulerError):
            return {}
        if detail is None:
            return {}
        times = {
            "SubmitTime": detail.submitted_at,
            "StartTime": detail.started_at,
            "EndTime": detail.ended_at,
        }
        return {key: at.isoformat() for key, at in times.items() if at is not None}

    def cancel(self, job_id: str, account: str | None = None) -> bool:
        """Cancel ``job_id`` (as the job's ``account`` when given, as owners may; else as this service
        account, which then must be a scheduler operator or root); False when the scheduler no longer
        knows it (already gone)."""
        argv = self.adapter.cancel_command(job_id)
        if self.adapter.kind == "slurm":
            # scancel exits 0 for an unknown id and says so ("Invalid job id specified") only when verbose.
            argv = [argv[0], "--verbose", *argv[1:]]
        result = self.run(argv, check=False, account=account)
        if self.adapter.is_unknown_job_error(result.stderr + result.stdout):
            return False
        if result.returncode != 0:
            raise SchedulerCommandError(argv, result.returncode, result.stdout, result.stderr)
        self.log.info("Cancelled %s job %s", self.cluster_key, job_id)
        return True


class JobFollower:
    """What a front door does, in the triggerer, when its waiting job changes state or is killed.

    A subclass is named by its import path in
    :class:`~rackflow.triggers.scheduler.BatchSchedulerJobTrigger` (``follower``) and
    built with ``follower_kwargs`` (JSON values); its methods run in a thread and may block.
    An exception is logged and the wait goes on: the job's end is what matters.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def on_state(self, job_id: str, status: JobStatus) -> None:
        """The job moved to a state that is not final (e.g. QUEUED -> ACTIVE)."""

    def on_killed(self, job_id: str, why: str) -> None:
        """The waiting task was killed and the scheduler job cancelled (as far as the scheduler knew it)."""


def cluster_key(kind: str, ssh_conn_id: str | None, scheduler_env: dict[str, str] | None = None) -> str:
    """``slurm@local`` or ``slurm@ssh:<conn>``, plus the extra environment (it can select the cluster)."""
    where = f"ssh:{ssh_conn_id}" if ssh_conn_id else "local"
    extra = ",".join(f"{k}={v}" for k, v in sorted((scheduler_env or {}).items()))
    return f"{kind}@{where}" + (f"[{extra}]" if extra else "")


__all__ = [
    "CLIENT_ENV",
    "DEFAULT_PATH",
    "BatchSchedulerHook",
    "CommandResult",
    "JobDirectoryError",
    "JobFollower",
    "SchedulerCommandError",
    "SchedulerRejectedJob",
    "SubmitResult",
    "check_account",
    "cluster_key",
]
