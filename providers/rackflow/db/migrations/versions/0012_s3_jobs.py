"""batch jobs: S3 intake jobs in the job record

Revision ID: 0012_s3_jobs
Revises: 0011_vm_claims

One intake DAG run carries many S3 jobs, so an S3 job's row is keyed by its intake DAG and its own job
key (``run_id`` holds the key, unique per claim), not by the run: ``source`` says ``s3``,
``dag_run_id`` is the Airflow run that carries it, ``s3_bucket``/``s3_prefix`` where it came from, and
``viewers`` the users besides admins the intake lets see it (``visible_to``, comma-separated), and
``s3_staged`` what its stage-in left (JSON: job directory, manifest), so a retried accept submits it
without staging again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_s3_jobs"
down_revision = "0011_vm_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rackflow_job") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("dag_run_id", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("s3_bucket", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("s3_prefix", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("viewers", sa.Text(), nullable=True))
        batch.add_column(sa.Column("s3_staged", sa.Text(), nullable=True))
        batch.create_index("ix_rackflow_job_source", ["source"])


def downgrade() -> None:
    with op.batch_alter_table("rackflow_job") as batch:
        batch.drop_index("ix_rackflow_job_source")
        batch.drop_column("s3_staged")
        batch.drop_column("viewers")
        batch.drop_column("s3_prefix")
        batch.drop_column("s3_bucket")
        batch.drop_column("dag_run_id")
        batch.drop_column("source")
