"""Tenants, their API keys, and the append-only audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mlhub.domain.enums import AuditOutcome, sql_in
from mlhub.store.models.base import TENANT_ID_LENGTH, Base, CreatedAtMixin, IdMixin, TenantMixin


class Tenant(CreatedAtMixin, Base):
    """A tenant. Not tenant-scoped by ``tenant_id``: its RLS policy keys on ``id`` instead."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(TENANT_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    max_running_jobs: Mapped[int | None] = mapped_column(nullable=True)
    max_queued_jobs: Mapped[int | None] = mapped_column(nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)

    __table_args__ = (CheckConstraint("status IN ('active', 'suspended')", name="status"),)


class ApiKey(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """An API key. Only the sha256 of the key is stored; ``prefix`` is the public part shown in listings."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(64), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_by: Mapped[str] = mapped_column(String(128), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEvent(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """One event per state-changing operation: who, tenant, action, target, outcome, when.

    Append-only for the application role on PostgreSQL (INSERT and SELECT granted, nothing else).
    """

    __tablename__ = "audit_log"

    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="cli")
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)

    __table_args__ = (
        CheckConstraint(f"outcome IN ({sql_in(AuditOutcome)})", name="outcome"),
        Index("ix_audit_log_tenant_created", "tenant_id", "created_at"),
    )


