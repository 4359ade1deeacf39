"""reservations: who canceled one and when (the owner is ``created_by``, the authenticated user)

Only a reservation's owner or an admin cancels it; the canceling user and time are kept with it.

Revision ID: 0007_reservation_cancel
Revises: 0006_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_reservation_cancel"
down_revision = "0006_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rackflow_reservation") as batch:
        batch.add_column(sa.Column("canceled_by", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_rackflow_reservation_created_by", ["created_by"])


def downgrade() -> None:
    with op.batch_alter_table("rackflow_reservation") as batch:
        batch.drop_index("ix_rackflow_reservation_created_by")
        batch.drop_column("canceled_at")
        batch.drop_column("canceled_by")
