"""Runs repository: runs, params and the step-metric hot path (batched inserts).

Functions take an open tenant-scoped session (see :class:`~mlhub.store.database.Database`) and always
filter by tenant themselves, so isolation holds on SQLite too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from mlhub.domain.run_filter import KEY_RE
from mlhub.errors import NotFoundError, ValidationError
from mlhub.store.models import Artifact, Metric, Run, RunArtifactLink, RunParam, RunTag
from mlhub.store.types import utcnow

METRIC_KEY = KEY_RE
MAX_BATCH = 100_000


@dataclass(frozen=True, slots=True)
class MetricPoint:
    key: str
    value: float
    step: int = 0
    timestamp: datetime | None = None


def create_run(session: Session, tenant_id: str, name: str, *, experiment: str = "default",
               job_id: int | None = None, attempt: int | None = None, parent_run_id: int | None = None) -> Run:
    run = Run(tenant_id=tenant_id, name=name, experiment=experiment, job_id=job_id, attempt=attempt,
              parent_run_id=parent_run_id, started_at=utcnow(), summary={})
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, tenant_id: str, run_id: int) -> Run:
    run = session.scalar(select(Run).where(Run.tenant_id == tenant_id, Run.id == run_id))
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    return run


def log_params(session: Session, tenant_id: str, run_id: int, params: dict[str, object]) -> None:
    rows = [{"tenant_id": tenant_id, "run_id": run_id, "key": str(k)[:128], "value": str(v)}
            for k, v in params.items()]
    if rows:
        session.execute(insert(RunParam), rows)


def _validate(points: Sequence[MetricPoint]) -> list[str]:
    errors = []
    for i, p in enumerate(points):
        if not isinstance(p.key, str) or not METRIC_KEY.match(p.key):
            errors.append(f"point {i}: invalid metric key {p.key!r}")
        if isinstance(p.value, bool) or not isinstance(p.value, int | float) or not math.isfinite(p.value):
            errors.append(f"point {i}: value of {p.key!r} must be a finite number, got {p.value!r}")
        if isinstance(p.step, bool) or not isinstance(p.step, int) or p.step < 0:
            errors.append(f"point {i}: step must be a non-negative integer, got {p.step!r}")
        if len(errors) >= 20:
            break
    return errors


def log_metrics(session: Session, tenant_id: str, run_id: int, points: Iterable[MetricPoint]) -> int:
    """Insert a batch of metric points in one round of multi-row INSERTs; all or nothing.

    Every point is validated first and all problems are reported together.
    """
    batch = list(points)
    if len(batch) > MAX_BATCH:
        raise ValidationError(f"at most {MAX_BATCH} metric points per batch, got {len(batch)}")
    errors = _validate(batch)
    if errors:
        raise ValidationError("invalid metric points: " + "; ".join(errors), details={"errors": errors})
    if not batch:
        return 0
    now = utcnow()
    # the hot path of tracking: plain tuples straight to the driver's executemany (pipelined by psycopg),
    # skipping per-row ORM/Core type processing; timestamps are already UTC-aware
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    rows = [(tenant_id, run_id, p.key, p.step, float(p.value),
             _sqlite_ts(p.timestamp or now) if sqlite else (p.timestamp or now)) for p in batch]
    marks = ", ".join(["?"] * 6) if conn.dialect.paramstyle == "qmark" else ", ".join(["%s"] * 6)
    conn.exec_driver_sql(
        f"INSERT INTO {Metric.__tablename__} (tenant_id, run_id, key, step, value, timestamp) VALUES ({marks})",
        rows,
    )
    return len(rows)


def _sqlite_ts(ts: datetime) -> str:
    # the format SQLAlchemy's SQLite DateTime reads back, in UTC
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def metric_history(session: Session, tenant_id: str, run_id: int, key: str) -> list[tuple[int, float]]:
    q = (select(Metric.step, Metric.value)
         .where(Metric.tenant_id == tenant_id, Metric.run_id == run_id, Metric.key == key)
         .order_by(Metric.step, Metric.id))
    return [(int(s), float(v)) for s, v in session.execute(q)]


# --- what mlhub.start_run writes (see mlhub/run_logging.py) -------------------------------------------------


def add_params(session: Session, tenant_id: str, run_id: int, params: dict[str, str]) -> None:
    """Record params (already strings). A param is set once: the same value again is a no-op, a different
    value for a key the run already has is a ValidationError (a run's params describe what it ran with)."""
    if not params:
        return
    have = dict(session.execute(select(RunParam.key, RunParam.value).where(
        RunParam.tenant_id == tenant_id, RunParam.run_id == run_id, RunParam.key.in_(list(params)))).all())
    changed = {k: (have[k], v) for k, v in params.items() if k in have and have[k] != v}
    if changed:
        raise ValidationError("params are set once per run; changed: " + ", ".join(
            f"{k!r} ({old!r} -> {new!r})" for k, (old, new) in changed.items()), details={"changed": list(changed)})
    rows = [{"tenant_id": tenant_id, "run_id": run_id, "key": k, "value": v}
            for k, v in params.items() if k not in have]
    if rows:
        session.execute(insert(RunParam), rows)


def set_tags(session: Session, tenant_id: str, run_id: int, tags: dict[str, str]) -> None:
    """Set tags (already strings); a tag the run already has takes the new value."""
    if not tags:
        return
    session.execute(delete(RunTag).where(RunTag.tenant_id == tenant_id, RunTag.run_id == run_id,
                                         RunTag.key.in_(list(tags))))
    session.execute(insert(RunTag), [{"tenant_id": tenant_id, "run_id": run_id, "key": k, "value": v}
                                     for k, v in tags.items()])


def end_run(session: Session, tenant_id: str, run_id: int, status: str) -> None:
    """Mark a run ended with ``status`` (finished, failed or killed) now."""
    session.execute(update(Run).where(Run.tenant_id == tenant_id, Run.id == run_id)
                    .values(status=status, ended_at=utcnow()))


def insert_metric_rows(session: Session, tenant_id: str,
                       rows: Sequence[tuple[int, str, int, float, datetime]]) -> int:
    """Insert ``(run_id, key, step, value, utc timestamp)`` rows that were validated as they were logged
    (:mod:`mlhub.run_logging` checks each point at the call). PostgreSQL: one INSERT ... SELECT FROM unnest(arrays)
    (one statement for the whole batch, so the server does little work beside a training loop; COPY is refused
    under row-level security); SQLite: one executemany, like :func:`log_metrics`."""
    if not rows:
        return 0
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        run_ids, keys, steps, values, stamps = (list(col) for col in zip(*rows, strict=True))
        conn.exec_driver_sql(
            f"INSERT INTO {Metric.__tablename__} (tenant_id, run_id, key, step, value, timestamp) "
            "SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::float8[], %s::timestamptz[])",
            (tenant_id, run_ids, keys, steps, values, stamps),
        )
        return len(rows)
    sqlite = conn.dialect.name == "sqlite"
    params = [(tenant_id, r, k, s, v, _sqlite_ts(ts) if sqlite else ts) for r, k, s, v, ts in rows]
    marks = ", ".join(["?"] * 6) if conn.dialect.paramstyle == "qmark" else ", ".join(["%s"] * 6)
    conn.exec_driver_sql(
        f"INSERT INTO {Metric.__tablename__} (tenant_id, run_id, key, step, value, timestamp) VALUES ({marks})",
        params,
    )
    return len(params)


def attach_artifact(session: Session, tenant_id: str, artifact_id: int, run_id: int, name: str) -> None:
    """Record that ``run_id`` logged ``artifact_id`` as ``name`` (once; uploads are deduplicated by content, so
    several runs may link one artifact). An artifact that belongs to no run yet also gets ``run_id``."""
    exists = session.scalar(select(RunArtifactLink.id).where(
        RunArtifactLink.run_id == run_id, RunArtifactLink.artifact_id == artifact_id, RunArtifactLink.name == name))
    if exists is None:
        session.add(RunArtifactLink(tenant_id=tenant_id, run_id=run_id, artifact_id=artifact_id, name=name))
    session.execute(update(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.id == artifact_id,
                                           Artifact.run_id.is_(None)).values(run_id=run_id))
