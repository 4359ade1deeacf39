"""jobs: peak memory in a 64-bit column

A job's peak memory (bytes, from the scheduler's accounting) passes 2 GiB routinely; a 32-bit INTEGER
on Postgres refused the job's final record.

Revision ID: 0008_job_memory_bigint
Revises: 0007_reservation_cancel
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_job_memory_bigint"
down_revision = "0007_reservation_cancel"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rackflow_job") as batch:
        batch.alter_column(
            "max_memory", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("rackflow_job") as batch:
        batch.alter_column(
            "max_memory", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True
        )
