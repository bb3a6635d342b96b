"""Serving-side records: prediction logs, A/B and canary experiments, drift monitors, alerting."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mlhub.domain.enums import AlertStatus, ExperimentStatus, sql_in
from mlhub.store.models.base import Base, CreatedAtMixin, IdMixin, TenantMixin

_FK_VERSION = "model_versions.id"
_FK_EXPERIMENT = "experiments.id"


class PredictionLog(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A sampled prediction: inputs, outputs, the version that served it and how long it took."""

    __tablename__ = "prediction_logs"

    version_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="SET NULL"))
    endpoint: Mapped[str] = mapped_column(String(128), nullable=False)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    inputs: Mapped[list[Any]] = mapped_column(nullable=False)
    outputs: Mapped[list[Any] | None] = mapped_column(nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    status_code: Mapped[int] = mapped_column(nullable=False, default=200)
    experiment_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey(_FK_EXPERIMENT, ondelete="SET NULL"))
    variant: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_prediction_logs_version_created", "version_id", "created_at"),)


class Experiment(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """An A/B, canary or shadow experiment between versions of one model."""

    __tablename__ = "experiments"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="ab")
    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=ExperimentStatus.DRAFT.value)
    metric: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metric_kind: Mapped[str] = mapped_column(String(16), nullable=False, default="rate")
    config: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(nullable=True)
    winner: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_experiments_tenant_name"),
        CheckConstraint(f"status IN ({sql_in(ExperimentStatus)})", name="status"),
        CheckConstraint("kind IN ('ab', 'canary', 'shadow')", name="kind"),
        CheckConstraint("metric_kind IN ('rate', 'mean')", name="metric_kind"),
    )


class ExperimentVariant(TenantMixin, IdMixin, Base):
    __tablename__ = "experiment_variants"

    experiment_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_EXPERIMENT, ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="RESTRICT"))
    weight: Mapped[float] = mapped_column(Float, nullable=False)
    shadow: Mapped[bool] = mapped_column(nullable=False, default=False)

    __table_args__ = (
        UniqueConstraint("experiment_id", "name", name="uq_experiment_variants_experiment_name"),
        CheckConstraint("weight >= 0 AND weight <= 1", name="weight"),
    )


class ExperimentAssignment(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """Which variant a request key was routed to (sticky by hash of the key)."""

    __tablename__ = "experiment_assignments"

    experiment_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_EXPERIMENT, ondelete="CASCADE"))
    variant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("experiment_variants.id", ondelete="CASCADE"))
    request_key: Mapped[str] = mapped_column(String(128), nullable=False)

    __table_args__ = (
        UniqueConstraint("experiment_id", "request_key", name="uq_experiment_assignments_key"),
    )


class ExperimentOutcome(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A later label or metric for a request key, joined to its assignment."""

    __tablename__ = "experiment_outcomes"

    experiment_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_EXPERIMENT, ondelete="CASCADE"))
    assignment_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("experiment_assignments.id", ondelete="SET NULL")
    )
    request_key: Mapped[str] = mapped_column(String(128), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (Index("ix_experiment_outcomes_experiment", "experiment_id", "assignment_id"),)


class Monitor(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """Drift monitoring of a model alias against its training reference, on a schedule."""

    __tablename__ = "monitors"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )
    alias: Mapped[str | None] = mapped_column(String(64), nullable=True)
    schedule_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("schedules.id", ondelete="SET NULL"))
    thresholds: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    window_s: Mapped[int] = mapped_column(nullable=False, default=86_400)
    enabled: Mapped[bool] = mapped_column(nullable=False, default=True)

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_monitors_tenant_name"),)


class DriftReport(TenantMixin, IdMixin, CreatedAtMixin, Base):
    __tablename__ = "drift_reports"

    monitor_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("monitors.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(_FK_VERSION, ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="SET NULL"))
    window_start: Mapped[datetime | None] = mapped_column(nullable=True)
    window_end: Mapped[datetime | None] = mapped_column(nullable=True)
    sample_size: Mapped[int] = mapped_column(nullable=False, default=0)
    #: per feature: {"psi": .., "ks_p": .., "chi2_p": .., "drifted": bool}
    features: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    drifted: Mapped[bool] = mapped_column(nullable=False, default=False)
    plot_artifact_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("artifacts.id", ondelete="SET NULL"))


class AlertRule(TenantMixin, IdMixin, CreatedAtMixin, Base):
    __tablename__ = "alert_rules"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    monitor_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("monitors.id", ondelete="CASCADE"))
    condition: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    dedup_window_s: Mapped[int] = mapped_column(nullable=False, default=3600)
    #: closed loop: e.g. {"retrain": {<training spec>}}
    action: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    enabled: Mapped[bool] = mapped_column(nullable=False, default=True)

    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_alert_rules_tenant_name"),
        CheckConstraint("kind IN ('drift', 'error_rate', 'latency_p99', 'job_failures')", name="kind"),
    )


class Alert(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A fired alert, deduplicated by ``dedup_key`` while open (repeats bump ``count``)."""

    __tablename__ = "alerts"

    rule_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("alert_rules.id", ondelete="CASCADE"))
    dedup_key: Mapped[str] = mapped_column(String(256), nullable=False)
    severity: Mapped[str] = mapped_column(String(16), nullable=False, default="warning")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=AlertStatus.OPEN.value)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    count: Mapped[int] = mapped_column(nullable=False, default=1)
    last_seen_at: Mapped[datetime] = mapped_column(nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    delivery_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        CheckConstraint(f"status IN ({sql_in(AlertStatus)})", name="status"),
        CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
        Index("ix_alerts_rule_dedup", "rule_id", "dedup_key", "status"),
    )
