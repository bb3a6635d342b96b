"""Promotion history says what each move was (promote, rollback, archive), so that a rollback can walk the
history back one real promotion at a time; evaluations get an index for "newest evaluation of a version on a
dataset", which every gate check reads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions") as batch:
        batch.add_column(sa.Column("action", sa.String(length=16), nullable=False, server_default="promote"))
        batch.create_check_constraint("action", "action IN ('promote', 'rollback', 'archive')")
    op.create_index("ix_promotions_model_target", "promotions", ["model_id", "target_kind", "target", "id"])
    op.create_index("ix_evaluations_version_dataset", "evaluations", ["version_id", "dataset", "id"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_version_dataset", table_name="evaluations")
    op.drop_index("ix_promotions_model_target", table_name="promotions")
    with op.batch_alter_table("promotions") as batch:
        batch.drop_constraint("action", type_="check")
        batch.drop_column("action")
