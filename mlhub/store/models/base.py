"""Declarative base with a naming convention, so every constraint and index has a stable name."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from mlhub.store.types import BigIntPK, JSONDoc, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TENANT_ID_LENGTH = 36


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONDoc, list[Any]: JSONDoc, datetime: UTCDateTime}


class IdMixin:
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)


class TenantMixin:
    """Every tenant-owned table has ``tenant_id``; PostgreSQL RLS policies key on it (see migrations)."""

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:
        return mapped_column(
            String(TENANT_ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
        )


class CreatedAtMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow, nullable=False)
