"""Model registry: models, immutable versions, aliases and their promotion history, evaluations,
batch predictions and deployments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mlhub.domain.enums import ModelStage, sql_in
from mlhub.store.models.base import Base, CreatedAtMixin, IdMixin, TenantMixin
from mlhub.store.types import utcnow

_FK_VERSION = "model_versions.id"


class RegisteredModel(TenantMixin, IdMixin, CreatedAtMixin, Base):
    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    task: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tags: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    #: promotion gates, e.g. [{"metric": "accuracy", "op": ">=", "value": 0.9}]
    gates: Mapped[list[Any]] = mapped_column(nullable=False, default=list)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_registered_models_tenant_name"),)


class ModelVersion(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """An immutable model version: numbered 1, 2, 3 per model, with schema, metrics and lineage."""

    __tablename__ = "model_versions"

    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stage: Mapped[str] = mapped_column(String(16), nullable=False, default=ModelStage.NONE.value)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="ready")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    framework: Mapped[str] = mapped_column(String(32), nullable=False)
    model_format: Mapped[str] = mapped_column(String(32), nullable=False)
    artifact_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("artifacts.id", ondelete="RESTRICT"), nullable=True
    )
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    reference_stats: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    run_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="SET NULL"))
    job_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    parent_version_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey(_FK_VERSION, ondelete="SET NULL"), nullable=True
    )
    created_by: Mapped[str] = mapped_column(String(128), nullable=False)

    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        # exactly-once registration of a job's output, also when the job is retried or redelivered
        UniqueConstraint("model_id", "job_id", name="uq_model_versions_model_job"),
        CheckConstraint(f"stage IN ({sql_in(ModelStage)})", name="stage"),
        CheckConstraint("version >= 1", name="version_positive"),
    )


class ModelAlias(TenantMixin, IdMixin, Base):
    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )
    alias: Mapped[str] = mapped_column(String(64), nullable=False)
    version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="RESTRICT"))
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),)


class Promotion(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """History of every alias or stage move: who, when, why, which gates passed, forced or not."""

    __tablename__ = "promotions"

    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )
    target_kind: Mapped[str] = mapped_column(String(8), nullable=False)
    target: Mapped[str] = mapped_column(String(64), nullable=False)
    #: promote (through the gates or forced), rollback (back to the previous holder), or archive (a
    #: production version moved aside by a newer one)
    action: Mapped[str] = mapped_column(String(16), nullable=False, default="promote", server_default="promote")
    from_version_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="SET NULL"))
    to_version_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    forced: Mapped[bool] = mapped_column(nullable=False, default=False)
    gate_results: Mapped[list[Any]] = mapped_column(nullable=False, default=list)

    __table_args__ = (
        CheckConstraint("target_kind IN ('alias', 'stage')", name="target_kind"),
        CheckConstraint("action IN ('promote', 'rollback', 'archive')", name="action"),
        Index("ix_promotions_model_target", "model_id", "target_kind", "target", "id"),
    )


class Evaluation(TenantMixin, IdMixin, CreatedAtMixin, Base):
    __tablename__ = "evaluations"

    version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="SET NULL"))
    dataset: Mapped[str] = mapped_column(String(256), nullable=False)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    task: Mapped[str] = mapped_column(String(32), nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    confusion_matrix: Mapped[list[Any] | None] = mapped_column(nullable=True)
    labels: Mapped[list[Any] | None] = mapped_column(nullable=True)
    plot_artifact_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("artifacts.id", ondelete="SET NULL"))

    __table_args__ = (Index("ix_evaluations_version_dataset", "version_id", "dataset", "id"),)


class BatchPrediction(TenantMixin, IdMixin, CreatedAtMixin, Base):
    __tablename__ = "batch_predictions"

    job_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="SET NULL"))
    version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="CASCADE"))
    input_uri: Mapped[str] = mapped_column(Text, nullable=False)
    output_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    row_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cached_rows: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    error_rows: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    errors: Mapped[list[Any]] = mapped_column(nullable=False, default=list)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="running")


class Deployment(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A Serve endpoint for a model alias or version; a version in use here cannot be deleted."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )
    alias: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    config: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_deployments_tenant_name"),)
