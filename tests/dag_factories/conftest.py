"""S3 intake DAG tests: the intake config the DAG file reads, written before Airflow parses it.

The root conftest made a throwaway AIRFLOW_HOME; ``s3_intake.yaml`` there defines the test intakes, each
on its own bucket of the devfleet's SeaweedFS, with job directories under a temporary base directory.
The ``sftp`` intake (execution host: the devfleet's sshd as a login node) is added by its fixture once
the fleet runs, because its scheduler commands need the session Slurm's ``SLURM_CONF``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from rackflow_devfleet.fleet import INTAKE_ACCOUNT
from tests.dag_factories.s3_intake_support import CONN_ID

# Job directory bases: only root writes them, the intakes' run_as account gets through (0711).
JOB_BASE = Path(tempfile.mkdtemp(prefix="rackflow-aws-job-"))
JOB_BASE.chmod(0o711)
INTAKES = {
    # name: bucket
    "e2e": "rf-intake-e2e",
    "race": "rf-intake-race",
    "pause": "rf-intake-pause",
    "api": "rf-intake-api",
    "clear": "rf-intake-clear",
}
# Users besides admins an intake shows its jobs to in the job API (its visible_to).
VISIBLE_TO = {"api": ["bob"]}
# Intakes whose waits poll the scheduler slowly: a test acts on a wait before it sees its job end.
SLOW_POLL = {"clear": 60.0}


def _intake(name: str, bucket: str) -> dict[str, object]:
    return {
        "name": name,
        "bucket": bucket,
        "aws_conn_id": CONN_ID,
        "run_as": INTAKE_ACCOUNT,
        "job_base_dir": str(JOB_BASE / name),
        "poll_interval": 0.5,
        "scheduler_poll_interval": SLOW_POLL.get(name, 0.5),
        **({"visible_to": VISIBLE_TO[name]} if name in VISIBLE_TO else {}),
    }


INTAKE_FILE = Path(os.environ["AIRFLOW_HOME"]) / "s3_intake.yaml"


def _write_intakes(extra: list[dict[str, object]]) -> None:
    # Replaced atomically: the Airflow stack's dag-processor may be reading it.
    tmp = INTAKE_FILE.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"intakes": [*(_intake(n, b) for n, b in INTAKES.items()), *extra]}))
    tmp.replace(INTAKE_FILE)


_write_intakes([])
# Named explicitly so the Airflow stack, which has an AIRFLOW_HOME of its own, reads the same file.
os.environ["AIRFLOW__RACKFLOW__S3_INTAKE_FILE"] = str(INTAKE_FILE)


@pytest.fixture(scope="session")
def intake_buckets(devfleet: object, rackflow_db: str) -> dict[str, str]:
    """The test intakes' buckets (and the rackflow DB, where the intakes record their jobs)."""
    client = devfleet.s3.client()  # type: ignore[attr-defined]
    for bucket in INTAKES.values():
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
    return INTAKES


@pytest.fixture(scope="session")
def job_base() -> Path:
    return JOB_BASE


# Job directories of the sftp intake: an absolute path, apart from the local intakes' JOB_BASE.
SFTP_JOB_BASE = Path(tempfile.mkdtemp(prefix="rackflow-sftp-aws-job-"))
SFTP_JOB_BASE.chmod(0o711)
SFTP_INTAKE = {"name": "sftp", "bucket": "rf-intake-sftp"}


@pytest.fixture(scope="session")
def sftp_intake(devfleet: object, intake_buckets: dict[str, str]) -> dict[str, object]:
    """The intake DAG ``s3_intake_sftp``: stage-in, submit, wait and stage-out on the devfleet's sshd
    (``ssh_fleet``, which logs in as this user on this machine, where the session's Slurm runs)."""
    from rackflow_devfleet.fleet import SSH_CONN_ID

    client = devfleet.s3.client()  # type: ignore[attr-defined]
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=SFTP_INTAKE["bucket"])
    intake = {
        **_intake(SFTP_INTAKE["name"], SFTP_INTAKE["bucket"]),
        "job_base_dir": str(SFTP_JOB_BASE),
        "ssh_conn_id": SSH_CONN_ID,
        # a remote shell does not inherit the worker's environment
        "scheduler_env": dict(devfleet.slurm.env),  # type: ignore[attr-defined]
    }
    _write_intakes([intake])
    return intake
