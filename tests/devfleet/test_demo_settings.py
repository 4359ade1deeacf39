"""What `make demo` configures, read without starting it."""

from __future__ import annotations

from pathlib import Path

from rackflow.dag_factories.s3_intake import load_intakes
from rackflow_devfleet.demo import DEMO_USERS, airflow_env
from tests.conftest import REPO


def test_demo_intake_is_the_readme_bucket_and_alice_sees_its_jobs(tmp_path):
    env = airflow_env(REPO, tmp_path / "home", 8080)
    intakes = load_intakes(Path(env["AIRFLOW__RACKFLOW__S3_INTAKE_FILE"]))
    assert [(i.dag_id, i.bucket, i.aws_conn_id, i.run_as) for i in intakes] == [
        ("s3_intake_rackflow_jobs", "rackflow-jobs", "aws_fleet_s3", "rf-intake")
    ]
    assert intakes[0].visible_to == ("alice",)
    assert DEMO_USERS["alice"][0] == "user"
