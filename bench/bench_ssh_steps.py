"""SSH steps at scale: 50 parallel jobnet steps that each ``sleep 120`` on the dev fleet's sshd.

A real ``airflow standalone`` (scheduler, LocalExecutor, dag-processor, triggerer) on a throwaway
AIRFLOW_HOME runs one jobnet of ``--steps`` parallel steps on one server (a second sshd on loopback, as
in the dev fleet). Each step checks a secret param through its environment and sleeps. Sampled during
the run, every second: the task instances by state (REST API) and the step processes on the server
(``pgrep``); every 0.2 s: ``ps -eo args`` of the whole machine (the server is this machine) for the
param's value.

Printed, with the goals of issue 17 (acceptance 3):

1. executor slots (``[core] parallelism``) and the running task instances while all steps sleep on the
   server (goal 0: a waiting step holds no worker slot), the deferred ones then, and the end state
   (goal: every step succeeded);
2. command lines that showed the param's value (goal 0);
3. SSH logins the run cost on the server (a start and a clean-up per step; the triggerer follows
   all steps of the server on one connection);
4. a second run, marked failed through the REST API while its steps sleep: step processes left on
   the server afterwards (goal 0) and how long the kill took.

Run ``python bench/bench_ssh_steps.py [--steps 50] [--seconds 120] [--parallelism 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "jobnet_ssh-bench"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def _jobnet(steps: int, seconds: int) -> str:
    """A jobnet of one stage: ``steps`` parallel steps on one server, each checking the token param."""
    import yaml

    command = f'[ -n "$RACKFLOW_PARAM_TOKEN" ] || exit 9; sleep {seconds}; echo "$NAME done"'
    return yaml.safe_dump(
        {
            "name": "ssh-bench",
            "description": "Parallel steps that sleep on one server.",
            "params": {"token": {"type": "string", "description": "A secret the steps check."}},
            "servers": {"box": {"ssh_conn_id": "ssh_fleet"}},
            "steps": [
                [
                    {
                        "id": f"s{i:02d}",
                        "server": "box",
                        "timeout": seconds * 5,
                        "env": {"NAME": f"s{i:02d}"},
                        "command": command,
                    }
                    for i in range(1, steps + 1)
                ]
            ],
        },
        sort_keys=False,
    )


class _Stack:
    """``python -m rackflow_devfleet.standalone`` on a free loopback port with its own home."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.port = home, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        airflow = str(Path(sys.executable).parent / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, capture_output=True)
        log = open(self.home / "standalone.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rackflow_devfleet.standalone"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError(f"standalone did not start; see {self.home / 'standalone.log'}")
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": "admin"})[
            "access_token"
        ]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"null")

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def _sleeping(seconds: int) -> int:
    out = subprocess.run(["pgrep", "-x", "-f", f"sleep {seconds}"], capture_output=True, text=True).stdout
    return len(out.split())


class _PsWatch(threading.Thread):
    def __init__(self, needle: str) -> None:
        super().__init__(daemon=True)
        self.needle, self.stop, self.samples, self.hits = needle, threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.is_set():
            args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.hits += sum(self.needle in line for line in args.splitlines())
            self.samples += 1
            time.sleep(0.2)


def _states(stack: _Stack, run_id: str) -> Counter[str]:
    tis = stack.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=200")[
        "task_instances"
    ]
    return Counter(str(ti["state"]) for ti in tis if ti["task_id"].startswith("parallel_1.s"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--parallelism", type=int, default=8)
    args = parser.parse_args()
    from rackflow_devfleet.servers import Sshd, free_port

    work = Path(tempfile.mkdtemp(prefix="rackflow-bench-ssh-"))
    (work / "jobnets").mkdir()
    (work / "jobnets" / "ssh-bench.yaml").write_text(_jobnet(args.steps, args.seconds))
    (work / "dags").mkdir()
    (work / "dags" / "jobnets.py").write_text((REPO / "dags" / "rackflow_jobnets.py").read_text())
    home = work / "airflow"
    home.mkdir()
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "admin"}))
    sshd = Sshd(workdir=work / "ssh", port=free_port()).start()
    port = free_port()
    conn = {
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": sshd.port,
        "login": sshd.user,
        "extra": {"key_file": str(sshd.client_key), "no_host_key_check": True},
    }
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(work / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API_AUTH__JWT_SECRET": "bench-ssh-" + "x" * 64,
        "AIRFLOW__API__SECRET_KEY": "bench-ssh-" + "x" * 64,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__RACKFLOW__JOBNETS_FOLDER": str(work / "jobnets"),
        "AIRFLOW__RACKFLOW__DATABASE_URL": f"sqlite:///{work / 'rackflow.db'}",
        "AIRFLOW_CONN_SSH_FLEET": json.dumps(conn),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    stack = _Stack(home, env, port)
    token = f"tok-{secrets.token_hex(12)}"
    watch = _PsWatch(token)
    try:
        stack.start()
        deadline = time.monotonic() + 300
        while True:
            try:
                stack.call("GET", f"/api/v2/dags/{DAG_ID}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        stack.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        logins_before = sshd.log_path.read_text().count("Accepted publickey")
        watch.start()

        # 1. One run to the end.
        started = time.monotonic()
        run_id = stack.call(
            "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"token": token}}
        )["dag_run_id"]
        samples: list[tuple[float, int, Counter[str]]] = []
        while True:
            state = stack.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
            samples.append((time.monotonic() - started, _sleeping(args.seconds), _states(stack, run_id)))
            if state in ("success", "failed") or time.monotonic() - started > 1800:
                break
            time.sleep(1)
        total = time.monotonic() - started
        watch.stop.set()
        watch.join()
        logins = sshd.log_path.read_text().count("Accepted publickey") - logins_before
        all_sleeping = [(t, s) for t, n, s in samples if n == args.steps]
        any_sleeping = [(t, s) for t, n, s in samples if n > 0]
        print(
            f"steps: {args.steps} x sleep {args.seconds} s on one sshd; "
            f"executor slots ([core] parallelism): {args.parallelism}"
        )
        if all_sleeping:
            print(
                f"all {args.steps} sleeping on the server for "
                f"{all_sleeping[-1][0] - all_sleeping[0][0]:.0f} s "
                f"({len(all_sleeping)} samples): running task instances max "
                f"{max(s['running'] for _, s in all_sleeping)} (goal 0), deferred min "
                f"{min(s['deferred'] for _, s in all_sleeping)}"
            )
        else:
            print(
                f"the {args.steps} steps never slept at the same time (max {max(n for _, n, _ in samples)})"
            )
        print(
            f"while any step slept ({len(any_sleeping)} samples): running task instances max "
            f"{max((s['running'] for _, s in any_sleeping), default=0)} of {args.parallelism} slots "
            "(steps being started or finished)"
        )
        end = samples[-1][2]
        print(f"run {state} in {total:.0f} s; steps by end state: {dict(end)} (goal: {args.steps} success)")
        print(f"ps -eo args samples: {watch.samples}; lines showing the param's value: {watch.hits} (goal 0)")
        print(f"SSH logins on the server for the run: {logins} ({logins / args.steps:.2f} per step)")

        # 2. A run marked failed while its steps sleep.
        run_id = stack.call(
            "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"token": token}}
        )["dag_run_id"]
        deadline = time.monotonic() + 300
        while _sleeping(args.seconds) < args.steps and time.monotonic() < deadline:
            time.sleep(1)
        before = _sleeping(args.seconds)
        states = _states(stack, run_id)
        marked = time.monotonic()
        stack.call("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})
        while _sleeping(args.seconds) and time.monotonic() - marked < 180:
            time.sleep(0.5)
        left, killed_in = _sleeping(args.seconds), time.monotonic() - marked

        def folders() -> list[Path]:
            return list(Path("/tmp/rackflow-steps").glob(f"{DAG_ID}-{run_id}-*"))

        while folders() and time.monotonic() - marked < 180:
            time.sleep(0.5)
        print(
            f"marked failed with {before} steps sleeping ({dict(states)}): {left} step processes left "
            f"after {killed_in:.1f} s (goal 0); {len(folders())} job folders left after "
            f"{time.monotonic() - marked:.1f} s (the triggers wait 12 s for a later try to take a step over)"
        )
        return 0 if state == "success" and not left and not folders() and not watch.hits else 1
    finally:
        watch.stop.set()
        stack.stop()
        sshd.stop()


if __name__ == "__main__":
    sys.exit(main())
