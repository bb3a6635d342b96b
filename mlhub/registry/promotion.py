"""Aliases, stages and gated promotion: a mixin of :class:`~mlhub.registry.service.RegistryService`.

``promote(NAME, VERSION, to=TARGET)`` moves an alias (``champion``, ``challenger``, any name) or sets a stage
(``staging``, ``production``, ``archived``) after checking every gate the model declares for that target
(:mod:`mlhub.domain.gates`). A failing gate refuses with :class:`~mlhub.errors.PromotionRefused` and the numbers;
``force=True`` goes through anyway but needs a reason, and both the refusal and the forced move are audited.
Every move is a row of the promotion history (who, when, why, the gate verdicts), which ``rollback`` walks back:
each rollback undoes one real promotion, so two rollbacks in a row go back two holders, never back and forth.
Promoting to ``production`` archives the version that held it (recorded too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mlhub.audit import Principal
from mlhub.domain.enums import ModelStage
from mlhub.domain.gates import Evidence, Gate, GateResult, check_gates, parse_gates, validate_alias
from mlhub.errors import ConflictError, NotFoundError, PromotionRefused, ValidationError
from mlhub.registry.rows import DELETED, gates_of, model_row
from mlhub.store.models import Evaluation, ModelAlias, ModelVersion, Promotion, RegisteredModel
from mlhub.store.types import utcnow

__all__ = ["PromotionMixin", "PromotionRecord", "PromotionResult", "STAGES"]

STAGES = frozenset({ModelStage.STAGING.value, ModelStage.PRODUCTION.value, ModelStage.ARCHIVED.value})
MAX_REASON = 2000


@dataclass(frozen=True)
class PromotionResult:
    model: str
    version: int
    target: str
    target_kind: str            # "alias" | "stage"
    previous: int | None        # the version that held the target before (None: nobody)
    gates: list[GateResult] = field(default_factory=list)
    forced: bool = False
    changed: bool = True        # False when the version already held the target
    action: str = "promote"

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


@dataclass(frozen=True)
class PromotionRecord:
    id: int
    created_at: datetime
    target_kind: str
    target: str
    action: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str | None
    forced: bool
    gates: list[dict[str, Any]]


def target_kind(target: str) -> str:
    """``"stage"`` for a stage name, ``"alias"`` for a valid alias; ValidationError otherwise."""
    if target in STAGES:
        return "stage"
    validate_alias(target)
    return "alias"


class PromotionMixin:
    """Needs ``self.db``, ``self.audit`` and ``self._invalidate`` (see RegistryService)."""

    def set_gates(self, principal: Principal, name: str, gates: Sequence[str | dict | Gate]) -> list[Gate]:
        """Replace the model's gates (an empty list removes them all). Audited."""
        parsed = parse_gates(list(gates))
        with self.audit.operation(principal, "model.gates", "model", name,
                                  details={"gates": [str(g) for g in parsed]}) as op:
            model = model_row(op.session, principal, name, lock=True)
            model.gates = [g.model_dump(exclude_defaults=True, mode="json") for g in parsed]
        return parsed

    def check_promotion(self, principal: Principal, name: str, version: int, to: str) -> list[GateResult]:
        """The gates' verdicts for a promotion, without making it (``promote --dry-run``)."""
        kind = target_kind(to)
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            model = model_row(s, principal, name)
            row = _live_version(s, model, version)
            return _verdicts(s, model, row, to, kind)

    def promote(self, principal: Principal, name: str, version: int, to: str, *, reason: str | None = None,
                force: bool = False) -> PromotionResult:
        """Move alias ``to`` to ``version`` or set its stage, through the model's gates for that target."""
        kind = target_kind(to)
        reason = _reason(reason, required=force)
        with self.audit.operation(principal, "model.promote", "model", name,
                                  details={"version": version, "to": to, "force": force, "reason": reason}) as op:
            s = op.session
            model = model_row(s, principal, name, lock=True)
            row = _live_version(s, model, version)
            previous = _holder(s, model, to, kind)
            if previous is not None and previous.id == row.id:
                op.details["changed"] = False
                return PromotionResult(name, version, to, kind, version, changed=False)
            verdicts = _verdicts(s, model, row, to, kind)
            failed = [g for g in verdicts if not g.passed]
            op.details["gates"] = [g.to_dict() for g in verdicts]
            if failed and not force:
                raise PromotionRefused(
                    f"promotion of {name}/{version} to {to} refused by {len(failed)} of {len(verdicts)} gates: "
                    + "; ".join(f"{g.gate}: {g.detail}" for g in failed)
                    + " (pass --force with --reason to override)",
                    details={"gates": [g.to_dict() for g in verdicts]})
            stale = _apply(s, principal, model, row, to, kind, previous, reason=reason, forced=bool(failed),
                           gates=verdicts, action="promote")
        self._invalidate(principal.tenant_id, name, aliases=[to] if kind == "alias" else [], versions=stale)
        return PromotionResult(name, version, to, kind, previous.version if previous else None, verdicts,
                               forced=bool(failed))

    def rollback(self, principal: Principal, name: str, alias: str = "champion", *,
                 reason: str | None = None) -> PromotionResult:
        """Give ``alias`` back to the version that held it before its last promotion (no gates: that version
        held it once already). ConflictError when there is no earlier holder or it was deleted."""
        validate_alias(alias)
        reason = _reason(reason, required=False)
        with self.audit.operation(principal, "model.rollback", "model", name,
                                  details={"alias": alias, "reason": reason}) as op:
            s = op.session
            model = model_row(s, principal, name, lock=True)
            current = _holder(s, model, alias, "alias")
            if current is None:
                raise ConflictError(f"model {name!r} has no alias {alias!r} to roll back")
            back_to = _previous_holder(s, model, alias)
            if back_to is None:
                raise ConflictError(f"{name}@{alias} has no earlier holder to roll back to (version "
                                    f"{current.version} was its first)")
            row = s.get(ModelVersion, back_to)
            if row is None or row.status == DELETED:
                raise ConflictError(f"the earlier holder of {name}@{alias} was deleted: promote a version instead")
            op.details.update(from_version=current.version, to_version=row.version)
            stale = _apply(s, principal, model, row, alias, "alias", current, forced=False, gates=[],
                           action="rollback", reason=reason or f"rollback from version {current.version}")
        self._invalidate(principal.tenant_id, name, aliases=[alias], versions=stale)
        return PromotionResult(name, row.version, alias, "alias", current.version, action="rollback")

    def history(self, principal: Principal, name: str, *, target: str | None = None,
                limit: int = 100) -> list[PromotionRecord]:
        """Every alias and stage move of a model, newest first."""
        if not 1 <= limit <= 10_000:
            raise ValidationError("limit must be between 1 and 10000")
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            model = model_row(s, principal, name)
            q = select(Promotion).where(Promotion.model_id == model.id)
            if target is not None:
                q = q.where(Promotion.target == target)
            rows = s.scalars(q.order_by(Promotion.id.desc()).limit(limit)).all()
            ids = {r.from_version_id for r in rows} | {r.to_version_id for r in rows}
            numbers = dict(s.execute(select(ModelVersion.id, ModelVersion.version)
                                     .where(ModelVersion.id.in_([i for i in ids if i is not None]))).all())
            return [PromotionRecord(r.id, r.created_at, r.target_kind, r.target, r.action,
                                    numbers.get(r.from_version_id), numbers.get(r.to_version_id), r.actor, r.reason,
                                    r.forced, list(r.gate_results or [])) for r in rows]


# --- helpers (inside an open tenant transaction) ------------------------------------------------------


def _reason(reason: str | None, *, required: bool) -> str | None:
    text = (reason or "").strip() or None
    if required and text is None:
        raise ValidationError("--force needs a --reason: say why the gates are overridden (it is audited)")
    if text is not None and len(text) > MAX_REASON:
        raise ValidationError(f"reason is longer than {MAX_REASON} characters")
    return text


def _live_version(s: Session, model: RegisteredModel, version: int) -> ModelVersion:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationError(f"version must be a positive integer, got {version!r}")
    row = s.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version))
    if row is None:
        raise NotFoundError(f"model {model.name!r} has no version {version}")
    if row.status == DELETED:
        raise ConflictError(f"version {version} of {model.name!r} was deleted")
    return row


def _holder(s: Session, model: RegisteredModel, target: str, kind: str) -> ModelVersion | None:
    if kind == "alias":
        return s.scalar(select(ModelVersion).join(ModelAlias, ModelAlias.version_id == ModelVersion.id)
                        .where(ModelAlias.model_id == model.id, ModelAlias.alias == target))
    if target != ModelStage.PRODUCTION.value:
        return None  # staging and archived hold any number of versions
    return s.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.stage == target,
                                               ModelVersion.status != DELETED)
                    .order_by(ModelVersion.version.desc()).limit(1))


def _evidence(s: Session, row: ModelVersion) -> Evidence:
    newest: dict[str, dict[str, Any]] = {}
    for dataset, metrics in s.execute(select(Evaluation.dataset, Evaluation.metrics)
                                      .where(Evaluation.version_id == row.id).order_by(Evaluation.id.desc())):
        newest.setdefault(dataset, dict(metrics or {}))
    return Evidence(row.version, dict(row.metrics or {}), newest)


def _verdicts(s: Session, model: RegisteredModel, row: ModelVersion, to: str, kind: str) -> list[GateResult]:
    gates = [g for g in gates_of(model) if g.applies_to(to)]
    incumbents: dict[str, Evidence | None] = {}
    for alias in {g.better_than for g in gates if g.better_than}:
        holder = _holder(s, model, alias, "alias")
        incumbents[alias] = _evidence(s, holder) if holder is not None else None
    return check_gates(gates, to, _evidence(s, row), incumbents)


def _record(s: Session, principal: Principal, model: RegisteredModel, kind: str, target: str,
            from_id: int | None, to_id: int | None, *, action: str, reason: str | None, forced: bool,
            gates: list[GateResult]) -> None:
    s.add(Promotion(tenant_id=model.tenant_id, model_id=model.id, target_kind=kind, target=target,
                    from_version_id=from_id, to_version_id=to_id, actor=principal.actor[:128], reason=reason,
                    forced=forced, gate_results=[g.to_dict() for g in gates], action=action))


def _apply(s: Session, principal: Principal, model: RegisteredModel, row: ModelVersion, to: str, kind: str,
           previous: ModelVersion | None, *, reason: str | None, forced: bool, gates: list[GateResult],
           action: str) -> list[int]:
    """Make the move and record it; returns the version numbers whose cached records it made stale."""
    stale = [row.version]
    if kind == "alias":
        if previous is None:
            s.add(ModelAlias(tenant_id=model.tenant_id, model_id=model.id, alias=to, version_id=row.id))
        else:
            s.execute(update(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == to)
                      .values(version_id=row.id, updated_at=utcnow()))
            stale.append(previous.version)
        _record(s, principal, model, kind, to, previous.id if previous else None, row.id, action=action,
                reason=reason, forced=forced, gates=gates)
    else:
        if previous is not None:  # one production version at a time: the old one is archived
            previous.stage = ModelStage.ARCHIVED.value
            stale.append(previous.version)
            _record(s, principal, model, kind, ModelStage.ARCHIVED.value, None, previous.id, action="archive",
                    reason=f"replaced in production by version {row.version}", forced=False, gates=[])
        row.stage = to
        _record(s, principal, model, kind, to, previous.id if previous else None, row.id, action=action,
                reason=reason, forced=forced, gates=gates)
    model.updated_at = utcnow()
    s.flush()
    return stale


def _previous_holder(s: Session, model: RegisteredModel, alias: str) -> int | None:
    """The version id ``alias`` had before the promotion that gave it its current holder: the history is a
    stack where each rollback pops one promotion."""
    pending = 0
    for action, from_id in s.execute(select(Promotion.action, Promotion.from_version_id)
                                     .where(Promotion.model_id == model.id, Promotion.target_kind == "alias",
                                            Promotion.target == alias).order_by(Promotion.id.desc())):
        if action == "rollback":
            pending += 1
        elif pending:
            pending -= 1
        else:
            return from_id
    return None
