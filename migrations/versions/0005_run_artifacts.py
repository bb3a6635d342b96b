"""Runs link the artifacts they log: artifacts are stored once per tenant by content, so a second run that logs
the same bytes must still list them. Existing run artifacts get their link from ``artifacts.run_id``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import rls

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("artifact_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_artifacts_run_id_runs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"], name=op.f("fk_run_artifacts_artifact_id_artifacts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_run_artifacts_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_artifacts")),
        sa.UniqueConstraint("run_id", "artifact_id", "name", name="uq_run_artifacts_run_artifact_name"),
    )
    op.create_index("ix_run_artifacts_tenant_id", "run_artifacts", ["tenant_id"], unique=False)
    op.execute("INSERT INTO run_artifacts (run_id, artifact_id, name, tenant_id, created_at) "
               "SELECT run_id, id, COALESCE(name, sha256), tenant_id, created_at FROM artifacts "
               "WHERE run_id IS NOT NULL")
    bind = op.get_bind()
    rls.protect_table(bind, "run_artifacts")
    if bind.dialect.name == "postgresql":
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE run_artifacts_id_seq TO {rls.APP_ROLE}, {rls.SCHEDULER_ROLE}")


def downgrade() -> None:
    op.drop_index("ix_run_artifacts_tenant_id", table_name="run_artifacts")
    op.drop_table("run_artifacts")
