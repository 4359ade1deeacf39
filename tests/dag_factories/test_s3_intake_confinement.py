"""Issue 13 acceptance for the S3 intake on real SeaweedFS and Slurm: an uploaded job script runs as the
intake's run_as account, sees none of the worker's environment and can read no Airflow secret and no
other account's job directory -- asserted on what the job wrote, brought back by the intake's stage-out.
"""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

from rackflow import settings
from rackflow.hooks.scheduler import BatchSchedulerHook
from rackflow_devfleet.fleet import INTAKE_ACCOUNT, JOB_ACCOUNTS
from tests.confinement import PROBE, assert_confined
from tests.dag_factories.s3_intake_support import read_status, upload_job


def test_s3_job_runs_as_run_as_without_the_workers_environment_or_secrets(
    devfleet, airflow_db, rackflow_db, intake_buckets, airflow_home, shared_tmp
):
    from rackflow.dag_factories.s3_intake import build_all

    # Another account's job directory, made and handed over as rackflow does for a job of bob's.
    hook = BatchSchedulerHook()
    bob_dir = str(shared_tmp / "rf-bob-job")
    hook.create_job_dir(bob_dir)
    (Path(bob_dir) / "secret.txt").write_text("bob-only\n")
    hook.hand_over(bob_dir, JOB_ACCOUNTS["bob"])
    targets = [
        str(airflow_home / "airflow.cfg"),
        str(airflow_home / "simple_auth_manager_passwords.json.generated"),
        settings.database_url().removeprefix("sqlite:///"),
        bob_dir,
        f"{bob_dir}/secret.txt",
    ]
    assert all(Path(t).exists() for t in targets), targets
    script = f"#!/bin/bash\nset -- {' '.join(map(shlex.quote, targets))}\n{{\n{PROBE}\n}} > probe.txt\n"
    client = devfleet.s3.client()
    bucket = intake_buckets["e2e"]
    prefix = f"conf{uuid.uuid4().hex[:6]}"
    upload_job(client, bucket, prefix, script=script.encode(), files={})

    build_all()["s3_intake_e2e"].test()

    assert read_status(client, bucket, prefix).splitlines()[0] == "COMPLETED"
    output = client.get_object(Bucket=bucket, Key=f"{prefix}/probe.txt")["Body"].read().decode()
    assert_confined(output, INTAKE_ACCOUNT, targets)
