"""HPO trials in the store: written as they run (``hpo_trials`` rows, one run per trial with its per-epoch
metrics), read back for tables, the Python API and plots. Works on SQLite and PostgreSQL, tenant-scoped."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from mlhub.store import runs as runs_repo
from mlhub.store.database import Database
from mlhub.store.models import HpoTrial, Job, Metric, Run
from mlhub.store.runs import MetricPoint
from mlhub.store.types import utcnow

__all__ = ["FINAL", "SearchInfo", "TrialInfo", "TrialUpdate", "list_trials", "search_info", "trial_curves",
           "write_trials"]

#: trial states: pending, running, terminated (ran every epoch), stopped (stopped early by the scheduler),
#: error (the trial raised)
FINAL = frozenset({"terminated", "stopped", "error"})
RUN_STATUS = {"terminated": "finished", "stopped": "killed", "error": "failed"}


@dataclass(frozen=True)
class TrialInfo:
    trial_id: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    iterations: int
    run_id: int | None
    updated_at: datetime | None = None


@dataclass
class TrialUpdate:
    """What the HPO driver knows about one trial since its last write."""

    trial_id: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]
    iterations: int
    points: list[MetricPoint] = field(default_factory=list)
    run_id: int | None = None


def write_trials(db: Database, tenant_id: str, job_id: int, attempt: int, run_prefix: str,
                 updates: Iterable[TrialUpdate]) -> None:
    """Upsert trials and append their new metric points, in one transaction. A trial seen for the first time
    in this attempt gets its run (named ``{run_prefix}-{trial_id}``); ``update.run_id`` is set in place."""
    updates = list(updates)
    if not updates:
        return
    with db.tenant_scope(tenant_id) as s:
        rows = {r.trial_id: r for r in s.scalars(select(HpoTrial).where(
            HpoTrial.tenant_id == tenant_id, HpoTrial.job_id == job_id,
            HpoTrial.trial_id.in_([u.trial_id for u in updates])))}
        for u in updates:
            if u.run_id is None:
                run = runs_repo.create_run(s, tenant_id, f"{run_prefix}-{u.trial_id}"[:128], experiment=run_prefix,
                                           job_id=job_id, attempt=attempt)
                runs_repo.log_params(s, tenant_id, run.id, u.params)
                u.run_id = run.id
            points = [p for p in u.points if math.isfinite(p.value)]
            if points:
                runs_repo.log_metrics(s, tenant_id, u.run_id, points)
            u.points = []
            if u.status in FINAL:
                s.execute(update(Run).where(Run.id == u.run_id).values(
                    status=RUN_STATUS[u.status], ended_at=utcnow(), summary=u.metrics))
            row = rows.get(u.trial_id)
            if row is None:
                s.add(HpoTrial(tenant_id=tenant_id, job_id=job_id, trial_id=u.trial_id, status=u.status,
                               params=u.params, metrics=u.metrics, iterations=u.iterations, run_id=u.run_id))
            else:
                row.status, row.params, row.metrics = u.status, u.params, u.metrics
                row.iterations, row.run_id = u.iterations, u.run_id


def _job_exists(s, tenant_id: str, job_id: int) -> None:
    from mlhub.errors import NotFoundError

    if s.scalar(select(Job.id).where(Job.tenant_id == tenant_id, Job.id == job_id)) is None:
        raise NotFoundError(f"job {job_id} not found")


def list_trials(db: Database, tenant_id: str, job_id: int) -> list[TrialInfo]:
    """The job's trials in the order they were first recorded; NotFoundError for an unknown job."""
    with db.tenant_scope(tenant_id, readonly=True) as s:
        _job_exists(s, tenant_id, job_id)
        rows = s.scalars(select(HpoTrial).where(HpoTrial.tenant_id == tenant_id, HpoTrial.job_id == job_id)
                         .order_by(HpoTrial.id))
        return [TrialInfo(r.trial_id, r.status, dict(r.params or {}), dict(r.metrics or {}), r.iterations,
                          r.run_id, r.updated_at) for r in rows]


def trial_curves(db: Database, tenant_id: str, job_id: int, metric: str) -> dict[str, list[tuple[int, float]]]:
    """``{trial_id: [(epoch, value), ...]}`` of ``metric`` from each trial's run (epochs counted from 1)."""
    with db.tenant_scope(tenant_id, readonly=True) as s:
        _job_exists(s, tenant_id, job_id)
        q = (select(HpoTrial.trial_id, Metric.step, Metric.value)
             .join(Metric, Metric.run_id == HpoTrial.run_id)
             .where(HpoTrial.tenant_id == tenant_id, HpoTrial.job_id == job_id, Metric.tenant_id == tenant_id,
                    Metric.key == metric)
             .order_by(HpoTrial.id, Metric.step, Metric.id))
        out: dict[str, list[tuple[int, float]]] = {}
        for trial_id, step, value in s.execute(q):
            out.setdefault(trial_id, []).append((int(step) + 1, float(value)))
        return out


@dataclass(frozen=True)
class SearchInfo:
    """What the trial views need of an HPO job."""

    job_id: int
    name: str
    state: str
    metric: str
    mode: str
    log_params: tuple[str, ...]
    progress: dict[str, Any] | None


def search_info(db: Database, tenant_id: str, job_id: int) -> SearchInfo:
    """The HPO job's metric, mode and state; NotFoundError if missing, ValidationError if not an HPO job."""
    from mlhub.errors import NotFoundError, ValidationError

    with db.tenant_scope(tenant_id, readonly=True) as s:
        job = s.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.id == job_id))
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        if job.kind != "hpo":
            raise ValidationError(f"job {job_id} is a {job.kind} job, not an HPO search")
        spec = job.spec or {}
        logs = tuple(k for k, d in (spec.get("search_space") or {}).items() if d.get("type") == "loguniform")
        return SearchInfo(job.id, job.name, job.state, spec.get("metric", ""), spec.get("mode", "max"), logs,
                          job.progress)
