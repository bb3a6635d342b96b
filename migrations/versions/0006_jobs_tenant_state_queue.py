"""The console's queue depths count a tenant's jobs by queue and state on every jobs page: ``ix_jobs_tenant_state``
(tenant_id, state) gains ``queue`` so that count reads the index alone (10,000 jobs: about 10 ms -> 1.3 ms on
SQLite, measured by benchmarks/ui_pages.py), and it still serves the lookups by tenant and state it served.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_tenant_state", table_name="jobs")
    op.create_index("ix_jobs_tenant_state_queue", "jobs", ["tenant_id", "state", "queue"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_state_queue", table_name="jobs")
    op.create_index("ix_jobs_tenant_state", "jobs", ["tenant_id", "state"])
