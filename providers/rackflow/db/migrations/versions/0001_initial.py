"""initial: hosts, power history, reservations

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "rackflow_host",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("group", sa.String(length=128), nullable=False),
        sa.Column("rack", sa.String(length=128), nullable=True),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("libvirt_conn_id", sa.String(length=250), nullable=False),
        sa.Column("bmc_kind", sa.String(length=16), nullable=True),
        sa.Column("bmc_conn_id", sa.String(length=250), nullable=True),
        sa.Column("bmc_system", sa.String(length=250), nullable=True),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("status_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("rackflow_host", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rackflow_host_group"), ["group"], unique=False)

    op.create_table(
        "rackflow_reservation",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vm_count", sa.Integer(), nullable=False),
        sa.Column("vcpus_per_vm", sa.Integer(), nullable=False),
        sa.Column("memory_mib_per_vm", sa.Integer(), nullable=False),
        sa.Column("group", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=250), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rackflow_reservation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rackflow_reservation_start"), ["start"], unique=False)

    op.create_table(
        "rackflow_host_transition",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("field", sa.String(length=8), nullable=False),
        sa.Column("from_value", sa.String(length=16), nullable=True),
        sa.Column("to_value", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=250), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["host"], ["rackflow_host.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rackflow_host_transition", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rackflow_host_transition_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_rackflow_host_transition_host"), ["host"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("rackflow_host_transition", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rackflow_host_transition_host"))
        batch_op.drop_index(batch_op.f("ix_rackflow_host_transition_at"))

    op.drop_table("rackflow_host_transition")
    with op.batch_alter_table("rackflow_reservation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rackflow_reservation_start"))

    op.drop_table("rackflow_reservation")
    with op.batch_alter_table("rackflow_host", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rackflow_host_group"))

    op.drop_table("rackflow_host")
