"""diagnostic job kind

Diagnostic jobs (sleep, print, fail N attempts) exercise the queue end to end without training anything:
smoke tests of a deployment, the benchmarks' no-op jobs, and the reliability tests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_KINDS = "'training', 'evaluation', 'batch_prediction', 'hpo', 'drift_check'"
NEW_KINDS = OLD_KINDS + ", 'diagnostic'"


def _replace_kind_check(kinds: str) -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({kinds})")


def upgrade() -> None:
    _replace_kind_check(NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'diagnostic'")
    _replace_kind_check(OLD_KINDS)
