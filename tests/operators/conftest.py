"""Batch job tests: s3:// staging goes to the devfleet's SeaweedFS (set before Airflow reads its config)."""

from __future__ import annotations

import os

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")
