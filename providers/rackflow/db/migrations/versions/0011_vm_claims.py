"""VM launches: names and capacity claimed in the database before libvirt defines the VMs

Revision ID: 0011_vm_claims
Revises: 0010_job_output

``rackflow_vm_claim`` holds the VMs a launch has reserved on a host and not yet defined there;
``rackflow_host.launch_serial`` is the row every claim writes first, so concurrent launches on one
host (from any worker) take turns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_vm_claims"
down_revision = "0010_job_output"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "rackflow_host", sa.Column("launch_serial", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_table(
        "rackflow_vm_claim",
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("launch", sa.String(length=800), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host"], ["rackflow_host.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host", "name"),
    )
    op.create_index("ix_rackflow_vm_claim_launch", "rackflow_vm_claim", ["launch"])
    op.create_index("ix_rackflow_vm_claim_expires_at", "rackflow_vm_claim", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_rackflow_vm_claim_expires_at", table_name="rackflow_vm_claim")
    op.drop_index("ix_rackflow_vm_claim_launch", table_name="rackflow_vm_claim")
    op.drop_table("rackflow_vm_claim")
    with op.batch_alter_table("rackflow_host") as batch:
        batch.drop_column("launch_serial")
