"""Experiment tracking: runs with params, tags and step-series metrics; artifacts they produced."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mlhub.domain.enums import RunStatus, sql_in
from mlhub.store.models.base import Base, CreatedAtMixin, IdMixin, TenantMixin


class Run(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A tracked run: a training job's or any script's (``mlhub.start_run``). Runs nest via ``parent_run_id``."""

    __tablename__ = "runs"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    experiment: Mapped[str] = mapped_column(String(128), nullable=False, default="default")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=RunStatus.RUNNING.value)
    job_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="SET NULL"))
    attempt: Mapped[int | None] = mapped_column(nullable=True)
    parent_run_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="SET NULL"))
    source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    code_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)

    __table_args__ = (
        CheckConstraint(f"status IN ({sql_in(RunStatus)})", name="status"),
        # a job attempt owns at most one top-level run: retries never duplicate it
        UniqueConstraint("job_id", "attempt", "name", name="uq_runs_job_attempt_name"),
    )


class RunParam(TenantMixin, IdMixin, Base):
    __tablename__ = "run_params"

    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(128), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "key", name="uq_run_params_run_key"),)


class RunTag(TenantMixin, IdMixin, Base):
    __tablename__ = "run_tags"

    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(128), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "key", name="uq_run_tags_run_key"),)


class Metric(TenantMixin, IdMixin, Base):
    """One point of a step series. Written in batches (the hot path of tracking)."""

    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(128), nullable=False)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    timestamp: Mapped[datetime] = mapped_column(nullable=False)

    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step"),)


class Artifact(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A content-addressed blob in the artifact store, recorded once its bytes are safely stored."""

    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    media_type: Mapped[str] = mapped_column(String(128), nullable=False)
    backend: Mapped[str] = mapped_column(String(16), nullable=False)
    backend_key: Mapped[str] = mapped_column(String(256), nullable=False)
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    run_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="SET NULL"))

    __table_args__ = (
        CheckConstraint("size_bytes >= 0", name="size"),
        CheckConstraint("backend IN ('filesystem', 'gridfs')", name="backend"),
        UniqueConstraint("tenant_id", "backend", "sha256", name="uq_artifacts_tenant_backend_sha"),
    )


class RunArtifactLink(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """An artifact logged by a run, under the name the run gave it. Artifacts are stored once per tenant by
    content, so two runs that log the same bytes share one artifact and each has its own link."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    artifact_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("artifacts.id", ondelete="CASCADE"),
                                             nullable=False)
    name: Mapped[str] = mapped_column(String(256), nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "artifact_id", "name", name="uq_run_artifacts_run_artifact_name"),)
