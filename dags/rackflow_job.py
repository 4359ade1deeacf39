"""Batch jobs on the local scheduler: one run per job (see rackflow.dag_factories.job).

Configure with ``[rackflow]`` options: ``job_scheduler`` (slurm), ``job_ssh_conn_id`` (empty: run
scheduler commands on the worker), ``job_aws_conn_id`` (aws_default) for s3:// staging; what jobs may
stage comes from the ``staging_*`` allow-lists (README, "Staging allow-lists"; empty: nothing remote).
"""

from __future__ import annotations

from airflow.configuration import conf

from rackflow.dag_factories.job import create_job_dag

dag = create_job_dag(
    scheduler=conf.get("rackflow", "job_scheduler", fallback="slurm") or "slurm",
    ssh_conn_id=conf.get("rackflow", "job_ssh_conn_id", fallback="") or None,
    aws_conn_id=conf.get("rackflow", "job_aws_conn_id", fallback="aws_default") or "aws_default",
)
