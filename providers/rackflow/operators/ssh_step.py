"""Run one jobnet step (or its revert) on a server over SSH, or on the worker itself.

Built on the ssh provider's hooks, after its ``SSHRemoteJobOperator`` (detached job, job folder,
exit-code file, deferrable trigger, kill by process group), with what environment building needs:

* **The worker slot is free while the step runs.** The step starts detached on the server in its own
  session (``setsid``), its output and exit code go to files in a job folder, and the task defers to
  :class:`~rackflow.triggers.ssh_step.SSHStepTrigger`, which follows it from the triggerer (every
  step on a server shares one SSH connection and one status command per interval). When the step
  has ended the trigger ends the task itself (Airflow's end-from-trigger: it logs the output tails,
  removes the job folder and succeeds or fails the task with the result as XCom), so no try resumes
  on a worker and none can lose Airflow 3.3's defer-exit race (apache/airflow#72716); only a trigger
  that lost the server (``error``) resumes the task, in :meth:`SSHStepOperator.execute_complete`.
  The job folder is named after the task instance (not its try), so a try that starts again while
  its step is still on the server (a task cleared while deferred) re-attaches to it instead of
  running it twice; the folder is removed once the result is recorded, so a retry after a failure
  (Airflow retries a task its trigger ended failed) starts afresh.
* **No injection from params, no params in ``ps``.** The environment (params included) is written as
  ``export NAME='value'`` lines (:func:`shlex.quote`) in quoted here-documents of a script sent on the
  standard input of ``sh -s``; the step's shell reads them from a 0600 file it removes first thing.
  No process's command line carries a value; nothing a user passes is formatted into command text.
* **The remote process group dies with the step**: at ``step_timeout`` (the trigger kills it), when
  the run or task is marked failed while deferred (the trigger's ``on_kill``: unless a later try of
  a cleared task takes the step over within 12 s), on any error before
  deferring, and in :meth:`SSHStepOperator.on_kill` (a step on the worker). ``SIGTERM``, then
  ``SIGKILL`` after ``kill_grace``.
* **A result for the report**: exit code, duration, start/end times and stdout/stderr tails go to
  XCom under ``step_result`` on success *and* failure (and as the return value on success).
"""

from __future__ import annotations

import enum
import os
import re
import secrets
import selectors
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from rackflow import settings
from rackflow.core.jobnet import ParamSpec, step_env
from rackflow.core.jobnet.remote import (
    ATTACHED,
    KILL_GRACE_SECONDS,
    RESULT_KEY,
    STARTED,
    build_cleanup_command,
    build_kill_command,
    build_step_script,
    output_lines,
    step_result,
)

if TYPE_CHECKING:
    import paramiko
    from airflow.providers.ssh.hooks.ssh import SSHHook
    from airflow.sdk.definitions.context import Context


class _Default(enum.Enum):
    """Marks an argument left to ``[rackflow]`` configuration."""

    SSH_CONN_ID = "jobnet_ssh_conn_id"


SETTING_SSH_CONN_ID = _Default.SSH_CONN_ID
"""``ssh_conn_id`` default: ``[rackflow] jobnet_ssh_conn_id`` (``ssh_default``) when the task is made."""
REMOTE_BASE_DIR = "/tmp/rackflow-steps"
_TAIL_LINES = 50
_UNSAFE = re.compile(r"[^A-Za-z0-9._:+=@,-]")


class StepTimeout(AirflowException):
    """The step ran longer than its timeout; its process group was killed."""


class StepFailed(AirflowException):
    """The step's command exited non-zero."""


def _tail(lines: Sequence[str]) -> str:
    return "\n".join(lines)


def step_job_dir(base_dir: str, job_id: str) -> str:
    return f"{base_dir.rstrip('/')}/{job_id}"


def task_job_id(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The job folder name of one task instance (all its tries): readable, one path component."""
    parts = [dag_id, run_id, task_id] + ([str(map_index)] if map_index >= 0 else [])
    return "-".join(_UNSAFE.sub("_", part) for part in parts)


def exec_with_stdin(
    client: paramiko.SSHClient, command: str, stdin: str, timeout: float
) -> tuple[int, str, str]:
    """Run ``command`` on the server with ``stdin`` as its standard input; (exit status, out, err)."""
    transport = client.get_transport()
    if transport is None:
        raise AirflowException("SSH transport is not open")
    channel = transport.open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        channel.exec_command(command)
        channel.sendall(stdin.encode("utf-8"))
        channel.shutdown_write()
        out = channel.makefile("rb").read()
        err = channel.makefile_stderr("rb").read()
        return int(channel.recv_exit_status()), out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    finally:
        channel.close()


class _LocalRun:
    """A step on the worker itself: ``sh -s`` reading the step script from its standard input (so the
    environment is not on its command line), in its own session; output chunks as they arrive."""

    def __init__(self, script: str) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-s"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        # sh reads the whole { ... } group before it runs anything, so this write cannot block on output.
        self.proc.stdin.write(script.encode("utf-8"))
        self.proc.stdin.close()
        self.selector = selectors.DefaultSelector()
        for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ, data=name)
        self.open = 2

    def read(self, timeout: float) -> list[tuple[str, bytes]]:
        chunks: list[tuple[str, bytes]] = []
        if not self.open:
            time.sleep(min(timeout, 0.05))
            return chunks
        for key, _ in self.selector.select(timeout):
            data = key.fileobj.read()  # type: ignore[union-attr]
            if data:
                chunks.append((key.data, data))
            elif data == b"":
                self.selector.unregister(key.fileobj)
                self.open -= 1
        return chunks

    @property
    def finished(self) -> bool:
        return not self.open and self.proc.poll() is not None

    def exit_code(self) -> int:
        return int(self.proc.wait())

    def close(self) -> None:
        self.selector.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class SSHStepOperator(BaseOperator):
    """Run one jobnet step (a command or a shipped script) on a server over SSH, or on the worker.

    Over SSH the step runs detached on the server and the task defers while it runs (see the module
    docstring); on the worker (``local``) the task runs it in the foreground and streams its output.

    :param ssh_conn_id: Airflow SSH connection of the server; ``None`` runs the step on the worker
        itself (the jobnet's ``local`` server). Ignored when ``launch_task_id`` binds the server.
    :param remote_host: Host to reach instead of the connection's (templated).
    :param command: Shell text to run (not templated: ``${#x}`` is shell, not Jinja).
    :param script: Path on the worker of a script to ship to the server and run there (its shebang
        decides the interpreter).
    :param env: Environment of the step, sent as quoted ``export`` lines on the shell's stdin.
    :param jobnet_params: The jobnet's param declarations; the run's values of them (from
        ``params``) reach the step as ``RACKFLOW_PARAM_<NAME>`` variables.
    :param workdir: Folder on the server to run in.
    :param step_timeout: Seconds after which the step's process group is killed and the task fails.
    :param step_id: Jobnet step id, for the report (defaults to the task id).
    :param server_name: The jobnet's name of the server, for the report.
    :param launch_task_id: Task whose XCom is a list of ``{"name", "address"}`` (a VM launch); the
        step runs on the ``launch_index``-th of them.
    :param launch_index: Which launched server.
    :param server_connections: VM name -> SSH connection id; key ``"*"`` is the default
        (``[rackflow] jobnet_ssh_conn_id``). The VM's name is exported as ``RACKFLOW_SERVER``, its address as
        ``RACKFLOW_SERVER_ADDRESS``.
    :param use_launch_address: Connect to the launched VM's address instead of the connection's host.
    :param revert_of: Run as the revert of this step id: only when ``plan_task_id``'s plan lists it,
        otherwise the task is skipped.
    :param plan_task_id: Task whose XCom is the revert plan (``{"groups": [[step ids]]}``).
    :param remote_base_dir: Folder on the server for the per-task job folders.
    :param shell: Shell for the step body (falls back to ``sh`` where it is missing).
    :param kill_grace: Seconds between SIGTERM and SIGKILL of the process group.
    :param conn_timeout: SSH connection timeout in seconds.
    :param poll_interval: Seconds between the trigger's status polls of the server (shared by every
        step deferred on it); default ``[rackflow] ssh_step_poll_interval``.
    """

    template_fields: Sequence[str] = ("ssh_conn_id", "remote_host")
    ui_color = "#e8f4e4"

    def __init__(
        self,
        *,
        ssh_conn_id: str | _Default | None = SETTING_SSH_CONN_ID,
        remote_host: str | None = None,
        command: str | None = None,
        script: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        jobnet_params: Mapping[str, ParamSpec] | None = None,
        workdir: str | None = None,
        step_timeout: float | None = None,
        step_id: str | None = None,
        server_name: str | None = None,
        launch_task_id: str | None = None,
        launch_index: int = 0,
        server_connections: Mapping[str, str] | None = None,
        use_launch_address: bool = False,
        revert_of: str | None = None,
        plan_task_id: str | None = None,
        remote_base_dir: str = REMOTE_BASE_DIR,
        shell: str = "bash",
        kill_grace: float = KILL_GRACE_SECONDS,
        conn_timeout: int | None = None,
        poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        if step_timeout is not None and "execution_timeout" not in kwargs:
            # A backstop for the worker's own phases (a local step's whole run; over SSH the start and
            # the end): the step's timeout itself is enforced by the operator or the trigger.
            kwargs["execution_timeout"] = timedelta(seconds=step_timeout + kill_grace + 60)
        super().__init__(**kwargs)
        if (command is None) == (script is None):
            raise ValueError(f"{self.task_id}: needs exactly one of command or script")
        if revert_of is not None and plan_task_id is None:
            raise ValueError(f"{self.task_id}: a revert needs plan_task_id")
        if isinstance(ssh_conn_id, _Default):
            ssh_conn_id = settings.jobnet_ssh_conn_id()
        self.ssh_conn_id = ssh_conn_id
        self.remote_host = remote_host
        self.command = command
        self.script = str(script) if script is not None else None
        self.env = dict(env or {})
        self.jobnet_params = dict(jobnet_params or {})
        self.workdir = workdir
        self.step_timeout = step_timeout
        self.step_id = step_id or self.task_id
        self.server_name = server_name or ("local" if ssh_conn_id is None else ssh_conn_id)
        self.launch_task_id = launch_task_id
        self.launch_index = launch_index
        self.server_connections = dict(server_connections or {})
        self.use_launch_address = use_launch_address
        self.revert_of = revert_of
        self.plan_task_id = plan_task_id
        self.remote_base_dir = remote_base_dir
        self.shell = shell
        self.kill_grace = kill_grace
        self.conn_timeout = conn_timeout
        self.poll_interval = poll_interval
        self._job_dir: str | None = None
        self._local_run: _LocalRun | None = None

    # --- where the step runs ---------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.ssh_conn_id is None and self.launch_task_id is None

    def _bind_launched(self, context: Context, env: dict[str, str]) -> None:
        """Resolve a launched server: its name and address from the launch XCom, its connection by name."""
        if self.launch_task_id is None:
            return
        launched = context["ti"].xcom_pull(task_ids=self.launch_task_id)
        if not launched or len(launched) <= self.launch_index:
            raise AirflowException(
                f"launch task {self.launch_task_id!r} produced {len(launched or [])} servers; "
                f"step {self.step_id!r} needs server #{self.launch_index}"
            )
        server = launched[self.launch_index]
        name, address = str(server["name"]), _first_address(server)
        self.ssh_conn_id = self.server_connections.get(
            name, self.server_connections.get("*", settings.jobnet_ssh_conn_id())
        )
        if self.use_launch_address and address:
            self.remote_host = address
        env["RACKFLOW_SERVER"] = name
        env["RACKFLOW_SERVER_ADDRESS"] = address
        self.log.info(
            "Server %s = launched VM %s (%s) via connection %s",
            self.server_name,
            name,
            address,
            self.ssh_conn_id,
        )

    def _hook(self) -> SSHHook:
        from airflow.providers.ssh.hooks.ssh import SSHHook

        return SSHHook(
            ssh_conn_id=self.ssh_conn_id,
            remote_host=self.remote_host or "",
            conn_timeout=self.conn_timeout,
            conn_retry_attempts=5,
        )

    def _ssh(self, command: str, stdin: str = "", timeout: float = 60) -> tuple[int, str, str]:
        """One command on the step's server, on a connection of its own."""
        with self._hook().get_conn() as client:
            return exec_with_stdin(client, command, stdin, timeout)

    # --- execution -------------------------------------------------------------------------------

    def _revert_planned(self, context: Context) -> bool:
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id) or {}
        groups = plan.get("groups", [])
        return any(self.revert_of in group for group in groups)

    def _base_result(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "server": self.server_name,
            "host": "local" if self.is_local else (self.remote_host or self.ssh_conn_id),
            "revert": self.revert_of is not None,
        }

    def execute(self, context: Context) -> dict[str, Any]:
        if self.revert_of is not None and not self._revert_planned(context):
            raise AirflowSkipException(f"step {self.revert_of!r} is not to be reverted in this run")
        env = dict(self.env)
        if self.jobnet_params:
            values = {name: context["params"].get(name) for name in self.jobnet_params}
            env = step_env(_Env(env), self.jobnet_params, values)
        self._bind_launched(context, env)
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        job_id = task_job_id(ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else map_index)
        if self.is_local:
            job_id = f"{job_id}-{ti.try_number}-{secrets.token_hex(4)}"
        self._job_dir = step_job_dir(self.remote_base_dir, job_id)
        script_text = Path(self.script).read_text(encoding="utf-8") if self.script else None
        remote = build_step_script(
            command=self.command,
            script_text=script_text,
            env=env,
            workdir=self.workdir,
            job_dir=self._job_dir,
            shell=self.shell,
            detach=not self.is_local,
            attempt=ti.try_number,
        )
        where = "the worker" if self.is_local else f"{self.server_name} ({self.ssh_conn_id})"
        self.log.info("Step %s on %s; env: %s", self.step_id, where, ", ".join(sorted(env)) or "(none)")
        if self.is_local:
            return self._execute_local(ti, remote)
        try:
            code, out, err = self._ssh("sh -s", remote)
        except BaseException:
            self._kill_remote(reason="the start did not report back")
            raise
        if code != 0 or out.strip() not in (STARTED, ATTACHED):
            raise AirflowException(
                f"step {self.step_id!r} did not start on {where}: exit {code}: {err.strip()[-2000:]}"
            )
        if out.strip() == ATTACHED:
            self.log.info(
                "Step %s is already running in %s (an earlier try): following it", self.step_id, self._job_dir
            )
        else:
            self.log.info("Step %s started detached in %s; deferring", self.step_id, self._job_dir)
        from rackflow.triggers.ssh_step import SSHStepTrigger

        self.defer(
            trigger=SSHStepTrigger(
                ssh_conn_id=self.ssh_conn_id,
                remote_host=self.remote_host,
                job_dir=self._job_dir,
                step_timeout=self.step_timeout,
                poll_interval=(
                    self.poll_interval
                    if self.poll_interval is not None
                    else settings.poll_interval("ssh_step", 5.0)
                ),
                kill_grace=self.kill_grace,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=-1 if map_index is None else map_index,
                try_number=ti.try_number,
                end_from_trigger=settings.ssh_step_end_from_trigger(),
                result_base=self._base_result(),
                server_name=self.server_name,
            ),
            method_name="execute_complete",
        )
        raise AssertionError("unreachable: defer() raises")  # pragma: no cover

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> dict[str, Any]:
        """The trigger's event, when the task resumes: the trigger lost the server (``error``), or,
        under an inline runner (``dag.test()``, where the trigger does not end the task), the step
        has ended. Record the result, remove the job folder, fail the task unless the step exited 0."""
        if isinstance(event, str):
            # A runner resumed a task its trigger ended (the event is the end state; the trigger
            # recorded the result and removed the folder): end it the same way.
            if not event.endswith("success"):
                raise StepFailed(f"step {self.step_id!r}: the trigger ended the task: {event}")
            return context["ti"].xcom_pull(task_ids=self.task_id, key=RESULT_KEY) or {}
        status = str(event.get("status"))
        self.ssh_conn_id = event.get("ssh_conn_id", self.ssh_conn_id)
        self.remote_host = event.get("remote_host", self.remote_host)
        self._job_dir = str(event["job_dir"])
        result = step_result(self._base_result(), event)
        stdout, stderr = output_lines(self.server_name, result)
        for line in stdout:
            self.log.info("%s", line)
        for line in stderr:
            self.log.warning("%s", line)
        ti = context["ti"]
        try:
            ti.xcom_push(key=RESULT_KEY, value=result)
        except Exception:
            self.log.warning("Could not record the step result in XCom", exc_info=True)
        if status == "error":
            # The server could not be reached for a while; the step may still run. A retry of this task
            # re-attaches to it; the last try kills it.
            if ti.try_number > (self.retries or 0):
                self._kill_remote(reason="the last try lost the server")
                self._cleanup()
            raise AirflowException(f"step {self.step_id!r}: {event.get('message')}")
        self._cleanup()
        if status == "timeout":
            raise StepTimeout(f"step {self.step_id!r} timed out after {self.step_timeout:g} s; killed")
        if status != "done":
            raise StepFailed(f"step {self.step_id!r}: {event.get('message')}")
        if result["exit_code"] != 0:
            raise StepFailed(f"step {self.step_id!r} failed with exit code {result['exit_code']}")
        self.log.info("Step %s succeeded in %.1f s", self.step_id, result["duration_s"] or 0)
        return result

    def _cleanup(self) -> None:
        """Remove the job folder (best effort: a folder left behind only makes a retry report it)."""
        if self._job_dir is None:
            return
        try:
            self._ssh(build_cleanup_command(self._job_dir))
        except Exception:
            self.log.warning("Could not remove %s on %s", self._job_dir, self.server_name, exc_info=True)

    def _execute_local(self, ti: Any, remote: str) -> dict[str, Any]:
        started_at = time.time()
        start = time.monotonic()
        result: dict[str, Any] = {**self._base_result(), "started_at": started_at}
        tails: dict[str, deque[str]] = {
            "stdout": deque(maxlen=_TAIL_LINES),
            "stderr": deque(maxlen=_TAIL_LINES),
        }
        timed_out = False
        exit_code: int | None = None
        error: BaseException | None = None
        try:
            exit_code, timed_out = self._run_local(remote, tails, start)
        except BaseException as err:
            error = err
            self._kill_remote(reason=f"{type(err).__name__} while waiting")
        finally:
            result.update(
                exit_code=exit_code,
                duration_s=round(time.monotonic() - start, 3),
                finished_at=time.time(),
                timed_out=timed_out,
                stdout_tail=_tail(tails["stdout"]),
                stderr_tail=_tail(tails["stderr"]),
            )
            try:
                ti.xcom_push(key=RESULT_KEY, value=result)
            except Exception:
                self.log.warning("Could not record the step result in XCom", exc_info=True)
        if error is not None:
            raise error
        if timed_out:
            raise StepTimeout(f"step {self.step_id!r} timed out after {self.step_timeout:g} s; killed")
        if exit_code != 0:
            raise StepFailed(f"step {self.step_id!r} failed with exit code {exit_code}")
        self.log.info("Step %s succeeded in %.1f s", self.step_id, result["duration_s"])
        return result

    def _pump(self, run: _LocalRun, tails: dict[str, deque[str]], start: float) -> tuple[int | None, bool]:
        """Stream output to the log until the step ends or its timeout passes (then kill, drain)."""
        partial = {"stdout": b"", "stderr": b""}
        deadline = None if self.step_timeout is None else start + self.step_timeout
        timed_out = False
        killed_at: float | None = None
        while not run.finished:
            now = time.monotonic()
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                self.log.error("Step %s hit its %g s timeout", self.step_id, self.step_timeout)
                self._kill_remote(reason="timeout")
                killed_at = time.monotonic()
            if killed_at is not None and time.monotonic() - killed_at > self.kill_grace + 10:
                break  # the pipes never closed after the kill: give up waiting for the exit status
            wait = 0.5 if deadline is None else max(0.01, min(0.5, deadline - now))
            for stream, data in run.read(wait):
                text = partial[stream] + data
                *lines, partial[stream] = text.split(b"\n")
                for raw in lines:
                    self._emit(stream, raw, tails)
        for stream, rest in partial.items():
            if rest:
                self._emit(stream, rest, tails)
        if not run.finished:
            return None, timed_out
        return run.exit_code(), timed_out

    def _emit(self, stream: str, raw: bytes, tails: dict[str, deque[str]]) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        tails[stream].append(line)
        if stream == "stdout":
            self.log.info("[%s] %s", self.server_name, line)
        else:
            self.log.warning("[%s:stderr] %s", self.server_name, line)

    def _run_local(self, remote: str, tails: dict[str, deque[str]], start: float) -> tuple[int | None, bool]:
        run = _LocalRun(remote)
        self._local_run = run
        try:
            return self._pump(run, tails, start)
        finally:
            run.close()
            self._local_run = None

    def _kill_remote(self, *, reason: str) -> None:
        """Kill the step's process group; best effort, never raises (it runs in error paths)."""
        if self._job_dir is None:
            return
        command = build_kill_command(self._job_dir, self.kill_grace)
        self.log.warning("Killing step %s's process group (%s)", self.step_id, reason)
        try:
            if self.is_local:
                out = subprocess.run(
                    ["sh", "-c", command], capture_output=True, text=True, timeout=self.kill_grace + 10
                ).stdout
            else:
                # A fresh connection: on_kill interrupts whatever the main connection was doing.
                _, out, _ = self._ssh(command, timeout=self.kill_grace + 10)
            self.log.warning("%s", out.strip())
        except Exception:
            self.log.exception("Could not kill step %s's process group", self.step_id)

    def on_kill(self) -> None:
        """The task is being stopped while on a worker (run marked failed, task cleared): stop the
        step too. A deferred step is killed by its trigger's ``on_kill`` instead."""
        self._kill_remote(reason="task killed")


def _first_address(server: Mapping[str, Any]) -> str:
    """``address``, or the first of ``addresses`` (a list, or a mapping of interface -> address(es))."""
    if server.get("address"):
        return str(server["address"])
    found: Any = server.get("addresses") or ""
    while isinstance(found, Mapping | list | tuple) and found:
        found = next(iter(found.values())) if isinstance(found, Mapping) else found[0]
    return str(found) if found else ""


class _Env:
    """Adapter so :func:`step_env` can take a plain dict (it wants an object with ``.env``)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env


__all__ = [
    "REMOTE_BASE_DIR",
    "RESULT_KEY",
    "SETTING_SSH_CONN_ID",
    "SSHStepOperator",
    "StepFailed",
    "StepTimeout",
    "build_kill_command",
    "build_step_script",
    "task_job_id",
]
