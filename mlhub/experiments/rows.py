"""Experiments as their services and the router read them: records, the variants' current traffic shares, and
lookups inside an open tenant-scoped session."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlhub.domain.abstats import Design
from mlhub.domain.routing import CanaryPolicy, canary_weights
from mlhub.errors import NotFoundError
from mlhub.store.models import Experiment, ExperimentVariant, ModelVersion, RegisteredModel

__all__ = ["ExperimentInfo", "VariantInfo", "experiment_row", "load_info", "slices_of"]

RAMPING, COMPLETED, ROLLED_BACK = "ramping", "completed", "rolled_back"


@dataclass(frozen=True)
class VariantInfo:
    id: int
    name: str
    version: int          # the model's version number
    version_id: int       # model_versions.id
    weight: float         # as declared (live variants sum to 1; shadows 0)
    shadow: bool
    share: float = 0.0    # the share of traffic it gets now (canary: the ramp's)


@dataclass(frozen=True)
class ExperimentInfo:
    id: int
    name: str
    model: str
    model_id: int
    kind: str             # ab | canary | shadow
    status: str           # draft | running | stopped | promoted
    metric: str | None
    metric_kind: str      # rate | mean
    variants: tuple[VariantInfo, ...]
    design: Design
    winner: str | None
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    canary: CanaryPolicy | None = None
    step: int = 0
    step_started_at: datetime | None = None
    phase: str | None = None          # canary: ramping | completed | rolled_back
    reason: str | None = None         # why it stopped (rollback, stop --reason)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def live(self) -> list[VariantInfo]:
        return [v for v in self.variants if not v.shadow]

    @property
    def shadows(self) -> list[VariantInfo]:
        return [v for v in self.variants if v.shadow]

    def variant(self, name: str) -> VariantInfo:
        for v in self.variants:
            if v.name == name:
                return v
        raise NotFoundError(f"experiment {self.name!r} has no variant {name!r} "
                            f"(it has {', '.join(v.name for v in self.variants)})")


def slices_of(variants: list[tuple[str, float]], canary: CanaryPolicy | None, step: int) -> list[tuple[str, float]]:
    """The live variants' slices of traffic now: declared weights, or the canary ramp's share at ``step``."""
    if canary is None:
        return list(variants)
    return canary_weights(variants, canary.variant, canary.steps[min(step, len(canary.steps) - 1)])


def experiment_row(s: Session, tenant_id: str, ref: str | int, *, lock: bool = False) -> Experiment:
    """An experiment of this tenant by id (an int or a string of digits) or by name."""
    q = select(Experiment).where(Experiment.tenant_id == tenant_id)
    if isinstance(ref, int) and not isinstance(ref, bool):
        q = q.where(Experiment.id == ref)
    elif isinstance(ref, str) and ref.isdigit():
        q = q.where((Experiment.id == int(ref)) | (Experiment.name == ref))
    else:
        q = q.where(Experiment.name == str(ref))
    row = s.scalar(q.with_for_update() if lock else q)
    if row is None:
        raise NotFoundError(f"experiment {ref!r} not found")
    return row


def load_info(s: Session, row: Experiment) -> ExperimentInfo:
    model = s.scalar(select(RegisteredModel.name).where(RegisteredModel.id == row.model_id)) or "?"
    variants = s.execute(select(ExperimentVariant, ModelVersion.version)
                         .join(ModelVersion, ModelVersion.id == ExperimentVariant.version_id)
                         .where(ExperimentVariant.experiment_id == row.id).order_by(ExperimentVariant.id)).all()
    cfg = dict(row.config or {})
    canary = CanaryPolicy.from_doc(cfg["canary"]) if cfg.get("canary") else None
    step = int(cfg.get("step", 0))
    live = [(v.name, float(v.weight)) for v, _ in variants if not v.shadow]
    shares = dict(slices_of(live, canary, step)) if live else {}
    started = cfg.get("step_started_at")
    return ExperimentInfo(
        id=row.id, name=row.name, model=model, model_id=row.model_id, kind=row.kind, status=row.status,
        metric=row.metric, metric_kind=row.metric_kind,
        variants=tuple(VariantInfo(v.id, v.name, number, v.version_id, float(v.weight), bool(v.shadow),
                                   shares.get(v.name, 0.0)) for v, number in variants),
        design=Design.from_doc(cfg.get("design")), winner=row.winner, created_at=row.created_at,
        started_at=row.started_at, stopped_at=row.stopped_at, canary=canary, step=step,
        step_started_at=datetime.fromisoformat(started) if started else None, phase=cfg.get("phase"),
        reason=cfg.get("reason"), config=cfg)
