"""Jobs, their events and logs, recurring schedules, HPO trials, and the cluster's capacity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mlhub.domain.enums import JobKind, JobState, QueueName, sql_in
from mlhub.store.models.base import Base, CreatedAtMixin, IdMixin, TenantMixin
from mlhub.store.types import utcnow


class Job(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A unit of work on one of the four queues. The database is the source of truth for jobs.

    ``attempt`` is the lease: a completion reported for any other attempt is stale and rejected.
    ``id`` is monotonic and gives FIFO order within a priority level.
    """

    __tablename__ = "jobs"

    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=JobState.QUEUED.value)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    resources: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    submitted_by: Mapped[str] = mapped_column(String(128), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    schedule_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("schedules.id", ondelete="SET NULL"), nullable=True
    )
    scheduled_for: Mapped[datetime | None] = mapped_column(nullable=True)
    parent_job_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    cancel_requested: Mapped[bool] = mapped_column(nullable=False, default=False)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint(f"state IN ({sql_in(JobState)})", name="state"),
        CheckConstraint(f"queue IN ({sql_in(QueueName)})", name="queue"),
        CheckConstraint(f"kind IN ({sql_in(JobKind)})", name="kind"),
        CheckConstraint("attempt >= 0 AND max_attempts >= 1", name="attempts"),
        CheckConstraint("priority BETWEEN -1000 AND 1000", name="priority"),
        # dispatch scans: non-terminal jobs of a queue in priority/FIFO order
        Index("ix_jobs_dispatch", "queue", "state", "priority", "id"),
        # by tenant and state; with queue it alone answers the console's queue depths (count by queue, state)
        Index("ix_jobs_tenant_state_queue", "tenant_id", "state", "queue"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        # a schedule's occurrence is enqueued once, also across orchestrator restarts
        UniqueConstraint("schedule_id", "scheduled_for", name="uq_jobs_schedule_occurrence"),
    )


class JobEvent(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A state transition or progress report of one attempt of a job."""

    __tablename__ = "job_events"

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)

    __table_args__ = (
        CheckConstraint("type IN ('state', 'progress', 'metric', 'warning')", name="type"),
        Index("ix_job_events_job", "job_id", "id"),
    )


class JobLog(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """Captured stdout/stderr of one attempt, in ordered chunks, kept after the Ray cluster is gone."""

    __tablename__ = "job_logs"

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    worker: Mapped[str] = mapped_column(String(64), nullable=False, default="driver")
    stream: Mapped[str] = mapped_column(String(8), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (
        CheckConstraint("stream IN ('stdout', 'stderr')", name="stream"),
        UniqueConstraint("job_id", "attempt", "worker", "stream", "seq", name="uq_job_logs_chunk"),
    )


class Schedule(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """A recurring job: a cron expression or an interval, and the spec to enqueue at each occurrence."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    cron: Mapped[str | None] = mapped_column(String(128), nullable=True)
    interval_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    enabled: Mapped[bool] = mapped_column(nullable=False, default=True)
    next_run_at: Mapped[datetime] = mapped_column(nullable=False)
    last_enqueued_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        CheckConstraint("(cron IS NULL) <> (interval_s IS NULL)", name="cron_xor_interval"),
        UniqueConstraint("tenant_id", "name", name="uq_schedules_tenant_name"),
    )


class HpoTrial(TenantMixin, IdMixin, CreatedAtMixin, Base):
    """One Ray Tune trial of an HPO job: its params, last metrics, status and the run that recorded it."""

    __tablename__ = "hpo_trials"

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    trial_id: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    iterations: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    run_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "trial_id", name="uq_hpo_trials_job_trial"),)


class ClusterCapacity(Base):
    """The Ray cluster's total resources as the orchestrator last saw them (one row, ``id`` 1). Read at submit
    time to refuse a job that asks for more than the whole cluster has."""

    __tablename__ = "cluster_capacity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    cpus: Mapped[float] = mapped_column(Float, nullable=False)
    gpus: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)

    __table_args__ = (
        CheckConstraint("id = 1", name="singleton"),
        CheckConstraint("cpus >= 0 AND gpus >= 0", name="amounts"),
    )
