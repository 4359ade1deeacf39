"""What `make demo` configures, read without starting it."""

from __future__ import annotations

from pathlib import Path

from rackflow.dag_factories.s3_intake import load_intakes
from rackflow_devfleet.demo import DEMO_USERS, airflow_env, write_intake_file
from tests.conftest import REPO


def test_demo_intake_is_the_readme_bucket_alice_sees_its_jobs_and_its_job_dirs_are_the_demos(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = airflow_env(REPO, home, 8080)
    intake_file = Path(env["AIRFLOW__RACKFLOW__S3_INTAKE_FILE"])
    assert intake_file == home / "s3_intake.yaml"
    write_intake_file(intake_file, tmp_path / "fleet" / "s3-jobs")
    intakes = load_intakes(intake_file)
    assert [(i.dag_id, i.bucket, i.aws_conn_id, i.run_as) for i in intakes] == [
        ("s3_intake_rackflow_jobs", "rackflow-jobs", "aws_fleet_s3", "rf-intake")
    ]
    assert intakes[0].visible_to == ("alice",)
    assert DEMO_USERS["alice"][0] == "user"
    # Not the site default /var/lib/rackflow/s3-jobs, which outlives the demo's (fresh) bucket.
    assert intakes[0].job_base_dir == str(tmp_path / "fleet" / "s3-jobs")
