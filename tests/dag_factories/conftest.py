"""S3 intake DAG tests: the intake config the DAG file reads, written before Airflow parses it.

The root conftest made a throwaway AIRFLOW_HOME; ``s3_intake.yaml`` there defines the test intakes, each
on its own bucket of the devfleet's SeaweedFS, with job directories under a temporary base directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.dag_factories.s3_intake_support import CONN_ID

JOB_BASE = Path(tempfile.mkdtemp(prefix="rackflow-aws-job-"))
INTAKES = {
    # name: bucket
    "e2e": "rf-intake-e2e",
    "race": "rf-intake-race",
    "pause": "rf-intake-pause",
}


def _intake(name: str, bucket: str) -> dict[str, object]:
    return {
        "name": name,
        "bucket": bucket,
        "aws_conn_id": CONN_ID,
        "job_base_dir": str(JOB_BASE / name),
        "poll_interval": 0.5,
        "scheduler_poll_interval": 0.5,
    }


INTAKE_FILE = Path(os.environ["AIRFLOW_HOME"]) / "s3_intake.yaml"
INTAKE_FILE.write_text(yaml.safe_dump({"intakes": [_intake(n, b) for n, b in INTAKES.items()]}))
# Named explicitly so the Airflow stack, which has an AIRFLOW_HOME of its own, reads the same file.
os.environ["AIRFLOW__RACKFLOW__S3_INTAKE_FILE"] = str(INTAKE_FILE)


@pytest.fixture(scope="session")
def intake_buckets(devfleet: object) -> dict[str, str]:
    client = devfleet.s3.client()  # type: ignore[attr-defined]
    for bucket in INTAKES.values():
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
    return INTAKES


@pytest.fixture(scope="session")
def job_base() -> Path:
    return JOB_BASE
