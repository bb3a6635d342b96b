"""A/B, canary and shadow experiments: the service behind ``mlhub ab ...``, the REST outcome route and the router.

Lifecycle: ``create`` (draft) -> ``start`` (running: the inference server routes the model's traffic by it) ->
``stop`` (stopped) or ``promote`` (the winner gets the model's alias through the registry's gated promotion; the
experiment ends ``promoted``). A canary may also stop itself (rolled back, :mod:`mlhub.experiments.canary`). One
running experiment per model at a time. Every state change is audited.

Outcomes (a later 0/1 label for ``rate`` experiments, any finite number for ``mean``) are recorded per request
key. An outcome whose key has no assignment yet is STORED UNJOINED rather than refused: the router writes
assignments in batches, so an outcome may overtake its own assignment by a moment. ``status`` joins outcomes to
assignments by key when it computes (so a late assignment joins its earlier outcome), counts only joined
outcomes in the statistics, reports the unjoined ones, and uses each key's latest outcome (a key sends one
observation; a corrected label replaces the earlier one).

Winners: ``status`` analyses the joined outcomes (:func:`mlhub.domain.abstats.analyze`). The first time a winner
is clear it is recorded on the experiment (a conditional UPDATE ``WHERE winner IS NULL``), so that with the
sequential design an always-valid decision stays made even if later noise moves the p-value back up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from mlhub.audit import AuditLog, Principal
from mlhub.domain.abstats import METRIC_KINDS, Analysis, Arm, Design, analyze
from mlhub.domain.enums import ExperimentStatus
from mlhub.domain.routing import CanaryDecision, CanaryPolicy, VariantSpec, validate_variants
from mlhub.errors import ConflictError, ExperimentStateError, NotFoundError, ValidationError
from mlhub.experiments import canary as canary_eval
from mlhub.experiments.rows import RAMPING, ExperimentInfo, experiment_row, load_info
from mlhub.registry.rows import DELETED, model_row
from mlhub.store.database import Database
from mlhub.store.models import (
    Experiment,
    ExperimentAssignment,
    ExperimentOutcome,
    ExperimentVariant,
    ModelVersion,
)
from mlhub.store.types import utcnow

__all__ = ["ExperimentService", "OutcomeResult", "PromoteResult", "StatusReport", "VariantReport"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
METRIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
MAX_KEY = 128
MAX_REASON = 2000
RUNNING, DRAFT = ExperimentStatus.RUNNING.value, ExperimentStatus.DRAFT.value
STOPPED, PROMOTED = ExperimentStatus.STOPPED.value, ExperimentStatus.PROMOTED.value


@dataclass(frozen=True)
class OutcomeResult:
    experiment_id: int
    request_key: str
    joined: bool                 # False: no assignment for the key yet (stored, joined later by key)
    variant: str | None = None


@dataclass(frozen=True)
class VariantReport:
    name: str
    version: int
    shadow: bool
    share: float                 # of live traffic now
    assigned: int                # request keys routed to it (recorded assignments)
    outcomes: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    requests: int                # prediction log rows (answers given; shadows: copies scored)
    errors: int


@dataclass(frozen=True)
class StatusReport:
    experiment: ExperimentInfo
    variants: list[VariantReport]
    analysis: Analysis | None    # None without two live variants (shadow) or before any outcome
    verdict: str
    unjoined_outcomes: int = 0
    canary: dict[str, Any] | None = None
    decision: CanaryDecision | None = None


@dataclass(frozen=True)
class PromoteResult:
    experiment: str
    variant: str
    model: str
    version: int
    alias: str
    previous: int | None
    changed: bool
    forced: bool
    gates: list[Any] = field(default_factory=list)


class ExperimentService:
    """Experiments of the calling tenant. Cheap to build (the REST outcome route makes one per call)."""

    def __init__(self, db: Database, audit: AuditLog | None = None, *, registry: Any | None = None) -> None:
        self.db = db
        self.audit = audit or AuditLog(db)
        self._registry = registry

    @property
    def registry(self):
        if self._registry is None:
            from mlhub.registry.service import RegistryService

            self._registry = RegistryService(self.db, self.audit)
        return self._registry

    # --- lifecycle ---------------------------------------------------------------------------------

    def create(self, principal: Principal, name: str, model: str, variants: Sequence[VariantSpec], *,
               metric_kind: str = "rate", metric: str | None = None, shadow: Sequence[str] = (),
               design: Design | None = None, canary: CanaryPolicy | None = None) -> ExperimentInfo:
        """A draft experiment on versions of ``model``. ``shadow`` names variants that only get copies."""
        if not isinstance(name, str) or not NAME.match(name):
            raise ValidationError(f"invalid experiment name {name!r}: 1-128 letters, digits, '.', '-' or '_'")
        if metric_kind not in METRIC_KINDS:
            raise ValidationError(f"metric kind must be one of {', '.join(METRIC_KINDS)}, got {metric_kind!r}")
        if metric is not None and not METRIC.match(metric):
            raise ValidationError(f"invalid metric name {metric!r}")
        names = {v.name for v in variants}
        unknown = [s for s in shadow if s not in names]
        if unknown:
            raise ValidationError(f"--shadow {unknown[0]!r} is not one of the variants ({', '.join(sorted(names))})")
        try:
            specs = validate_variants([VariantSpec(v.name, v.version, v.weight, v.shadow or v.name in shadow)
                                       for v in variants])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        live = [v for v in specs if not v.shadow]
        design = design or Design()
        if canary is not None:
            if canary.variant not in {v.name for v in live}:
                raise ValidationError(f"canary variant {canary.variant!r} must be a live (non-shadow) variant")
            if len(live) < 2:
                raise ValidationError("a canary needs a stable variant beside it")
            kind = "canary"
        else:
            kind = "ab" if len(live) >= 2 else "shadow"
        config: dict[str, Any] = {"design": design.to_doc()}
        if canary is not None:
            config.update(canary=canary.to_doc(), step=0, phase=RAMPING)
        details = {"model": model, "kind": kind, "metric_kind": metric_kind,
                   "variants": {v.name: {"version": v.version, "weight": v.weight, "shadow": v.shadow} for v in specs}}
        with self.audit.operation(principal, "experiment.create", "experiment", name, details=details) as op:
            s = op.session
            m = model_row(s, principal, model)
            if s.scalar(select(Experiment.id).where(Experiment.tenant_id == principal.tenant_id,
                                                    Experiment.name == name)) is not None:
                raise ConflictError(f"an experiment named {name!r} exists already")
            numbers = {v.version for v in specs}
            rows = {r.version: r for r in s.scalars(select(ModelVersion).where(
                ModelVersion.model_id == m.id, ModelVersion.version.in_(sorted(numbers))))}
            for v in specs:
                row = rows.get(v.version)
                if row is None:
                    raise NotFoundError(f"model {model!r} has no version {v.version} (variant {v.name!r})")
                if row.status == DELETED:
                    raise ConflictError(f"version {v.version} of {model!r} was deleted (variant {v.name!r})")
            exp = Experiment(tenant_id=principal.tenant_id, name=name, kind=kind, model_id=m.id, status=DRAFT,
                             metric=metric, metric_kind=metric_kind, config=config)
            s.add(exp)
            s.flush()
            for v in specs:
                s.add(ExperimentVariant(tenant_id=principal.tenant_id, experiment_id=exp.id, name=v.name,
                                        version_id=rows[v.version].id, weight=v.weight, shadow=v.shadow))
            s.flush()
            op.details["id"] = exp.id
            return load_info(s, exp)

    def start(self, principal: Principal, ref: str | int) -> ExperimentInfo:
        """draft -> running. Refused while another experiment on the same model runs."""
        with self.audit.operation(principal, "experiment.start", "experiment", str(ref)) as op:
            s = op.session
            row = experiment_row(s, principal.tenant_id, ref, lock=True)
            op.target_id = row.name
            if row.status != DRAFT:
                raise ExperimentStateError(f"experiment {row.name!r} is {row.status}: only a draft can start",
                                           details={"status": row.status})
            other = s.scalar(select(Experiment.name).where(
                Experiment.tenant_id == principal.tenant_id, Experiment.model_id == row.model_id,
                Experiment.status == RUNNING, Experiment.id != row.id))
            if other is not None:
                raise ExperimentStateError(f"experiment {other!r} already runs on this model: stop it first",
                                           details={"status": row.status, "running": other})
            deleted = s.scalars(select(ModelVersion.version).join(
                ExperimentVariant, ExperimentVariant.version_id == ModelVersion.id).where(
                ExperimentVariant.experiment_id == row.id, ModelVersion.status == DELETED)).all()
            if deleted:
                raise ConflictError(f"version(s) {', '.join(map(str, deleted))} of the experiment were deleted")
            now = utcnow()
            row.status, row.started_at = RUNNING, now
            if (row.config or {}).get("canary"):
                row.config = {**row.config, "step": 0, "phase": RAMPING, "step_started_at": now.isoformat()}
            s.flush()
            return load_info(s, row)

    def stop(self, principal: Principal, ref: str | int, *, reason: str | None = None) -> ExperimentInfo:
        """running or draft -> stopped: the router stops routing by it within its refresh time."""
        reason = _reason(reason)
        with self.audit.operation(principal, "experiment.stop", "experiment", str(ref),
                                  details={"reason": reason}) as op:
            s = op.session
            row = experiment_row(s, principal.tenant_id, ref, lock=True)
            op.target_id = row.name
            if row.status not in (RUNNING, DRAFT):
                raise ExperimentStateError(f"experiment {row.name!r} is {row.status} already",
                                           details={"status": row.status})
            row.status, row.stopped_at = STOPPED, utcnow()
            if reason:
                row.config = {**(row.config or {}), "reason": reason}
            s.flush()
            return load_info(s, row)

    # --- reads -------------------------------------------------------------------------------------

    def get(self, principal: Principal, ref: str | int) -> ExperimentInfo:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return load_info(s, experiment_row(s, principal.tenant_id, ref))

    def list(self, principal: Principal, *, model: str | None = None,
             status: str | None = None) -> list[ExperimentInfo]:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            q = select(Experiment).where(Experiment.tenant_id == principal.tenant_id)
            if model is not None:
                q = q.where(Experiment.model_id == model_row(s, principal, model).id)
            if status is not None:
                q = q.where(Experiment.status == status)
            return [load_info(s, r) for r in s.scalars(q.order_by(Experiment.id))]

    # --- outcomes ----------------------------------------------------------------------------------

    def record_outcome(self, principal: Principal, experiment_id: int, request_key: str,
                       value: float) -> OutcomeResult:
        """Store a later label (0/1 for rate experiments) or metric value for a request key (see the module's
        docstring: unknown keys are stored unjoined and join when their assignment arrives)."""
        if not isinstance(request_key, str) or not 0 < len(request_key) <= MAX_KEY:
            raise ValidationError(f"the request key must be a string of 1-{MAX_KEY} characters")
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationError(f"an outcome value must be a finite number, got {value!r}")
        with self.db.tenant_scope(principal.tenant_id) as s:
            exp = s.scalar(select(Experiment).where(Experiment.tenant_id == principal.tenant_id,
                                                    Experiment.id == experiment_id))
            if exp is None:
                raise NotFoundError(f"experiment {experiment_id} not found")
            if exp.status == DRAFT:
                raise ExperimentStateError(f"experiment {exp.name!r} has not started: no outcome to record yet",
                                           details={"status": exp.status})
            if exp.metric_kind == "rate" and value not in (0, 1):
                raise ValidationError(f"experiment {exp.name!r} measures a rate: an outcome is 0 or 1, got {value!r}")
            hit = s.execute(select(ExperimentAssignment.id, ExperimentVariant.name)
                            .join(ExperimentVariant, ExperimentVariant.id == ExperimentAssignment.variant_id)
                            .where(ExperimentAssignment.experiment_id == exp.id,
                                   ExperimentAssignment.request_key == request_key)).first()
            s.add(ExperimentOutcome(tenant_id=principal.tenant_id, experiment_id=exp.id, request_key=request_key,
                                    value=float(value), assignment_id=hit[0] if hit else None))
        return OutcomeResult(experiment_id, request_key, hit is not None, hit[1] if hit else None)

    # --- status ------------------------------------------------------------------------------------

    def evaluate(self, principal: Principal, ref: str | int) -> CanaryDecision | None:
        """Evaluate a running canary now (the router calls this every few seconds per routed experiment)."""
        return canary_eval.evaluate(self.db, principal, self.get(principal, ref))

    def status(self, principal: Principal, ref: str | int) -> StatusReport:
        """Per-variant counts, means, intervals and the test; evaluates a running canary first."""
        info = self.get(principal, ref)
        decision = canary_eval.evaluate(self.db, principal, info)
        if decision is not None and decision.action != "hold":
            info = self.get(principal, info.id)
        t = principal.tenant_id
        with self.db.tenant_scope(t, readonly=True) as s:
            assigned = dict(s.execute(select(ExperimentAssignment.variant_id, func.count()).where(
                ExperimentAssignment.experiment_id == info.id).group_by(ExperimentAssignment.variant_id)).all())
            latest = (select(func.max(ExperimentOutcome.id).label("id"))
                      .where(ExperimentOutcome.experiment_id == info.id)
                      .group_by(ExperimentOutcome.request_key).subquery())
            o = ExperimentOutcome
            sums = {vid: (int(n), float(total or 0), float(sq or 0)) for vid, n, total, sq in s.execute(
                select(ExperimentAssignment.variant_id, func.count(o.id), func.sum(o.value), func.sum(o.value * o.value))
                .select_from(o).join(latest, latest.c.id == o.id)
                .join(ExperimentAssignment, (ExperimentAssignment.experiment_id == o.experiment_id)
                      & (ExperimentAssignment.request_key == o.request_key))
                .group_by(ExperimentAssignment.variant_id))}
            keys_with_outcome = s.scalar(select(func.count()).select_from(latest)) or 0
            traffic = canary_eval.variant_traffic(s, t, info.id, info.started_at)
            health = None
            if info.canary is not None and (info.step_started_at or info.started_at) is not None:
                health = canary_eval.canary_health(s, t, info.id, info.canary.variant,
                                                   info.step_started_at or info.started_at,
                                                   info.variant(info.canary.variant).version_id)
        arms = {v.name: Arm(v.name, *sums.get(v.id, (0, 0.0, 0.0))) for v in info.variants}
        joined = sum(a.n for a in arms.values())
        analysis = None
        live = info.live
        if len(live) >= 2:
            analysis = analyze([arms[v.name] for v in live], info.metric_kind, info.design)
        reports = []
        for v in info.variants:
            vs = analysis.variants[[x.name for x in live].index(v.name)] if analysis and not v.shadow else None
            arm = arms[v.name]
            requests, errors = traffic.get(v.name, (0, 0))
            reports.append(VariantReport(v.name, v.version, v.shadow, v.share, int(assigned.get(v.id, 0)), arm.n,
                                         vs.mean if vs else arm.mean, vs.ci_low if vs else None,
                                         vs.ci_high if vs else None, requests, errors))
        verdict = self._verdict(principal, info, analysis)
        if info.winner is None and analysis is not None and analysis.winner is not None:
            info = self.get(principal, info.id)  # the winner was just recorded
        canary_view = None
        if info.canary is not None:
            canary_view = {**info.canary.to_doc(), "step": info.step, "share": info.canary.steps[info.step],
                           "phase": info.phase, "reason": info.reason,
                           "step_started_at": info.step_started_at.isoformat() if info.step_started_at else None,
                           "health": None if health is None else {
                               "requests": health.requests, "errors": health.errors,
                               "error_rate": health.error_rate, "p99_ms": health.p99_ms}}
        return StatusReport(info, reports, analysis, verdict, max(0, keys_with_outcome - joined), canary_view,
                            decision)

    def _verdict(self, principal: Principal, info: ExperimentInfo, analysis: Analysis | None) -> str:
        if info.status == DRAFT:
            return f"draft: start it with `mlhub ab start {info.name}`"
        if info.canary is not None:
            if info.phase == "rolled_back":
                return f"rolled back: {info.reason}"
            if info.phase == "completed":
                return (f"canary complete: {info.canary.variant} serves {info.canary.steps[-1]:.0%}; "
                        f"promote it with `mlhub ab promote {info.name}`")
            if info.status == RUNNING:
                return f"ramping: step {info.step + 1} of {len(info.canary.steps)} ({info.canary.steps[info.step]:.0%})"
        if info.status == PROMOTED:
            return f"promoted: {info.winner}"
        if analysis is None:
            return "shadow: compare the variants' answers and errors in the prediction log" if info.kind == "shadow" \
                else "no outcomes yet"
        if info.winner is not None:
            return f"winner: {info.winner} (declared earlier; now: {analysis.verdict})"
        if analysis.winner is not None and info.status == RUNNING:
            self._record_winner(principal, info, analysis)
        return analysis.verdict

    def _record_winner(self, principal: Principal, info: ExperimentInfo, analysis: Analysis) -> None:
        with self.db.tenant_scope(principal.tenant_id) as s:
            moved = s.execute(update(Experiment).where(
                Experiment.id == info.id, Experiment.tenant_id == principal.tenant_id, Experiment.winner.is_(None),
                Experiment.status == RUNNING).values(winner=analysis.winner)
                .execution_options(synchronize_session=False)).rowcount
            if moved == 1:
                AuditLog.add(s, principal, "experiment.winner", "experiment", info.name, details={
                    "winner": analysis.winner, "verdict": analysis.verdict,
                    "n": {v.name: v.n for v in analysis.variants},
                    "p": {c.treatment: c.decision_p for c in analysis.comparisons}})

    # --- promotion ---------------------------------------------------------------------------------

    def promote(self, principal: Principal, ref: str | int, *, variant: str | None = None, to: str = "champion",
                reason: str | None = None, force: bool = False) -> PromoteResult:
        """Move the model's alias ``to`` onto the winner (or ``variant``) through the registry's gates, then
        mark the experiment promoted. Refused without a clear winner unless ``variant`` is named."""
        reason = _reason(reason)
        info = self.get(principal, ref)
        if info.status not in (RUNNING, STOPPED):
            raise ExperimentStateError(f"experiment {info.name!r} is {info.status}: only a running or stopped "
                                       "experiment can be promoted", details={"status": info.status})
        if variant is None:
            if info.winner is None and info.status == RUNNING:
                info = self.status(principal, info.id).experiment
            if info.winner is None:
                raise ExperimentStateError(
                    f"experiment {info.name!r} has no clear winner yet: wait, or name one with --variant",
                    details={"status": info.status})
            variant = info.winner
        chosen = info.variant(variant)
        why = reason or f"experiment {info.name}: {variant} " + ("won" if variant == info.winner else "chosen")
        result = self.registry.promote(principal, info.model, chosen.version, to, reason=why, force=force)
        with self.audit.operation(principal, "experiment.promote", "experiment", info.name, details={
                "variant": variant, "version": chosen.version, "to": to, "forced": result.forced}) as op:
            op.session.execute(update(Experiment).where(
                Experiment.id == info.id, Experiment.tenant_id == principal.tenant_id,
                Experiment.status.in_([RUNNING, STOPPED])).values(
                status=PROMOTED, winner=variant, stopped_at=func.coalesce(Experiment.stopped_at, utcnow()))
                .execution_options(synchronize_session=False))
        return PromoteResult(info.name, variant, info.model, chosen.version, to, result.previous, result.changed,
                             result.forced, list(result.gates))


def _reason(reason: str | None) -> str | None:
    text = (reason or "").strip() or None
    if text is not None and len(text) > MAX_REASON:
        raise ValidationError(f"reason is longer than {MAX_REASON} characters")
    return text

