"""Airflow DAGs of the S3 job intake: one ``s3_intake_<name>`` per bucket in ``[rackflow] s3_intake_file``
(see rackflow.dag_factories.s3_intake)."""

from __future__ import annotations

from rackflow.dag_factories.s3_intake import build_all

globals().update(build_all())
