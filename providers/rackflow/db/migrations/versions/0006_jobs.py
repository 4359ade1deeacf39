"""batch jobs: job records (ownership, scheduler id, termination) and their events

Revision ID: 0006_jobs
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_jobs"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rackflow_job",
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("owner", sa.String(length=250), nullable=True),
        sa.Column("scheduler", sa.String(length=16), nullable=True),
        sa.Column("cluster", sa.String(length=250), nullable=True),
        sa.Column("scheduler_job_id", sa.String(length=64), nullable=True),
        sa.Column("job_name", sa.String(length=250), nullable=True),
        sa.Column("workdir", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("cpu_time_s", sa.Integer(), nullable=True),
        sa.Column("wall_time_s", sa.Integer(), nullable=True),
        sa.Column("max_memory", sa.Integer(), nullable=True),
        sa.Column("nodes", sa.Text(), nullable=True),
        sa.Column("terminate_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("terminate_requested_by", sa.String(length=250), nullable=True),
        sa.Column("cancel_issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dag_id", "run_id"),
    )
    op.create_index("ix_rackflow_job_owner", "rackflow_job", ["owner"])
    op.create_table(
        "rackflow_job_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("scheduler_job_id", sa.String(length=64), nullable=True),
        sa.Column("node", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rackflow_job_event_run", "rackflow_job_event", ["dag_id", "run_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_rackflow_job_event_run", table_name="rackflow_job_event")
    op.drop_table("rackflow_job_event")
    op.drop_index("ix_rackflow_job_owner", table_name="rackflow_job")
    op.drop_table("rackflow_job")
