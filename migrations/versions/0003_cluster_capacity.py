"""cluster capacity, as the orchestrator last saw it

One row: the Ray cluster's total CPUs and GPUs, written by the orchestrator, read at submit time so that a job
that asks for more than the whole cluster has (a num_workers beyond its capacity) is refused with a clear
message instead of being queued. Not tenant data: every tenant may read it, only the scheduler writes it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import rls

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_capacity",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("cpus", sa.Float(), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_cluster_capacity_singleton")),
        sa.CheckConstraint("cpus >= 0 AND gpus >= 0", name=op.f("ck_cluster_capacity_amounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_capacity")),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(f"GRANT SELECT ON cluster_capacity TO {rls.APP_ROLE}")
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON cluster_capacity TO {rls.SCHEDULER_ROLE}")


def downgrade() -> None:
    op.drop_table("cluster_capacity")
