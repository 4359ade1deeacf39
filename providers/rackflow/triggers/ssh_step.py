"""Follow detached jobnet steps over SSH from the triggerer: N steps on one server cost ONE connection
and ONE status command per interval.

Every :class:`SSHStepTrigger` in a triggerer process subscribes its step's job folder to the
:class:`ServerPoller` of its server (SSH connection id + host). The poller keeps one asyncssh
connection (the ssh provider's :class:`~airflow.providers.ssh.hooks.ssh.SSHHookAsync`), runs one
status script for all subscribed folders each interval and hands each trigger its step's status; a
broken connection is dropped and opened again at the next poll (a trigger gives up only after
``max_errors`` failed polls in a row). Kills, result reads and clean-ups of the poller's steps use
the same connection, at most :data:`MAX_CHANNELS` channels at a time (sshd's ``MaxSessions``).

The trigger fires once, when the step has ended (or its timeout killed it), with the step's exit
code, times and output tails. With ``end_from_trigger`` (what the SSH step operator asks for) a step
that has ended leaves nothing for a worker: the trigger logs its output tails, removes its job folder
and ends the task itself (Airflow's ``TaskSuccessEvent``/``TaskFailedEvent``, with the step's result
as XCom ``step_result``, and as the return value on success). No try is resumed on a worker, so none
can be failed by a stale executor event of the deferred try (Airflow 3.3's defer-exit race,
apache/airflow#72716); Airflow still retries a task its trigger ended failed while it has retries
left, and the retry starts the step afresh (its folder is gone). Only an ``error`` event (the server
could not be reached) resumes the task, whose retry logic re-attaches to the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSuccessEvent, TriggerEvent

from rackflow.core.jobnet.remote import (
    KILL_GRACE_SECONDS,
    RESULT_KEY,
    RemoteStepStatus,
    build_cleanup_command,
    build_kill_command,
    build_status_script,
    build_tail_command,
    build_times_command,
    output_lines,
    parse_status_output,
    parse_times_output,
    step_result,
    tail_lines,
)
from rackflow.hooks.retrying import retry_async

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)

MAX_CHANNELS = 8
"""Concurrent SSH channels per server connection (OpenSSH's default ``MaxSessions`` is 10)."""
COMMAND_TIMEOUT = 60.0
REATTACH_WAIT = 12.0
_STOPPING: set[asyncio.Task[None]] = set()  # on_kill's work in progress (a reference keeps it alive)
"""Seconds a killed trigger waits for a later try of its task to take its step over."""


@dataclass(eq=False)
class _Subscription:
    job_dir: str
    interval: float
    queue: asyncio.Queue[RemoteStepStatus | BaseException] = field(default_factory=asyncio.Queue)


class ServerPoller:
    """One SSH connection and one poll loop per server and event loop; lives while it has subscribers."""

    _pollers: dict[tuple[int, str | None, str | None], ServerPoller] = {}

    def __init__(self, ssh_conn_id: str | None, remote_host: str | None, loop_id: int) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.remote_host = remote_host
        self.key = (loop_id, ssh_conn_id, remote_host)
        self.subscriptions: set[_Subscription] = set()
        self.users = 0  # on_kill work using the connection besides the subscriptions
        self.task: asyncio.Task[None] | None = None
        self.conn: asyncssh.SSHClientConnection | None = None
        self._connecting = asyncio.Lock()
        self._channels = asyncio.Semaphore(MAX_CHANNELS)

    @classmethod
    def for_server(cls, ssh_conn_id: str | None, remote_host: str | None) -> ServerPoller:
        loop_id = id(asyncio.get_running_loop())
        key = (loop_id, ssh_conn_id, remote_host)
        poller = cls._pollers.get(key)
        if poller is None:
            poller = cls._pollers[key] = cls(ssh_conn_id, remote_host, loop_id)
        return poller

    @property
    def label(self) -> str:
        return f"{self.ssh_conn_id}@{self.remote_host}" if self.remote_host else str(self.ssh_conn_id)

    async def _connection(self) -> asyncssh.SSHClientConnection:
        from airflow.providers.ssh.hooks.ssh import SSHHookAsync

        async with self._connecting:
            if self.conn is not None:
                return self.conn
            hook = SSHHookAsync(ssh_conn_id=self.ssh_conn_id or "ssh_default", host=self.remote_host)
            opened: asyncssh.SSHClientConnection = await asyncio.wait_for(hook.get_conn(), COMMAND_TIMEOUT)
            self.conn = opened
            return opened

    def _drop(self, conn: asyncssh.SSHClientConnection | None) -> None:
        if conn is not None and self.conn is conn:
            self.conn = None
            with contextlib.suppress(Exception):
                conn.close()

    async def run(self, command: str, *, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``command`` (with ``stdin``) on the server; its stdout. Any failure drops the connection
        (the next call opens a new one) and raises."""
        async with self._channels:
            conn = await self._connection()
            try:
                result = await conn.run(command, input=stdin, check=False, timeout=timeout)
            except BaseException:
                self._drop(conn)
                raise
        out = result.stdout or ""
        if result.exit_status not in (0, None):
            raise RuntimeError(f"{command.split()[0]} on {self.label} exited {result.exit_status}")
        return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)

    def subscribe(self, job_dir: str, interval: float) -> _Subscription:
        sub = _Subscription(job_dir, interval)
        self.subscriptions.add(sub)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop(), name=f"poll {self.label}")
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        self.subscriptions.discard(sub)
        self._close_if_unused()

    def release(self) -> None:
        """Give back a use of the connection taken with ``users += 1``."""
        self.users -= 1
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        """The last subscriber or user gone: stop polling and close the connection."""
        if not self.subscriptions and not self.users and self._pollers.get(self.key) is self:
            del self._pollers[self.key]
            if self.task is not None and self.task is not asyncio.current_task():
                self.task.cancel()
            self._drop(self.conn)

    async def _loop(self) -> None:
        # The deferring task has just started its step: the first poll waits one interval (and every
        # trigger that starts meanwhile joins it).
        await asyncio.sleep(min((s.interval for s in self.subscriptions), default=0))
        while self.subscriptions:
            subs = list(self.subscriptions)
            dirs = sorted({s.job_dir for s in subs})
            try:
                out = await self.run("sh -s", stdin=build_status_script(dirs))
                statuses = parse_status_output(out, dirs)
                for sub in subs:
                    sub.queue.put_nowait(statuses[sub.job_dir])
            except Exception as exc:
                log.warning("status poll of %d steps on %s failed: %r", len(dirs), self.label, exc)
                for sub in subs:
                    sub.queue.put_nowait(exc)
            await asyncio.sleep(min(s.interval for s in subs))


class SSHStepTrigger(BaseTrigger):
    """Wait until a detached jobnet step ends on its server; fires once with its result.

    The event is ``{"status": "done"|"timeout"|"lost"|"error", "job_dir", "ssh_conn_id",
    "remote_host", "exit_code", "started_at", "finished_at", "stdout_tail", "stderr_tail",
    "message"}``. ``timeout``: the step ran ``step_timeout`` seconds (server clock) and this trigger
    killed its process group. ``lost``: its process group ended without an exit code (killed on the
    server). ``error``: ``max_errors`` polls in a row failed; the step may still run.

    :param ssh_conn_id: SSH connection of the server.
    :param remote_host: Host to reach instead of the connection's.
    :param job_dir: The step's job folder on the server.
    :param step_timeout: Seconds after the step's start when its process group is killed.
    :param poll_interval: Seconds between status polls (shared by every step on the server).
    :param kill_grace: Seconds between SIGTERM and SIGKILL of the process group.
    :param max_errors: Failed polls in a row before the trigger gives up with an ``error`` event.
    :param dag_id: With ``run_id``/``task_id``/``map_index``, the task instance (for the logs).
    :param try_number: The try that started or re-attached to the step (its folder's ``owner``).
    :param reattach_wait: Seconds :meth:`on_kill` waits for a later try to take the step over.
    :param end_from_trigger: End the task here when the step has ended (``done``, ``timeout``,
        ``lost``): log the tails, remove the job folder, succeed or fail the task with the result as
        XCom; an ``error`` still resumes the task.
    :param result_base: The operator's part of the step's result (step id, server, host, revert).
    :param server_name: The jobnet's name of the server, for the output lines in the task's log.
    """

    def __init__(
        self,
        *,
        ssh_conn_id: str | None,
        job_dir: str,
        remote_host: str | None = None,
        step_timeout: float | None = None,
        poll_interval: float = 5.0,
        kill_grace: float = KILL_GRACE_SECONDS,
        max_errors: int = 60,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        map_index: int = -1,
        try_number: int = 1,
        reattach_wait: float = REATTACH_WAIT,
        end_from_trigger: bool = False,
        result_base: dict[str, Any] | None = None,
        server_name: str | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.remote_host = remote_host
        self.job_dir = job_dir
        self.step_timeout = step_timeout
        self.poll_interval = poll_interval
        self.kill_grace = kill_grace
        self.max_errors = max_errors
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = try_number
        self.reattach_wait = reattach_wait
        self.end_from_trigger = end_from_trigger
        self.result_base = dict(result_base or {})
        self.server_name = server_name

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "remote_host": self.remote_host,
                "job_dir": self.job_dir,
                "step_timeout": self.step_timeout,
                "poll_interval": self.poll_interval,
                "kill_grace": self.kill_grace,
                "max_errors": self.max_errors,
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "task_id": self.task_id,
                "map_index": self.map_index,
                "try_number": self.try_number,
                "reattach_wait": self.reattach_wait,
                "end_from_trigger": self.end_from_trigger,
                "result_base": self.result_base,
                "server_name": self.server_name,
            },
        )

    def _event(self, status: str, message: str, **result: Any) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "job_dir": self.job_dir,
                "ssh_conn_id": self.ssh_conn_id,
                "remote_host": self.remote_host,
                "exit_code": None,
                "started_at": None,
                "finished_at": None,
                "stdout_tail": "",
                "stderr_tail": "",
                "message": message,
                **result,
            }
        )

    async def _result(self, poller: ServerPoller) -> dict[str, Any]:
        """Exit code, times and output tails of the step (best effort: empty where unreadable)."""
        result: dict[str, Any] = {}
        try:
            times, out, err = await asyncio.gather(
                poller.run(build_times_command(self.job_dir)),
                poller.run(build_tail_command(self.job_dir, "stdout")),
                poller.run(build_tail_command(self.job_dir, "stderr")),
            )
        except Exception as exc:
            log.warning("could not read the result of %s on %s: %r", self.job_dir, poller.label, exc)
            return result
        code, started, finished, server_now = parse_times_output(times)
        # Times in this host's clock (as every step's, whatever its server): the revert order compares them.
        offset = time.time() - server_now if server_now is not None else 0.0
        result.update(
            exit_code=code,
            started_at=None if started is None else started + offset,
            finished_at=None if finished is None else finished + offset,
            stdout_tail=tail_lines(out),
            stderr_tail=tail_lines(err),
        )
        return result

    async def run(self) -> AsyncIterator[TriggerEvent]:
        poller = ServerPoller.for_server(self.ssh_conn_id, self.remote_host)
        sub = poller.subscribe(self.job_dir, self.poll_interval)
        errors = 0
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, BaseException):
                    errors += 1
                    if errors >= self.max_errors:
                        yield self._event("error", f"{errors} status polls failed in a row; last: {item!r}")
                        return
                    continue
                errors = 0
                status = item
                if status.state == "running":
                    elapsed = status.elapsed
                    if self.step_timeout is None or elapsed is None or elapsed < self.step_timeout:
                        continue
                    log.warning("step %s hit its %g s timeout: killing it", self.job_dir, self.step_timeout)
                    try:
                        out = await poller.run(
                            build_kill_command(self.job_dir, self.kill_grace), timeout=self.kill_grace + 30
                        )
                    except Exception as exc:  # the next poll still sees it running: the kill is retried
                        log.warning("kill of %s on %s failed: %r", self.job_dir, poller.label, exc)
                        errors += 1
                        continue
                    log.warning("%s", out.strip())
                    result = await self._result(poller)
                    if result.get("finished_at") is None:  # killed: no end written; now is the end
                        result["finished_at"] = time.time()
                    if result.get("started_at") is None:
                        result["started_at"] = result["finished_at"] - elapsed
                    event = self._event(
                        "timeout", f"timed out after {self.step_timeout:g} s; killed", **result
                    )
                elif status.state == "gone":
                    event = self._event("lost", "the step's job folder is gone from the server")
                else:
                    result = await self._result(poller)
                    if status.state == "lost":
                        event = self._event(
                            "lost", "the step's process group ended without an exit code", **result
                        )
                    else:
                        event = self._event("done", f"exited {result.get('exit_code')}", **result)
                yield (await self._end_task(poller, event.payload)) if self.end_from_trigger else event
                return
        finally:
            poller.unsubscribe(sub)

    async def _end_task(self, poller: ServerPoller, event: dict[str, Any]) -> TriggerEvent:
        """The step has ended: log its output tails, remove its job folder (best effort, as the task
        would: a folder left behind only makes a retry report it) and say how the task ends."""
        result = step_result(self.result_base, event)
        stdout, stderr = output_lines(self.server_name or poller.label, result)
        for line in stdout:
            log.info("%s", line)
        for line in stderr:
            log.warning("%s", line)
        try:
            await poller.run(build_cleanup_command(self.job_dir))
        except Exception as exc:
            log.warning("could not remove %s on %s: %r", self.job_dir, poller.label, exc)
        step = result.get("step_id") or self.task_id
        if event["status"] == "done" and result["exit_code"] == 0:
            log.info("step %s succeeded in %.1f s (ended by the trigger)", step, result["duration_s"] or 0)
            return TaskSuccessEvent(xcoms={RESULT_KEY: result, "return_value": result})
        if event["status"] == "timeout":
            log.error("step %s timed out after %g s; killed (ended by the trigger)", step, self.step_timeout)
        elif event["status"] == "done":
            log.error("step %s failed with exit code %s (ended by the trigger)", step, result["exit_code"])
        else:
            log.error("step %s: %s (ended by the trigger)", step, event.get("message"))
        return TaskFailedEvent(xcoms={RESULT_KEY: result})

    async def on_kill(self) -> None:
        """A user acted on the deferred task (marked it or its run failed, cleared it, marked it
        successful): kill the step unless a later try of the task re-attaches to it meanwhile.

        A cleared task's next try finds the step running and takes it over (its start script writes
        its try number to the folder's ``owner``); this waits ``reattach_wait`` seconds for that, then
        kills the process group and removes the folder, on the server, only if no later try owns it
        (one command on the server's shared connection). Asking Airflow for the task's state instead
        goes through the triggerer's supervisor, which was measured to stall every trigger for 30 s
        on a SQLite metadata DB.

        The work runs in a task of its own, shielded: the triggerer cancels a killed trigger again on
        each of its loops (about once a second) until it has finished, which would cut this short.
        """
        task = asyncio.get_running_loop().create_task(self._stop_step(), name=f"stop {self.job_dir}")
        _STOPPING.add(task)
        task.add_done_callback(_STOPPING.discard)
        await asyncio.shield(task)

    async def _stop_step(self) -> None:
        poller = ServerPoller.for_server(self.ssh_conn_id, self.remote_host)
        poller.users += 1
        command = build_kill_command(self.job_dir, self.kill_grace, owner=self.try_number)
        try:
            await asyncio.sleep(self.reattach_wait)

            async def stop() -> str:
                return await poller.run(command, timeout=self.kill_grace + 30)

            try:
                out = await retry_async(
                    stop,
                    attempts=3,
                    delay=2,
                    retry_on=lambda _: True,
                    log=log,
                    what=f"stopping step {self.job_dir} on {poller.label}",
                )
            except Exception as exc:  # logged per attempt; the step's own timeout still ends it
                log.warning("gave up stopping step %s on %s: %r", self.job_dir, poller.label, exc)
                return
            log.warning("task %s (try %s) was stopped: %s", self.task_id, self.try_number, out.strip())
        finally:
            poller.release()


__all__ = ["SSHStepTrigger", "ServerPoller"]
