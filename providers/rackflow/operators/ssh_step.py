"""Run one jobnet step (or its revert) on a server over SSH, or on the worker itself.

Built on the ssh provider's :class:`~airflow.providers.ssh.hooks.ssh.SSHHook`, with what the stock
``SSHOperator`` lacks for environment building:

* **No injection from params.** The environment (params included) is sent as ``export NAME='value'``
  lines, each value quoted by :func:`shlex.quote` (sshd refuses client-sent variables), inside a
  quoted here-document; nothing a user passes is ever formatted into the command text.
* **The remote process group dies with the task.** The step runs under ``setsid`` on the server, its
  pid (= its process group) in a job folder; on timeout, on any error while waiting and in
  :meth:`SSHStepOperator.on_kill` (a run marked failed, a task cleared) the whole group gets
  ``SIGTERM`` then ``SIGKILL``. The stock operator leaves the remote command running.
* **A result for the report**: exit code, duration, start/end times and stdout/stderr tails go to
  XCom under ``step_result`` on success *and* failure (and as the return value on success).
"""

from __future__ import annotations

import os
import secrets
import selectors
import shlex
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from rackflow.core.jobnet import ParamSpec, shell_exports, step_env

if TYPE_CHECKING:
    import paramiko
    from airflow.providers.ssh.hooks.ssh import SSHHook
    from airflow.sdk.definitions.context import Context

RESULT_KEY = "step_result"
"""XCom key of every step's (and revert's) result dict."""
DEFAULT_SSH_CONN_ID = "ssh_fleet"
REMOTE_BASE_DIR = "/tmp/rackflow-steps"
KILL_GRACE_SECONDS = 3.0
_TAIL_LINES = 50


class StepTimeout(AirflowException):
    """The step ran longer than its timeout; its process group was killed."""


class StepFailed(AirflowException):
    """The step's command exited non-zero."""


def _tail(lines: Sequence[str]) -> str:
    return "\n".join(lines)


def step_job_dir(base_dir: str, job_id: str) -> str:
    return f"{base_dir.rstrip('/')}/{job_id}"


def build_step_script(
    *,
    command: str | None,
    script_text: str | None,
    env: Mapping[str, str],
    workdir: str | None,
    job_dir: str,
    shell: str = "bash",
) -> str:
    """The text sent to the server's login shell: write the step into ``job_dir`` and run it under setsid.

    The step body (exports, ``cd``, command) and a shipped script travel in quoted here-documents whose
    delimiters are random and checked absent from the body, so no byte of them is expanded by the
    outer shell. The step runs as its own session; ``job_dir/pid`` holds its process group id.
    """
    if (command is None) == (script_text is None):
        raise ValueError("needs exactly one of command or script_text")
    body = shell_exports(env)
    if workdir:
        body += f"cd {shlex.quote(workdir)} || exit 96\n"
    body += 'exec "$RACKFLOW_STEP_DIR/script"\n' if script_text is not None else f"{command}\n"
    docs = [("step.sh", body)] + ([("script", script_text)] if script_text is not None else [])
    quoted_dir = shlex.quote(job_dir)
    lines = [
        "umask 077",
        f"d={quoted_dir}",
        'mkdir -p "$d" || exit 97',
    ]
    for name, text in docs:
        token = _heredoc_token(text)
        if not text.endswith("\n"):
            text += "\n"
        lines.append(f"cat > \"$d/{name}\" <<'{token}'\n{text}{token}")
    if script_text is not None:
        lines.append('chmod 700 "$d/script"')
    quoted_shell = shlex.quote(shell)
    lines += [
        f"if command -v {quoted_shell} >/dev/null 2>&1; then s={quoted_shell}; else s=sh; fi",
        # $$ inside the new session is its pid = pgid = sid, whether or not setsid forked to get there.
        'RACKFLOW_STEP_DIR="$d" setsid -w sh -c '
        + shlex.quote('echo $$ > "$RACKFLOW_STEP_DIR/pid"; export RACKFLOW_STEP_DIR; exec "$1" "$2"')
        + ' rackflow-step "$s" "$d/step.sh" </dev/null',
        "ec=$?",
        'rm -rf "$d"',
        "exit $ec",
    ]
    return "\n".join(lines) + "\n"


def _heredoc_token(text: str) -> str:
    while True:
        token = f"RACKFLOW_EOF_{secrets.token_hex(8)}"
        if token not in text:
            return token


def build_kill_command(job_dir: str, grace: float = KILL_GRACE_SECONDS) -> str:
    """Signal the step's whole process group: TERM, then KILL what is left after ``grace`` seconds.

    Waits up to 2 s for the pid file (a kill right after the start); never signals a pid <= 1.
    """
    pid_file = shlex.quote(f"{job_dir}/pid")
    ticks = max(1, int(grace * 10))
    return (
        f"i=0; while [ ! -s {pid_file} ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; "
        f'p="$(cat {pid_file} 2>/dev/null)"; '
        'if [ "$p" -gt 1 ] 2>/dev/null; then '
        'kill -TERM -"$p" 2>/dev/null; '
        f'i=0; while kill -0 -"$p" 2>/dev/null && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; '
        'kill -KILL -"$p" 2>/dev/null; echo "killed process group $p"; '
        "else echo 'no step process to kill'; fi; true"
    )


class _Run(Protocol):
    def read(self, timeout: float) -> list[tuple[str, bytes]]: ...

    @property
    def finished(self) -> bool: ...

    def exit_code(self) -> int: ...

    def close(self) -> None: ...


class _SshRun:
    """One exec channel; output chunks as they arrive, the exit status at the end."""

    def __init__(self, client: paramiko.SSHClient, command: str) -> None:
        transport = client.get_transport()
        if transport is None:
            raise AirflowException("SSH transport is not open")
        self.channel = transport.open_session()
        self.channel.exec_command(command)
        self.channel.shutdown_write()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.channel, selectors.EVENT_READ)

    def read(self, timeout: float) -> list[tuple[str, bytes]]:
        chunks: list[tuple[str, bytes]] = []
        if not (self.channel.recv_ready() or self.channel.recv_stderr_ready()):
            self.selector.select(timeout)
        while self.channel.recv_ready():
            chunks.append(("stdout", self.channel.recv(65536)))
        while self.channel.recv_stderr_ready():
            chunks.append(("stderr", self.channel.recv_stderr(65536)))
        return chunks

    @property
    def finished(self) -> bool:
        return (
            self.channel.exit_status_ready()
            and not self.channel.recv_ready()
            and not self.channel.recv_stderr_ready()
        )

    def exit_code(self) -> int:
        return int(self.channel.recv_exit_status())

    def close(self) -> None:
        self.selector.close()
        self.channel.close()


class _LocalRun:
    """The same step on the worker itself: ``sh -c`` of the same script, in its own session."""

    def __init__(self, command: str) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
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

    :param ssh_conn_id: Airflow SSH connection of the server; ``None`` runs the step on the worker
        itself (the jobnet's ``local`` server). Ignored when ``launch_task_id`` binds the server.
    :param remote_host: Host to reach instead of the connection's (templated).
    :param command: Shell text to run (not templated: ``${#x}`` is shell, not Jinja).
    :param script: Path on the worker of a script to ship to the server and run there (its shebang
        decides the interpreter).
    :param env: Environment of the step, sent as quoted ``export`` lines.
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
        (``ssh_fleet``). The VM's name is exported as ``RACKFLOW_SERVER``, its address as
        ``RACKFLOW_SERVER_ADDRESS``.
    :param use_launch_address: Connect to the launched VM's address instead of the connection's host.
    :param revert_of: Run as the revert of this step id: only when ``plan_task_id``'s plan lists it,
        otherwise the task is skipped.
    :param plan_task_id: Task whose XCom is the revert plan (``{"groups": [[step ids]]}``).
    :param remote_base_dir: Folder on the server for the per-run job folders.
    :param shell: Shell for the step body (falls back to ``sh`` where it is missing).
    :param kill_grace: Seconds between SIGTERM and SIGKILL of the process group.
    :param conn_timeout: SSH connection timeout in seconds.
    """

    template_fields: Sequence[str] = ("ssh_conn_id", "remote_host")
    ui_color = "#e8f4e4"

    def __init__(
        self,
        *,
        ssh_conn_id: str | None = DEFAULT_SSH_CONN_ID,
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
        **kwargs: Any,
    ) -> None:
        if step_timeout is not None and "execution_timeout" not in kwargs:
            # A backstop only: the operator kills the remote group at step_timeout itself.
            kwargs["execution_timeout"] = timedelta(seconds=step_timeout + kill_grace + 60)
        super().__init__(**kwargs)
        if (command is None) == (script is None):
            raise ValueError(f"{self.task_id}: needs exactly one of command or script")
        if revert_of is not None and plan_task_id is None:
            raise ValueError(f"{self.task_id}: a revert needs plan_task_id")
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
            name, self.server_connections.get("*", DEFAULT_SSH_CONN_ID)
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

    @cached_property
    def ssh_hook(self) -> SSHHook:
        from airflow.providers.ssh.hooks.ssh import SSHHook

        return SSHHook(
            ssh_conn_id=self.ssh_conn_id,
            remote_host=self.remote_host or "",
            conn_timeout=self.conn_timeout,
        )

    # --- execution -------------------------------------------------------------------------------

    def _revert_planned(self, context: Context) -> bool:
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id) or {}
        groups = plan.get("groups", [])
        return any(self.revert_of in group for group in groups)

    def execute(self, context: Context) -> dict[str, Any]:
        if self.revert_of is not None and not self._revert_planned(context):
            raise AirflowSkipException(f"step {self.revert_of!r} is not to be reverted in this run")
        env = dict(self.env)
        if self.jobnet_params:
            values = {name: context["params"].get(name) for name in self.jobnet_params}
            env = step_env(_Env(env), self.jobnet_params, values)
        self._bind_launched(context, env)
        ti = context["ti"]
        job_id = "-".join(
            part.replace("/", "_") for part in (ti.dag_id, ti.run_id, ti.task_id, str(ti.try_number))
        )
        self._job_dir = step_job_dir(self.remote_base_dir, f"{job_id}-{secrets.token_hex(4)}")
        script_text = Path(self.script).read_text(encoding="utf-8") if self.script else None
        remote = build_step_script(
            command=self.command,
            script_text=script_text,
            env=env,
            workdir=self.workdir,
            job_dir=self._job_dir,
            shell=self.shell,
        )
        where = "the worker" if self.is_local else f"{self.server_name} ({self.ssh_conn_id})"
        self.log.info("Step %s on %s; env: %s", self.step_id, where, ", ".join(sorted(env)) or "(none)")
        started_at = time.time()
        start = time.monotonic()
        result: dict[str, Any] = {
            "step_id": self.step_id,
            "server": self.server_name,
            "host": "local" if self.is_local else (self.remote_host or self.ssh_conn_id),
            "revert": self.revert_of is not None,
            "started_at": started_at,
        }
        tails: dict[str, deque[str]] = {
            "stdout": deque(maxlen=_TAIL_LINES),
            "stderr": deque(maxlen=_TAIL_LINES),
        }
        timed_out = False
        exit_code: int | None = None
        error: BaseException | None = None
        try:
            if self.is_local:
                exit_code, timed_out = self._run_local(remote, tails, start)
            else:
                with self.ssh_hook.get_conn() as client:
                    exit_code, timed_out = self._run_ssh(client, remote, tails, start)
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

    def _pump(self, run: _Run, tails: dict[str, deque[str]], start: float) -> tuple[int | None, bool]:
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
                break  # the channel never closed after the kill: give up waiting for the exit status
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

    def _run_ssh(
        self, client: paramiko.SSHClient, remote: str, tails: dict[str, deque[str]], start: float
    ) -> tuple[int | None, bool]:
        run = _SshRun(client, remote)
        try:
            return self._pump(run, tails, start)
        finally:
            run.close()

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
                from airflow.providers.ssh.hooks.ssh import SSHHook

                # A fresh connection: on_kill interrupts whatever the main connection was doing.
                hook = SSHHook(ssh_conn_id=self.ssh_conn_id, remote_host=self.remote_host or "")
                with hook.get_conn() as client:
                    _, stdout, _ = hook.exec_ssh_client_command(
                        client, command, get_pty=False, environment=None, timeout=self.kill_grace + 10
                    )
                out = stdout.decode("utf-8", "replace")
            self.log.warning("%s", out.strip())
        except Exception:
            self.log.exception("Could not kill step %s's process group", self.step_id)

    def on_kill(self) -> None:
        """The task is being stopped (run marked failed, task cleared): stop the remote step too."""
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
    "DEFAULT_SSH_CONN_ID",
    "RESULT_KEY",
    "SSHStepOperator",
    "StepFailed",
    "StepTimeout",
    "build_kill_command",
    "build_step_script",
]
