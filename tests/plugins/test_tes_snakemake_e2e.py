"""Snakemake drives rackflow's TES: ``snakemake-executor-plugin-tes`` 0.1.3 (py-tes 0.4.2), unmodified.

A three-rule workflow (``numbers`` -> ``squares`` -> ``total``, plus the local target rule) runs to
completion with SeaweedFS S3 as Snakemake's default storage, each rule a TES task: a rackflow job run
by the session's Airflow standalone on the devfleet's real Slurm, as alice's job account.

What it takes on these machines, and how the test provides it:

* Snakemake, the plugin and the S3 storage plugin live in a virtualenv of their own, built by the
  ``snakemake_venv`` fixture from ``snakemake-tes-requirements.txt`` (exact pins) with Debian's
  ``/usr/bin/python3``: the plugin needs py-tes 0.4.x, which cannot sit next to rackflow's py-tes
  1.1.4, and the job account must be able to run that Python (the tests' own interpreter lives under
  root's private home).
* Each task's one executor is ``/bin/bash /tmp/run_snakemake.sh`` in workdir ``/tmp``, with the job
  script as an inline input at ``/tmp/run_snakemake.sh``; the script starts ``mkdir /tmp/conda && cd
  /tmp``. These are container paths; there is no container runtime here (no Apptainer in Debian, no
  image registry), so the stack runs TES executors with ``tes_container_runtime = bwrap``
  (bubblewrap from Debian): the node's own filesystem, as the job account, with the task's ``/tmp``
  being its job directory's ``tmp``. The image the plugin names (``snakemake/snakemake:v...``) is
  recorded with the task, not run.
* Snakemake on the node: the job script calls ``pip install --target .snakemake/pip-deployments
  snakemake-storage-plugin-s3`` (from PyPI, on the node) and ``python -m snakemake`` from its PATH.
  The stack's ``[rackflow] tes_executor_path`` puts the venv's ``bin`` first on TES jobs' PATH, as a
  site would its Snakemake installation. Sources, inputs and outputs go through S3
  (``--default-storage-provider s3``), so the plugin names no ``file://`` input (it would for local
  files; rackflow's staging refuses those).
* The plugin reads ``$GITHUB_WORKSPACE/funnel.log`` when a task fails (a leftover of its own CI):
  the test points it at a file so that a failure reports the task instead of a ``KeyError``.

Not covered: the workflow's S3 credentials are the devfleet's one SeaweedFS identity, passed by
Snakemake on each job's command line (the plugin's design: they are in the task alice submits).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SNAKEMAKE_PYTHON, SNAKEMAKE_REQUIREMENTS, SNAKEMAKE_VENV

SNAKEFILE = """
localrules: all

rule all:
    input: "total.txt"

rule numbers:
    output: "numbers.txt"
    shell: "seq 1 10 > {output}"

rule squares:
    input: "numbers.txt"
    output: "squares.txt"
    shell: "while read n; do echo $((n * n)); done < {input} > {output}"

rule total:
    input: "squares.txt"
    output: "total.txt"
    shell: "s=0; while read n; do s=$((s + n)); done < {input}; echo $s > {output}"
"""


@pytest.fixture(scope="module")
def snakemake_venv() -> Iterator[Path]:
    """Snakemake 9 with the TES executor and S3 storage plugins (exact pins) in ``SNAKEMAKE_VENV``,
    which the stack's ``[rackflow] tes_executor_path`` puts first on TES jobs' PATH.

    Built once per set of pins (the directory is named by their hash, see tests/conftest.py), under a
    lock other sessions wait on; a build cut short (no ``complete`` mark) is built again from scratch.
    A session that finds it installs the pins again (a no-op when nothing is missing) and checks it.
    """
    venv = SNAKEMAKE_VENV
    complete = venv / ".rackflow-complete"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([SNAKEMAKE_PYTHON, "-m", "venv", str(venv)], check=True)
            venv.chmod(0o755)  # job accounts run its Python
        pip = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-r", str(SNAKEMAKE_REQUIREMENTS)],
            capture_output=True,
            text=True,
        )
        assert pip.returncode == 0, pip.stderr[-3000:]
        check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        complete.touch()
    yield venv


@pytest.mark.timeout(1500)
def test_snakemake_runs_a_three_rule_workflow_with_s3_storage_through_tes(
    airflow_stack: Any, devfleet: Any, snakemake_venv: Path, tmp_path: Path
) -> None:
    import tes

    airflow_stack.wait_for_dag("rackflow_job")
    alice = tes.HTTPClient(
        url=f"{airflow_stack.url}/rackflow", token=airflow_stack.token("alice"), timeout=180
    )
    # A fresh stack's first task start can fail while the API server builds its execution-API routes
    # (see test_jobs_e2e), and the plugin's py-tes 0.4 has a 10 s HTTP timeout: one small task first.
    for _attempt in range(2):
        warm_id = alice.create_task(
            tes.Task(name="warm-up", executors=[tes.Executor(image="a", command=["true"])])
        )
        warm = alice.wait(warm_id, timeout=300)
        if warm.state == "COMPLETE":
            break
    assert warm.state == "COMPLETE", alice.get_task(warm_id, view="FULL")
    s3 = devfleet.s3
    prefix = f"snakemake/{uuid.uuid4().hex[:8]}"
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "funnel.log").write_text("(rackflow: read the failed task's FULL view through TES)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AIRFLOW", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{snakemake_venv / 'bin'}:/usr/bin:/bin",
        HOME=str(tmp_path),
        GITHUB_WORKSPACE=str(tmp_path),
    )
    log = tmp_path / "snakemake.log"
    started = time.time()
    with open(log, "w") as out:
        run = subprocess.Popen(
            [
                str(snakemake_venv / "bin" / "snakemake"),
                "--executor", "tes",
                "--tes-url", f"{airflow_stack.url}/rackflow/ga4gh/tes",
                "--tes-token", airflow_stack.token("alice"),
                "--default-storage-provider", "s3",
                "--default-storage-prefix", f"s3://rackflow-results/{prefix}",
                "--storage-s3-endpoint-url", s3.endpoint_url,
                "--storage-s3-access-key", s3.access_key,
                "--storage-s3-secret-key", s3.secret_key,
                "--jobs", "2",
                "--latency-wait", "5",
                # Status rounds every second instead of every 10 s (Snakemake's default); the plugin's
                # own 40 s before the first round (init_seconds_before_status_checks) stays.
                "--seconds-between-status-checks", "1",
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            returncode = run.wait(timeout=1200)
        except subprocess.TimeoutExpired:
            run.kill()
            returncode = run.wait()
    text = log.read_text()
    ours = [
        alice.get_task(t.id, view="FULL")
        for t in alice.list_tasks(view="BASIC").tasks
        if t.creation_time is not None
        and t.creation_time.timestamp() >= started - 5
        and t.executors[0].command == ["/bin/bash", "/tmp/run_snakemake.sh"]
    ]
    report = "\n".join(
        f"{t.id} {t.name} {t.state}: "
        + " | ".join(f"{e.stdout}\n{e.stderr}" for e in t.logs[0].logs)
        + "\n".join(t.logs[0].system_logs or [])
        for t in ours
    )
    assert returncode == 0, text[-4000:] + "\n--- TES tasks ---\n" + report[-6000:]
    assert "steps (100%) done" in text, text[-3000:]

    objects = s3.client()
    body = objects.get_object(Bucket="rackflow-results", Key=f"{prefix}/total.txt")["Body"].read()
    assert body == b"385\n"  # 1 + 4 + ... + 100

    # Each rule ran as one of alice's TES tasks, COMPLETE, on Slurm (read with py-tes 1.1.4 too).
    rules = sorted(t.name.split("_")[1] if t.name and "_" in t.name else str(t.name) for t in ours)
    assert len(ours) == 3, [(t.name, t.state) for t in ours]
    assert all(t.state == "COMPLETE" for t in ours), [(t.name, t.state) for t in ours]
    assert all(t.logs[0].metadata["scheduler"] == "slurm" for t in ours)
    assert all(t.executors[0].image.startswith("snakemake/snakemake") for t in ours), rules
