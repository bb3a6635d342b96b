"""Reading tracked runs: list runs, one run with its params, tags and latest metrics, metric histories.

Tenant-scoped like the other services: every read runs in ``db.tenant_scope(principal.tenant_id)`` and filters
by tenant itself, so another tenant's run is :class:`~mlhub.errors.NotFoundError`, exactly like a missing one.
Training jobs write runs through :mod:`mlhub.store.runs` (one point per epoch, ``step`` = epoch, plus
``final_*`` points at step 0 with the held-out metrics), scripts through :func:`mlhub.start_run`; this module
only reads. ``list_runs(filter=..., order_by=...)`` takes the language of :mod:`mlhub.domain.run_filter` and
turns its tree into SQL that means the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, cast, exists, func, null, or_, select
from sqlalchemy.orm import aliased

from mlhub.audit import Principal
from mlhub.domain.enums import RunStatus
from mlhub.domain.run_filter import And, Comparison, Node, Or, OrderKey, parse_filter, parse_order_by
from mlhub.errors import NotFoundError, ValidationError
from mlhub.store.database import Database
from mlhub.store.models import Artifact, Metric, Run, RunArtifactLink, RunParam, RunTag

MAX_COMPARE = 20
# a param or tag that is a number as Python's str() writes one: compared numerically (anything else never is)
NUMBER_PATTERN = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}
_ATTRIBUTE_COLUMNS = {"id": Run.id, "name": Run.name, "experiment": Run.experiment, "status": Run.status,
                      "job_id": Run.job_id, "attempt": Run.attempt, "parent_run_id": Run.parent_run_id,
                      "source": Run.source, "created_at": Run.created_at, "started_at": Run.started_at,
                      "ended_at": Run.ended_at}

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
class RunArtifact:
    """An artifact recorded as a run's (``Run.log_artifact``, a training job's model)."""

    id: int
    name: str | None
    media_type: str
    size_bytes: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class RunDetail:
    """One run with everything about it except the full metric histories (see ``metric_history``)."""

    run: RunInfo
    params: dict[str, str]
    tags: dict[str, str]
    latest_metrics: dict[str, float]   # each key's value at its highest step
    metric_points: dict[str, int]      # points recorded per key
    artifacts: tuple[RunArtifact, ...] = ()

    @property
    def final_metrics(self) -> dict[str, Any]:
        """The run's summary if it has one, else its ``final_*`` points, else its latest metrics."""
        if self.run.summary:
            return dict(self.run.summary)
        finals = {k[len(FINAL_PREFIX):]: v for k, v in self.latest_metrics.items() if k.startswith(FINAL_PREFIX)}
        return finals or dict(self.latest_metrics)


@dataclass(frozen=True)
class ComparedValue:
    """One param, tag or metric across the compared runs: ``values`` in the runs' order, None where a run lacks
    it; ``differs`` when not all runs have the same value."""

    key: str
    values: tuple[Any, ...]
    differs: bool


@dataclass(frozen=True)
class RunComparison:
    runs: tuple[RunInfo, ...]
    params: tuple[ComparedValue, ...]
    tags: tuple[ComparedValue, ...]
    metrics: tuple[ComparedValue, ...]   # each key's latest value (at its highest step)

    @property
    def differing(self) -> dict[str, list[str]]:
        """The keys whose values differ: ``{"params": [...], "tags": [...], "metrics": [...]}``."""
        return {name: [c.key for c in getattr(self, name) if c.differs] for name in ("params", "tags", "metrics")}


def step_series(history: History) -> History:
    """The per-step curves of a history: without the one-point ``final_*`` series."""
    return {k: v for k, v in history.items() if not k.startswith(FINAL_PREFIX)}


class TrackingService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list_runs(self, principal: Principal, *, experiment: str | None = None, job_id: int | None = None,
                  status: str | None = None, filter: str | None = None, order_by: str | None = None,
                  limit: int = 50, offset: int = 0) -> list[RunInfo]:
        """This tenant's runs, newest first (or in ``order_by``'s order, e.g. ``metrics.f1 desc``; runs that lack
        the key come last). ``filter``: e.g. ``metrics.f1 > 0.9 and params.lr < 0.01`` (see
        :mod:`mlhub.domain.run_filter`); a filter that cannot be parsed is a ValidationError with its position."""
        tree = parse_filter(filter)
        order = parse_order_by(order_by)
        if not 1 <= limit <= 1000:
            raise ValidationError("limit must be between 1 and 1000")
        if offset < 0:
            raise ValidationError("offset must not be negative")
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
        if tree is not None:
            q = q.where(_condition(tree, principal.tenant_id))
        ordering = [c for key in order for c in _order_clauses(key, principal.tenant_id)]
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return [RunInfo.from_row(r) for r in s.scalars(q.order_by(*ordering, Run.id.desc()).limit(limit).offset(offset))]

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
            # what the run logged (links, under the names it gave), and what was uploaded as the run's (a
            # training job's model)
            linked = s.execute(select(Artifact, RunArtifactLink.name).join(
                RunArtifactLink, RunArtifactLink.artifact_id == Artifact.id).where(
                RunArtifactLink.tenant_id == t, RunArtifactLink.run_id == run_id).order_by(RunArtifactLink.id)).all()
            seen = {a.id for a, _ in linked}
            owned = [(a, a.name) for a in s.scalars(select(Artifact).where(
                Artifact.tenant_id == t, Artifact.run_id == run_id).order_by(Artifact.id)) if a.id not in seen]
            artifacts = tuple(RunArtifact(a.id, name, a.media_type, a.size_bytes, a.sha256, a.created_at)
                              for a, name in [*linked, *owned])
            return RunDetail(run=RunInfo.from_row(run), params=params, tags=tags,
                             latest_metrics={k: float(v) for k, v, _ in rows},
                             metric_points={k: int(n) for k, _, n in rows}, artifacts=artifacts)

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

    def compare(self, principal: Principal, run_ids: list[int]) -> RunComparison:
        """Runs side by side: their params, tags and each metric's latest value, in the order given, with the
        keys whose values differ marked. 2 to MAX_COMPARE distinct runs of this tenant (else NotFoundError)."""
        ids = list(dict.fromkeys(run_ids))
        if len(ids) != len(run_ids):
            raise ValidationError("each run may be compared once: " + ", ".join(map(str, run_ids)))
        if not 2 <= len(ids) <= MAX_COMPARE:
            raise ValidationError(f"compare 2 to {MAX_COMPARE} runs, got {len(ids)}")
        details = [self.get_run(principal, i) for i in ids]

        def side_by_side(per_run: list[dict[str, Any]]) -> tuple[ComparedValue, ...]:
            keys = sorted({k for d in per_run for k in d})
            return tuple(ComparedValue(k, tuple(d.get(k) for d in per_run),
                                       len({repr(d.get(k)) for d in per_run}) > 1) for k in keys)

        return RunComparison(runs=tuple(d.run for d in details),
                             params=side_by_side([d.params for d in details]),
                             tags=side_by_side([d.tags for d in details]),
                             metrics=side_by_side([d.latest_metrics for d in details]))

    @staticmethod
    def _run(session, tenant_id: str, run_id: int) -> Run:
        run = session.scalar(select(Run).where(Run.tenant_id == tenant_id, Run.id == run_id))
        if run is None:
            raise NotFoundError(f"run {run_id} not found")
        return run


# --- the filter tree as SQL -------------------------------------------------------------------------------


def _latest_metric(tenant_id: str, key: str):
    """The value of ``key`` at its highest step for the row's run (NULL if the run has no such metric)."""
    m = aliased(Metric)
    return (select(m.value).where(m.tenant_id == tenant_id, m.run_id == Run.id, m.key == key)
            .order_by(m.step.desc(), m.id.desc()).limit(1).correlate(Run).scalar_subquery())


def _as_number(column):
    """A text column as a float where it holds a number, else NULL (a plain CAST would fail on PostgreSQL and
    read 'abc' as 0 on SQLite). ``regexp_match`` is ``~`` on PostgreSQL and Python's ``re`` on SQLite."""
    return case((column.regexp_match(NUMBER_PATTERN), cast(column, Float)), else_=null())


def _keyed(model, tenant_id: str, key: str):
    return model.tenant_id == tenant_id, model.run_id == Run.id, model.key == key


def _condition(node: Node, tenant_id: str):
    if isinstance(node, And):
        return and_(*(_condition(n, tenant_id) for n in node.items))
    if isinstance(node, Or):
        return or_(*(_condition(n, tenant_id) for n in node.items))
    return _comparison(node, tenant_id)


def _comparison(c: Comparison, tenant_id: str):
    op = _OPS[c.op]
    if c.kind == "metric":
        return op(_latest_metric(tenant_id, c.key), c.value)
    if c.kind == "attribute":
        return op(_ATTRIBUTE_COLUMNS[c.key], c.value)
    model = RunParam if c.kind == "param" else RunTag
    value = _as_number(model.value) if isinstance(c.value, float) else model.value
    return exists().where(*_keyed(model, tenant_id, c.key), op(value, c.value)).correlate(Run)


def _order_clauses(key: OrderKey, tenant_id: str) -> list:
    def direction(expr):
        return (expr.desc() if key.descending else expr.asc()).nulls_last()

    if key.kind == "metric":
        return [direction(_latest_metric(tenant_id, key.key))]
    if key.kind == "attribute":
        return [direction(_ATTRIBUTE_COLUMNS[key.key])]
    model = RunParam if key.kind == "param" else RunTag
    text = select(model.value).where(*_keyed(model, tenant_id, key.key)).correlate(Run).scalar_subquery()
    return [direction(_as_number(text)), direction(text)]  # numbers in numeric order, then text
