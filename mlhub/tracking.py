"""Reading tracked runs: list runs, one run with its params, tags and latest metrics, metric histories.

Tenant-scoped like the other services: every read runs in ``db.tenant_scope(principal.tenant_id)`` and filters
by tenant itself, so another tenant's run is :class:`~mlhub.errors.NotFoundError`, exactly like a missing one.
Training jobs write runs through :mod:`mlhub.store.runs` (one point per epoch, ``step`` = epoch, plus
``final_*`` points at step 0 with the held-out metrics); this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from mlhub.audit import Principal
from mlhub.domain.enums import RunStatus
from mlhub.errors import NotFoundError, ValidationError
from mlhub.store.database import Database
from mlhub.store.models import Metric, Run, RunParam, RunTag

FINAL_PREFIX = "final_"  # the one-point series a training job logs with its held-out metrics

History = dict[str, list[tuple[int, float]]]


@dataclass(frozen=True)
class RunInfo:
    id: int
    name: str
    experiment: str
    status: str
    job_id: int | None
    attempt: int | None
    parent_run_id: int | None
    source: str | None
    dataset_fingerprint: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, r: Run) -> RunInfo:
        return cls(id=r.id, name=r.name, experiment=r.experiment, status=r.status, job_id=r.job_id,
                   attempt=r.attempt, parent_run_id=r.parent_run_id, source=r.source,
                   dataset_fingerprint=r.dataset_fingerprint, created_at=r.created_at, started_at=r.started_at,
                   ended_at=r.ended_at, summary=dict(r.summary or {}))

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class RunDetail:
    """One run with everything about it except the full metric histories (see ``metric_history``)."""

    run: RunInfo
    params: dict[str, str]
    tags: dict[str, str]
    latest_metrics: dict[str, float]   # each key's value at its highest step
    metric_points: dict[str, int]      # points recorded per key

    @property
    def final_metrics(self) -> dict[str, Any]:
        """The run's summary if it has one, else its ``final_*`` points, else its latest metrics."""
        if self.run.summary:
            return dict(self.run.summary)
        finals = {k[len(FINAL_PREFIX):]: v for k, v in self.latest_metrics.items() if k.startswith(FINAL_PREFIX)}
        return finals or dict(self.latest_metrics)


def step_series(history: History) -> History:
    """The per-step curves of a history: without the one-point ``final_*`` series."""
    return {k: v for k, v in history.items() if not k.startswith(FINAL_PREFIX)}


class TrackingService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list_runs(self, principal: Principal, *, experiment: str | None = None, job_id: int | None = None,
                  status: str | None = None, limit: int = 50) -> list[RunInfo]:
        """This tenant's runs, newest first."""
        if not 1 <= limit <= 1000:
            raise ValidationError("limit must be between 1 and 1000")
        q = select(Run).where(Run.tenant_id == principal.tenant_id)
        if experiment:
            q = q.where(Run.experiment == experiment)
        if job_id is not None:
            q = q.where(Run.job_id == job_id)
        if status:
            if status not in {s.value for s in RunStatus}:
                raise ValidationError(f"unknown run status {status!r}: one of "
                                      f"{', '.join(s.value for s in RunStatus)}")
            q = q.where(Run.status == status)
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return [RunInfo.from_row(r) for r in s.scalars(q.order_by(Run.id.desc()).limit(limit))]

    def get_run(self, principal: Principal, run_id: int) -> RunDetail:
        t = principal.tenant_id
        with self.db.tenant_scope(t, readonly=True) as s:
            run = self._run(s, t, run_id)
            params = dict(s.execute(select(RunParam.key, RunParam.value).where(
                RunParam.tenant_id == t, RunParam.run_id == run_id).order_by(RunParam.id)).all())
            tags = dict(s.execute(select(RunTag.key, RunTag.value).where(
                RunTag.tenant_id == t, RunTag.run_id == run_id).order_by(RunTag.key)).all())
            ranked = (select(Metric.key, Metric.value,
                             func.row_number().over(partition_by=Metric.key,
                                                    order_by=(Metric.step.desc(), Metric.id.desc())).label("rn"),
                             func.count().over(partition_by=Metric.key).label("n"))
                      .where(Metric.tenant_id == t, Metric.run_id == run_id).subquery())
            rows = s.execute(select(ranked.c.key, ranked.c.value, ranked.c.n).where(ranked.c.rn == 1)
                             .order_by(ranked.c.key)).all()
            return RunDetail(run=RunInfo.from_row(run), params=params, tags=tags,
                             latest_metrics={k: float(v) for k, v, _ in rows},
                             metric_points={k: int(n) for k, _, n in rows})

    def metric_history(self, principal: Principal, run_id: int, keys: list[str] | None = None) -> History:
        """``{key: [(step, value), ...]}`` in step order: every series, or only ``keys`` (each must exist)."""
        t = principal.tenant_id
        wanted = list(dict.fromkeys(keys or []))
        q = (select(Metric.key, Metric.step, Metric.value)
             .where(Metric.tenant_id == t, Metric.run_id == run_id))
        if wanted:
            q = q.where(Metric.key.in_(wanted))
        with self.db.tenant_scope(t, readonly=True) as s:
            self._run(s, t, run_id)
            out: History = {}
            for key, step, value in s.execute(q.order_by(Metric.key, Metric.step, Metric.id)):
                out.setdefault(key, []).append((int(step), float(value)))
            missing = [k for k in wanted if k not in out]
            if missing:
                have = sorted(s.scalars(select(Metric.key).where(
                    Metric.tenant_id == t, Metric.run_id == run_id).distinct()))
                raise NotFoundError(f"run {run_id} has no metric {', '.join(map(repr, missing))} "
                                    f"(it has: {', '.join(have) or 'no metrics'})",
                                    details={"missing": missing, "available": have})
        if wanted:
            return {k: out[k] for k in wanted}
        return out

    @staticmethod
    def _run(session, tenant_id: str, run_id: int) -> Run:
        run = session.scalar(select(Run).where(Run.tenant_id == tenant_id, Run.id == run_id))
        if run is None:
            raise NotFoundError(f"run {run_id} not found")
        return run
