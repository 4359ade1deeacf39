"""SSHStepOperator against the devfleet's real sshd on loopback (and on the worker for ``local``).

One DAG of independent steps runs once (dag.test, in-process); each test checks one behaviour on it.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.dag_factories.jobnet_support import run_dag

HOSTILE = "; rm -rf / #'\"$(touch {pwned})`touch {pwned}`\nsecond line \\ $HOME %s {{ x }}"
SLEEP_MARK = f"4{secrets.randbelow(9)}.{secrets.randbelow(10**6):06d}"


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
        params={"evil": Param("x", type="string")},
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
        SSHStepOperator(task_id="shipped", script=script, workdir=str(work), env={"NODE": "nn"})
        SSHStepOperator(task_id="on_worker", ssh_conn_id=None, command="echo local $$; exit 0")
        SSHStepOperator(
            task_id="too_slow",
            step_timeout=2,
            command=f"sleep 1{SLEEP_MARK} & sleep {SLEEP_MARK}; echo never",
        )
    dag_run = run_dag(dag, {"evil": hostile})
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return {"run": dag_run, "states": states, "work": work, "hostile": hostile, "pwned": pwned}


def test_hostile_params_and_env_reach_the_step_literally(steps_run: dict[str, Any]) -> None:
    work: Path = steps_run["work"]
    assert steps_run["states"]["hostile"] == "success"
    assert (work / "param.out").read_text() == steps_run["hostile"]
    assert (work / "env.out").read_text() == steps_run["hostile"]
    assert not steps_run["pwned"].exists()


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
    assert not list(Path("/tmp/rackflow-steps").glob("test_ssh_step_operator-*"))


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
