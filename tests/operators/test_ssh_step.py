"""SSHStepOperator against the devfleet's real sshd on loopback (and on the worker for ``local``).

One DAG of independent steps runs once (dag.test, in-process: a deferred step's trigger runs inline);
each test checks one behaviour on it. While it runs, ``ps -eo args`` and the job folders are sampled
for the values of a param and of an env entry. The shared poller and the re-attach of a second start
are tested on the trigger and the start script directly.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.dag_factories.jobnet_support import run_dag

HOSTILE = "; rm -rf / #'\"$(touch {pwned})`touch {pwned}`\nsecond line \\ $HOME %s {{ x }}"
SLEEP_MARK = f"4{secrets.randbelow(9)}.{secrets.randbelow(10**6):06d}"
SECRET = f"s3cr3t-{secrets.token_hex(8)}"
STEPS_DIR = Path("/tmp/rackflow-steps")


class _Sampler(threading.Thread):
    """Samples every process's command line and the job folders' files for ``needles`` until stopped."""

    def __init__(self, needles: list[str]) -> None:
        super().__init__(daemon=True)
        self.needles = needles
        self.stop = threading.Event()
        self.samples = 0
        self.seen_in_ps: list[str] = []
        # (needle, file name, its mode, its folder's mode, when)
        self.seen_on_disk: list[tuple[str, str, int, int, float]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.seen_in_ps += [line for line in args.splitlines() if any(n in line for n in self.needles)]
            for path in STEPS_DIR.glob("*/*"):
                try:
                    text = path.read_text(errors="replace") if path.is_file() else ""
                except OSError:
                    continue
                for needle in (n for n in self.needles if n in text):
                    try:
                        modes = (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777)
                    except OSError:
                        continue
                    self.seen_on_disk.append((needle, path.name, *modes, time.monotonic()))
            self.samples += 1
            time.sleep(0.05)


def _xcom(dag_run: Any, task_id: str, key: str = "step_result") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
        ).all()
        return XComModel.deserialize_value(rows[0]) if rows else None


@pytest.fixture(scope="module")
def steps_run(airflow_db: Path, devfleet: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from datetime import datetime

    from airflow.sdk import DAG, Param

    from rackflow.core.jobnet import ParamSpec
    from rackflow.operators.ssh_step import SSHStepOperator

    work = tmp_path_factory.mktemp("ssh-step")
    pwned = work / "PWNED"
    hostile = HOSTILE.format(pwned=pwned)
    script = work / "show.sh"
    script.write_text('#!/bin/sh\necho "cwd=$(pwd)"\necho "node=$NODE"\n')
    with DAG(
        "test_ssh_step_operator",
        schedule=None,
        start_date=datetime(2025, 1, 1),
        params={"evil": Param("x", type="string"), "secret": Param("x", type="string")},
        default_args={"poll_interval": 1},
    ) as dag:
        SSHStepOperator(
            task_id="hostile",
            jobnet_params={"evil": ParamSpec(type="string")},
            env={"ALSO_EVIL": hostile},
            command=f'printf %s "$RACKFLOW_PARAM_EVIL" > {work}/param.out; '
            f'printf %s "$ALSO_EVIL" > {work}/env.out',
        )
        SSHStepOperator(
            task_id="noisy",
            command='for i in $(seq 1 100); do echo "line $i"; done; echo "warn: disk" >&2; exit 3',
        )
        SSHStepOperator(
            task_id="secret",
            jobnet_params={"secret": ParamSpec(type="string")},
            command='case "$RACKFLOW_PARAM_SECRET" in s3cr3t-*) sleep 4; echo got it;; *) exit 9;; esac',
        )
        SSHStepOperator(task_id="shipped", script=script, workdir=str(work), env={"NODE": "nn"})
        SSHStepOperator(task_id="on_worker", ssh_conn_id=None, command="echo local $$; exit 0")
        SSHStepOperator(
            task_id="too_slow",
            step_timeout=2,
            command=f"sleep 1{SLEEP_MARK} & sleep {SLEEP_MARK}; echo never",
        )
    sampler = _Sampler([SECRET, str(pwned)])
    sampler.start()
    try:
        dag_run = run_dag(dag, {"evil": hostile, "secret": SECRET})
    finally:
        sampler.stop.set()
        sampler.join()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return {
        "run": dag_run,
        "states": states,
        "work": work,
        "hostile": hostile,
        "pwned": pwned,
        "sampler": sampler,
    }


def test_hostile_params_and_env_reach_the_step_literally(steps_run: dict[str, Any]) -> None:
    work: Path = steps_run["work"]
    assert steps_run["states"]["hostile"] == "success"
    assert (work / "param.out").read_text() == steps_run["hostile"]
    assert (work / "env.out").read_text() == steps_run["hostile"]
    assert not steps_run["pwned"].exists()


def test_param_and_env_values_never_appear_in_a_command_line_or_stay_on_disk(
    steps_run: dict[str, Any],
) -> None:
    sampler: _Sampler = steps_run["sampler"]
    assert steps_run["states"]["secret"] == "success"
    assert _xcom(steps_run["run"], "secret")["stdout_tail"] == "got it"
    # The secret step alone sleeps 4 s: at 20 samples a second the sampler saw it run many times.
    assert sampler.samples > 40
    assert sampler.seen_in_ps == []
    # On disk the values are only in step.sh (0600, in a 0700 folder) until the step's shell has
    # opened it and removed it: a moment, not the 4 s the step runs.
    found = {(name, mode, folder) for _, name, mode, folder, _ in sampler.seen_on_disk}
    assert found <= {("step.sh", 0o600, 0o700)}, found
    for needle in sampler.needles:
        times = [when for seen, *_, when in sampler.seen_on_disk if seen == needle]
        assert not times or max(times) - min(times) < 1.5, (needle, times)


def test_output_tails_and_exit_code_are_kept_and_nonzero_exit_fails(steps_run: dict[str, Any]) -> None:
    assert steps_run["states"]["noisy"] == "failed"
    result = _xcom(steps_run["run"], "noisy")
    assert result["exit_code"] == 3 and result["timed_out"] is False
    lines = result["stdout_tail"].splitlines()
    assert len(lines) == 50 and lines[-1] == "line 100" and lines[0] == "line 51"
    assert result["stderr_tail"] == "warn: disk"
    assert result["duration_s"] >= 0 and result["finished_at"] >= result["started_at"]


def test_script_is_shipped_and_runs_in_workdir_with_env(steps_run: dict[str, Any]) -> None:
    assert steps_run["states"]["shipped"] == "success"
    result = _xcom(steps_run["run"], "shipped")
    assert result["stdout_tail"].splitlines() == [f"cwd={steps_run['work']}", "node=nn"]
    assert _xcom(steps_run["run"], "shipped", "return_value")["exit_code"] == 0


def test_local_server_runs_on_the_worker(steps_run: dict[str, Any]) -> None:
    assert steps_run["states"]["on_worker"] == "success"
    assert _xcom(steps_run["run"], "on_worker")["stdout_tail"].startswith("local ")


def test_timeout_fails_the_step_and_kills_its_whole_process_group(steps_run: dict[str, Any]) -> None:
    assert steps_run["states"]["too_slow"] == "failed"
    result = _xcom(steps_run["run"], "too_slow")
    assert result["timed_out"] is True and result["exit_code"] != 0
    # Killed at the 2 s timeout, not after the 40 s sleep ran out.
    assert 2 <= result["duration_s"] < 30
    assert "never" not in result["stdout_tail"]
    # Neither the foreground sleep nor its background sibling is left on the server (sshd is loopback).
    left = subprocess.run(["pgrep", "-f", f"sleep 1?{SLEEP_MARK}"], capture_output=True, text=True)
    assert left.stdout == "", left.stdout
    assert not list(STEPS_DIR.glob("test_ssh_step_operator-*"))


def test_remote_script_is_quoted_heredoc_and_kill_targets_the_group() -> None:
    from rackflow.operators.ssh_step import build_kill_command, build_step_script

    text = build_step_script(
        command="echo $HOME", script_text=None, env={"X": "a'b"}, workdir="/w d", job_dir="/tmp/j k"
    )
    assert "<<'RACKFLOW_EOF_" in text and "export X='a'\"'\"'b'" in text and "cd '/w d'" in text
    assert "setsid -w" in text and "d='/tmp/j k'" in text
    assert 'kill -TERM -"$p"' in build_kill_command("/tmp/j k") and "'/tmp/j k/pid'" in build_kill_command(
        "/tmp/j k"
    )


def test_steps_on_one_server_share_one_connection_and_poll_and_a_second_start_reattaches(
    devfleet: Any, tmp_path: Path
) -> None:
    from airflow.providers.ssh.hooks.ssh import SSHHook

    from rackflow.core.jobnet.remote import ATTACHED, STARTED, build_step_script
    from rackflow.operators.ssh_step import exec_with_stdin
    from rackflow.triggers.ssh_step import ServerPoller, SSHStepTrigger

    tag = secrets.token_hex(4)
    dirs = [f"{STEPS_DIR}/test-shared-{tag}-{i}" for i in range(4)]

    def start(i: int, attempt: int = 1) -> str:
        script = build_step_script(
            command=f"echo start >> {tmp_path}/starts-{i}; sleep 3; "
            f'echo "out {i}"; echo "err {i}" >&2; exit {i}',
            script_text=None,
            env={},
            workdir=None,
            job_dir=dirs[i],
            detach=True,
            attempt=attempt,
        )
        with SSHHook(ssh_conn_id="ssh_fleet").get_conn() as client:
            code, out, err = exec_with_stdin(client, "sh -s", script, 30)
        assert code == 0, err
        return out.strip()

    assert [start(i) for i in range(4)] == [STARTED] * 4
    # A second start of the same task instance (a retried try) follows the running step instead.
    assert start(0, attempt=2) == ATTACHED

    sshd_log = Path(devfleet.sshd.log_path)
    logins_before = sshd_log.read_text().count("Accepted publickey")

    # Count the status scripts the triggers run on the server: a wrapper around the real run().
    status_polls = 0
    real_run = ServerPoller.run

    async def counting_run(self: ServerPoller, command: str, **kwargs: Any) -> str:
        nonlocal status_polls
        status_polls += "for d in" in (kwargs.get("stdin") or "")
        return await real_run(self, command, **kwargs)

    async def follow() -> list[dict[str, Any]]:
        triggers = [SSHStepTrigger(ssh_conn_id="ssh_fleet", job_dir=d, poll_interval=1) for d in dirs]
        events = await asyncio.gather(*(t.run().__anext__() for t in triggers))
        return [e.payload for e in events]

    started = time.monotonic()
    ServerPoller.run = counting_run  # type: ignore[method-assign]
    try:
        events = asyncio.run(follow())
    finally:
        ServerPoller.run = real_run  # type: ignore[method-assign]
    elapsed = time.monotonic() - started
    polls = status_polls
    assert [e["status"] for e in events] == ["done"] * 4
    assert [e["exit_code"] for e in events] == [0, 1, 2, 3]
    assert [e["stdout_tail"] for e in events] == [f"out {i}" for i in range(4)]
    assert [e["stderr_tail"] for e in events] == [f"err {i}" for i in range(4)]
    assert all(e["finished_at"] - e["started_at"] >= 3 for e in events)
    # One poll per interval for all four steps (not one per step), on one SSH connection.
    assert polls <= elapsed + 1, (polls, elapsed)
    assert sshd_log.read_text().count("Accepted publickey") - logins_before == 1
    # The step started once although its start ran twice.
    assert (tmp_path / "starts-0").read_text() == "start\n"
    subprocess.run(["rm", "-rf", *dirs], check=True)


def test_a_killed_trigger_leaves_a_step_a_later_try_took_over_and_kills_it_otherwise(devfleet: Any) -> None:
    from airflow.providers.ssh.hooks.ssh import SSHHook

    from rackflow.core.jobnet.remote import ATTACHED, STARTED, build_step_script
    from rackflow.operators.ssh_step import exec_with_stdin
    from rackflow.triggers.ssh_step import SSHStepTrigger

    mark = f"3{secrets.randbelow(9)}.{secrets.randbelow(10**6):06d}"
    job_dir = f"{STEPS_DIR}/test-onkill-{secrets.token_hex(4)}"

    def start(attempt: int) -> str:
        script = build_step_script(
            command=f"sleep 1{mark} & sleep {mark}",
            script_text=None,
            env={},
            workdir=None,
            job_dir=job_dir,
            detach=True,
            attempt=attempt,
        )
        with SSHHook(ssh_conn_id="ssh_fleet").get_conn() as client:
            code, out, err = exec_with_stdin(client, "sh -s", script, 30)
        assert code == 0, err
        return out.strip()

    def sleeping() -> str:
        return subprocess.run(["pgrep", "-f", f"sleep 1?{mark}"], capture_output=True, text=True).stdout

    def on_kill(try_number: int) -> None:
        trigger = SSHStepTrigger(
            ssh_conn_id="ssh_fleet", job_dir=job_dir, try_number=try_number, reattach_wait=2
        )
        asyncio.run(trigger.on_kill())

    assert start(1) == STARTED
    # Try 1 was cleared and try 2 took the step over: try 1's trigger leaves it running.
    assert start(2) == ATTACHED
    on_kill(1)
    assert len(sleeping().split()) == 2 and Path(job_dir).is_dir()
    # Try 2 is marked failed (no later try comes): its trigger kills the whole group, removes the folder.
    on_kill(2)
    assert sleeping() == ""
    assert not Path(job_dir).exists()
