"""batch jobs: kept stdout/stderr tails and the job directory's retention

Revision ID: 0010_job_output
Revises: 0009_job_account

``rackflow_job_output`` keeps the last bytes of each job's stdout and stderr, copied when the job
ends, so the job API can show them after the job directory is removed. ``workdir_remove_after`` /
``workdir_removed_at`` record a directory kept by ``[rackflow] job_directory_retention``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_job_output"
down_revision = "0009_job_account"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rackflow_job_output",
        sa.Column("dag_id", sa.String(length=250), primary_key=True),
        sa.Column("run_id", sa.String(length=250), primary_key=True),
        sa.Column("stream", sa.String(length=8), primary_key=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("rackflow_job") as batch:
        batch.add_column(sa.Column("workdir_remove_after", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("workdir_removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rackflow_job") as batch:
        batch.drop_column("workdir_removed_at")
        batch.drop_column("workdir_remove_after")
    op.drop_table("rackflow_job_output")
