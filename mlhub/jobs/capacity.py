"""The cluster's size as the orchestrator last saw it, so that submit can refuse what could never run.

The orchestrator writes the Ray cluster's total CPUs and GPUs whenever they change (and at least every few
minutes); ``JobService.submit`` reads them and refuses a job whose demand (for a distributed job: all its
workers, for an HPO job: one trial, since it may run fewer trials at a time than it asks) exceeds the whole
cluster. When nothing recent is known
(no orchestrator yet, or it has been away a long time), jobs are accepted and the orchestrator fails one that
turns out too big when it would claim it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mlhub.domain.queueing import Demand
from mlhub.errors import ValidationError
from mlhub.jobs.store import demand_of, unit_of
from mlhub.store.models import ClusterCapacity
from mlhub.store.types import utcnow

FRESH_FOR = timedelta(minutes=15)  # older than this, the record may describe a cluster since resized
REFRESH_EVERY = timedelta(minutes=2)


def record(session: Session, total: Demand) -> None:
    """Upsert the one row (scheduler scope)."""
    now = utcnow()
    values = {"cpus": float(total.cpus), "gpus": float(total.gpus), "updated_at": now}
    if session.execute(update(ClusterCapacity).where(ClusterCapacity.id == 1).values(**values)).rowcount == 0:
        session.add(ClusterCapacity(id=1, **values))


def known(session: Session) -> ClusterCapacity | None:
    """The recorded capacity if it is recent enough to judge by, else None."""
    row = session.scalar(select(ClusterCapacity).where(ClusterCapacity.id == 1))
    if row is None or utcnow() - row.updated_at > FRESH_FOR:
        return None
    return row


def check(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """ValidationError listing every job row that asks for more than the whole cluster has."""
    cap = known(session)
    if cap is None:
        return
    problems = []
    for row in rows:
        res = row.get("resources") or {}
        unit = unit_of(res)  # an HPO search can run with one trial at a time
        need = unit or demand_of(res)
        if not need.fits_in(Demand(cap.cpus, cap.gpus)):
            what = "each of its trials needs" if unit else "its workers need" if res.get("driver") else "it needs"
            problems.append(f"job {row['name']!r}: {what} {need.cpus:g} CPUs and {need.gpus:g} GPUs, but the "
                            f"cluster has {cap.cpus:g} CPUs and {cap.gpus:g} GPUs in all (as of "
                            f"{cap.updated_at:%Y-%m-%d %H:%M} UTC); lower num_workers or the resources per worker")
    if problems:
        raise ValidationError("; ".join(problems), details={"errors": problems})
