"""The canary ramp's evaluation: read the canary's health over its current step from ``prediction_logs`` (the
rows the inference server writes with ``experiment_id``, ``variant``, ``status_code`` and ``latency_ms``), ask
:func:`mlhub.domain.routing.decide_canary`, and move the experiment.

Moves are idempotent conditional UPDATEs: ``... WHERE id = :id AND status = 'running' AND config.phase =
'ramping' AND config.step = :step``. Every router replica and every ``mlhub ab status`` may evaluate the same
experiment at once; exactly one of them moves it (and writes the audit event, in the same transaction), the
others update nothing. Outcomes:

- advance: the next step, with a fresh window (its ``step_started_at``);
- complete: the last step ran its time cleanly: ``phase = completed``, the canary is the ``winner``, the
  experiment keeps running at the last share until ``mlhub ab promote`` moves the alias to it;
- rollback: ``status = stopped``, ``phase = rolled_back`` with the reason: the router stops routing at once (its
  next refresh), so every request goes back to the model's alias.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from mlhub.audit import AuditLog, Principal
from mlhub.domain.enums import ExperimentStatus
from mlhub.domain.routing import CanaryDecision, CanaryHealth, decide_canary, p99_rank
from mlhub.experiments.rows import COMPLETED, RAMPING, ROLLED_BACK, ExperimentInfo
from mlhub.store.database import Database
from mlhub.store.models import Experiment, PredictionLog
from mlhub.store.types import utcnow

__all__ = ["apply_decision", "canary_health", "variant_traffic"]

ERROR_STATUS = 500


def canary_health(s: Session, tenant_id: str, experiment_id: int, variant: str, since: datetime,
                  version_id: int | None = None) -> CanaryHealth:
    """Requests, errors (status >= 500) and the nearest-rank p99 latency of ``variant`` since ``since``
    (``version_id``, the variant's version, lets the query use the log's (version, time) index)."""
    base = (PredictionLog.tenant_id == tenant_id, PredictionLog.experiment_id == experiment_id,
            PredictionLog.variant == variant, PredictionLog.created_at >= since)
    if version_id is not None:
        base = (*base, PredictionLog.version_id == version_id)
    requests, errors, timed = s.execute(select(
        func.count(), func.coalesce(func.sum(_errors()), 0),
        func.count(PredictionLog.latency_ms)).where(*base)).one()
    p99 = None
    if timed:
        p99 = s.scalar(select(PredictionLog.latency_ms).where(*base, PredictionLog.latency_ms.is_not(None))
                       .order_by(PredictionLog.latency_ms.desc()).offset(p99_rank(timed) - 1).limit(1))
    return CanaryHealth(int(requests), int(errors), None if p99 is None else float(p99))


def variant_traffic(s: Session, tenant_id: str, experiment_id: int,
                    since: datetime | None) -> dict[str, tuple[int, int]]:
    """``{variant: (requests, errors)}`` from the prediction log (shadow copies included, under their name)."""
    q = select(PredictionLog.variant, func.count(),
               func.coalesce(func.sum(_errors()), 0)).where(
        PredictionLog.tenant_id == tenant_id, PredictionLog.experiment_id == experiment_id)
    if since is not None:
        q = q.where(PredictionLog.created_at >= since)
    return {v: (int(n), int(e)) for v, n, e in s.execute(q.group_by(PredictionLog.variant)) if v is not None}


def evaluate(db: Database, principal: Principal, info: ExperimentInfo) -> CanaryDecision | None:
    """Decide on a running, ramping canary and apply the decision; None when there is nothing to decide."""
    if info.canary is None or info.status != ExperimentStatus.RUNNING.value or info.phase != RAMPING:
        return None
    since = info.step_started_at or info.started_at
    if since is None:
        return None
    now = utcnow()
    with db.tenant_scope(principal.tenant_id, readonly=True) as s:
        health = canary_health(s, principal.tenant_id, info.id, info.canary.variant, since,
                               info.variant(info.canary.variant).version_id)
    decision = decide_canary(info.canary, info.step, (now - since).total_seconds(), health)
    if decision.action != "hold":
        apply_decision(db, principal, info, decision, health, now)
    return decision


def apply_decision(db: Database, principal: Principal, info: ExperimentInfo, decision: CanaryDecision,
                   health: CanaryHealth, now: datetime) -> bool:
    """Move the experiment as ``decision`` says, if nobody moved it first; True when this call moved it."""
    cfg: dict[str, Any] = dict(info.config)
    values: dict[str, Any] = {}
    if decision.action == "advance":
        cfg.update(step=decision.step, step_started_at=now.isoformat())
    elif decision.action == "complete":
        cfg.update(phase=COMPLETED, reason=decision.reason)
        values["winner"] = info.canary.variant
    elif decision.action == "rollback":
        cfg.update(phase=ROLLED_BACK, reason=decision.reason)
        values.update(status=ExperimentStatus.STOPPED.value, stopped_at=now)
    else:
        return False
    cfg.setdefault("history", [])
    cfg["history"] = [*cfg["history"], {"at": now.isoformat(), "action": decision.action, "step": decision.step,
                                        "reason": decision.reason}][-50:]
    with db.tenant_scope(principal.tenant_id) as s:
        moved = s.execute(update(Experiment).where(
            Experiment.id == info.id, Experiment.tenant_id == principal.tenant_id,
            Experiment.status == ExperimentStatus.RUNNING.value,
            Experiment.config["phase"].as_string() == RAMPING,
            Experiment.config["step"].as_integer() == info.step,
        ).values(config=cfg, **values).execution_options(synchronize_session=False)).rowcount
        if moved == 1:
            AuditLog.add(s, principal, f"experiment.canary.{decision.action}", "experiment", info.name, details={
                "step": decision.step, "share": info.canary.steps[decision.step], "reason": decision.reason,
                "requests": health.requests, "errors": health.errors, "p99_ms": health.p99_ms})
    return moved == 1


def _errors():
    return case((PredictionLog.status_code >= ERROR_STATUS, 1), else_=0)
