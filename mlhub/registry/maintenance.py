"""Upkeep of the registry: tags and descriptions, deletion, garbage collection of model artifacts, and
side-by-side comparison of versions. A mixin of :class:`~mlhub.registry.service.RegistryService`.

Versions are immutable except for their tags, description and stage. Deleting a version marks it ``deleted``
(its number is never reused, its lineage stays readable) and is refused while an alias or a running deployment
uses it; its artifact is removed later by :meth:`MaintenanceMixin.collect_garbage` (``mlhub models gc``), which
deletes the model artifacts no live version references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mlhub.audit import Principal
from mlhub.domain.enums import ExperimentStatus
from mlhub.domain.gates import finite_number, lower_is_better
from mlhub.errors import ConflictError, NotFoundError, ValidationError
from mlhub.registry.rows import DELETED, MODEL_MEDIA_TYPES, aliases_of, model_row
from mlhub.store.models import (
    Artifact,
    Deployment,
    Experiment,
    ExperimentVariant,
    ModelAlias,
    ModelVersion,
    Tenant,
)
from mlhub.store.types import utcnow

__all__ = ["Comparison", "GcReport", "MaintenanceMixin"]

INACTIVE_DEPLOYMENT = frozenset({"stopped", "deleted", "failed"})
MAX_TAGS = 64
MAX_TAG_CHARS = 256
MAX_DESCRIPTION = 10_000
MAX_COMPARED = 8


@dataclass(frozen=True)
class GcReport:
    removed: int
    bytes_freed: int
    per_tenant: dict[str, list[str]] = field(default_factory=dict)   # tenant -> removed sha256s
    dry_run: bool = False


@dataclass(frozen=True)
class Comparison:
    """Versions side by side: ``rows`` maps each metric to one value per version (None where missing);
    ``best`` the index of the best value of each row (None when fewer than two are present or they tie)."""

    versions: list[Any]                              # VersionInfo, in the order asked
    rows: dict[str, list[float | None]]
    best: dict[str, int | None]
    confusion: list[dict[str, Any] | None]          # newest evaluation with a confusion matrix, per version


class MaintenanceMixin:
    """Needs ``self.db``, ``self.audit``, ``self.resolve``, ``self.evaluations`` and ``self._invalidate``."""

    # --- tags and descriptions ----------------------------------------------------------------------

    def tag(self, principal: Principal, name: str, version: int | None = None, *,
            set_tags: Mapping[str, Any] | None = None, remove: Sequence[str] = ()) -> dict[str, Any]:
        """Set and remove tags on a model (``version=None``) or one version; returns the tags after."""
        set_tags = dict(set_tags or {})
        for k, v in set_tags.items():
            if not isinstance(k, str) or not 1 <= len(k) <= 128:
                raise ValidationError(f"tag keys are 1-128 characters, got {k!r}")
            if not isinstance(v, str | int | float | bool) or len(str(v)) > MAX_TAG_CHARS:
                raise ValidationError(f"tag {k!r}: values are strings, numbers or booleans of at most "
                                      f"{MAX_TAG_CHARS} characters")
        with self.audit.operation(principal, "model.tag", "model", _target(name, version),
                                  details={"set": set_tags, "remove": list(remove)}) as op:
            row = _row(op.session, principal, name, version)
            tags = {**{k: v for k, v in dict(row.tags or {}).items() if k not in set(remove)}, **set_tags}
            if len(tags) > MAX_TAGS:
                raise ValidationError(f"at most {MAX_TAGS} tags, this would make {len(tags)}")
            row.tags = tags
            stale = _stale_keys(op.session, row, version)
        self._invalidate(principal.tenant_id, name, **stale)
        return tags

    def describe(self, principal: Principal, name: str, text: str, version: int | None = None) -> None:
        if not isinstance(text, str) or len(text) > MAX_DESCRIPTION:
            raise ValidationError(f"a description is text of at most {MAX_DESCRIPTION} characters")
        with self.audit.operation(principal, "model.describe", "model", _target(name, version)) as op:
            row = _row(op.session, principal, name, version)
            row.description = text or None
            stale = _stale_keys(op.session, row, version)
        self._invalidate(principal.tenant_id, name, **stale)

    # --- deletion -----------------------------------------------------------------------------------

    def delete_version(self, principal: Principal, name: str, version: int) -> None:
        """Mark a version deleted. Refused (ConflictError) while an alias or a running deployment uses it."""
        with self.audit.operation(principal, "model.delete_version", "model", _target(name, version)) as op:
            s = op.session
            model = model_row(s, principal, name, lock=True)
            row = _row(s, principal, name, version)
            if row.status == DELETED:
                raise ConflictError(f"version {version} of {name!r} is already deleted")
            holding = sorted(a for a, n in aliases_of(s, model.id).items() if n == version)
            if holding:
                raise ConflictError(f"version {version} of {name!r} holds alias {', '.join(holding)}: move the "
                                    f"alias first (mlhub models promote {name} OTHER --to {holding[0]})",
                                    details={"aliases": holding})
            users = _deployments_using(s, model.id, row.id, holding)
            if users:
                raise ConflictError(f"version {version} of {name!r} is served by deployment "
                                    f"{', '.join(users)}: undeploy it first", details={"deployments": users})
            experiments = _experiments_using(s, [row.id], live_only=True)
            if experiments:
                raise ConflictError(f"version {version} of {name!r} is a variant of experiment "
                                    f"{', '.join(experiments)}: stop it first", details={"experiments": experiments})
            row.status = DELETED
            model.updated_at = utcnow()
        self._invalidate(principal.tenant_id, name, versions=[version])

    def delete_model(self, principal: Principal, name: str) -> int:
        """Delete a model with all its versions, aliases and history; refused while a deployment serves it.
        Returns how many versions went. Their artifacts are left to ``collect_garbage``."""
        with self.audit.operation(principal, "model.delete", "model", name) as op:
            s = op.session
            model = model_row(s, principal, name, lock=True)
            live = [d for d, st in s.execute(select(Deployment.name, Deployment.status)
                                             .where(Deployment.model_id == model.id)) if st not in INACTIVE_DEPLOYMENT]
            if live:
                raise ConflictError(f"model {name!r} is served by deployment {', '.join(live)}: undeploy it first",
                                    details={"deployments": live})
            experiments = _experiments_using(s, list(s.scalars(select(ModelVersion.id).where(
                ModelVersion.model_id == model.id))), live_only=False)
            if experiments:
                raise ConflictError(f"model {name!r} has versions in experiment {', '.join(experiments)}: delete "
                                    "those experiments first", details={"experiments": experiments})
            aliases = list(aliases_of(s, model.id))
            numbers = list(s.scalars(select(ModelVersion.version).where(ModelVersion.model_id == model.id)))
            s.execute(delete(ModelAlias).where(ModelAlias.model_id == model.id))  # RESTRICT on versions
            s.execute(delete(Deployment).where(Deployment.model_id == model.id))
            s.delete(model)  # versions, evaluations and the promotion history cascade
            op.details.update(versions=len(numbers), aliases=aliases)
        self._invalidate(principal.tenant_id, name, aliases=aliases, versions=numbers)
        return len(numbers)

    # --- garbage collection ------------------------------------------------------------------------

    def collect_garbage(self, artifacts, *, older_than_s: float = 3600.0, dry_run: bool = False,
                        tenant_id: str | None = None) -> GcReport:
        """Remove model artifacts that no live version references (those of deleted versions and models, and
        of training attempts that never registered), tenant by tenant, each in its own tenant scope and
        audited. Artifacts younger than ``older_than_s`` are kept: a finishing job may be registering them."""
        if older_than_s < 0:
            raise ValidationError("older_than_s must be >= 0")
        if tenant_id is None:
            with self.db.scheduler_scope(readonly=True) as s:
                tenants = list(s.scalars(select(Tenant.id).order_by(Tenant.id)))
        else:
            tenants = [tenant_id]
        cutoff = utcnow().timestamp() - older_than_s
        per_tenant: dict[str, list[str]] = {}
        freed = 0
        for t in tenants:
            principal = Principal(tenant_id=t, actor="system:gc", source="gc")
            with self.db.tenant_scope(t, readonly=dry_run) as s:
                doomed = [a for a in _unreferenced_models(s, t) if a.created_at.timestamp() <= cutoff]
                if not doomed:
                    continue
                per_tenant[t] = [a.sha256 for a in doomed]
                freed += sum(a.size_bytes for a in doomed)
                if dry_run:
                    continue
            with self.audit.operation(principal, "model.gc", "artifact",
                                      details={"removed": per_tenant[t][:100], "count": len(doomed)}) as op:
                ids = [a.id for a in doomed]
                # re-checked inside the write transaction: a version may have been registered on one meanwhile
                still = {a.id for a in _unreferenced_models(op.session, t)}
                ids = [i for i in ids if i in still]
                op.session.execute(update(ModelVersion).where(ModelVersion.artifact_id.in_(ids),
                                                              ModelVersion.status == DELETED)
                                   .values(artifact_id=None))
                op.session.execute(delete(Artifact).where(Artifact.id.in_(ids)))
            for a in doomed:
                if a.id in ids:
                    artifacts.delete(t, a.sha256)
            per_tenant[t] = [a.sha256 for a in doomed if a.id in ids]
        return GcReport(sum(map(len, per_tenant.values())), freed, per_tenant, dry_run)

    # --- comparison --------------------------------------------------------------------------------

    def compare(self, principal: Principal, refs: Sequence[str]) -> Comparison:
        """Two or more versions (``name/3``, ``name@champion``, ...) side by side: their training metrics and,
        as ``eval:DATASET:metric``, the metrics of their newest evaluation on each dataset."""
        if not 2 <= len(refs) <= MAX_COMPARED:
            raise ValidationError(f"compare takes 2 to {MAX_COMPARED} versions, got {len(refs)}")
        infos = [self.resolve(principal, r) for r in refs]
        columns: list[dict[str, float]] = []
        confusion: list[dict[str, Any] | None] = []
        for ref, info in zip(refs, infos, strict=True):
            values = _numbers(info.metrics)
            cm = None
            seen: set[str] = set()
            for ev in self.evaluations(principal, ref):
                if ev.dataset not in seen:
                    seen.add(ev.dataset)
                    values.update(_numbers(ev.metrics, f"eval:{ev.dataset}:"))
                if cm is None and ev.confusion_matrix is not None:
                    cm = {"dataset": ev.dataset, "matrix": ev.confusion_matrix, "labels": ev.labels}
            columns.append(values)
            confusion.append(cm)
        keys = sorted({k for c in columns for k in c}, key=lambda k: (k.startswith("eval:"), k))
        rows = {k: [c.get(k) for c in columns] for k in keys}
        return Comparison(infos, rows, {k: _best(k, v) for k, v in rows.items()}, confusion)


# --- helpers ---------------------------------------------------------------------------------------------


def _target(name: str, version: int | None) -> str:
    return name if version is None else f"{name}/{version}"


def _row(s: Session, principal: Principal, name: str, version: int | None):
    model = model_row(s, principal, name)
    if version is None:
        return model
    row = s.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version))
    if row is None:
        raise NotFoundError(f"model {name!r} has no version {version}")
    return row


def _stale_keys(s: Session, row, version: int | None) -> dict[str, list]:
    if version is None:
        return {}
    return {"versions": [version], "aliases": [a for a, n in aliases_of(s, row.model_id).items() if n == version]}


def _deployments_using(s: Session, model_id: int, version_id: int, aliases: list[str]) -> list[str]:
    out = []
    for name, status, vid, alias in s.execute(select(Deployment.name, Deployment.status, Deployment.version_id,
                                                     Deployment.alias).where(Deployment.model_id == model_id)):
        if status not in INACTIVE_DEPLOYMENT and (vid == version_id or (alias is not None and alias in aliases)):
            out.append(name)
    return out


def _experiments_using(s: Session, version_ids: list[int], *, live_only: bool) -> list[str]:
    if not version_ids:
        return []
    q = (select(Experiment.name).join(ExperimentVariant, ExperimentVariant.experiment_id == Experiment.id)
         .where(ExperimentVariant.version_id.in_(version_ids)).distinct())
    if live_only:  # a stopped or promoted experiment no longer serves its versions
        q = q.where(Experiment.status.not_in([ExperimentStatus.STOPPED.value, ExperimentStatus.PROMOTED.value]))
    return sorted(s.scalars(q))


def _unreferenced_models(s: Session, tenant_id: str) -> list[Artifact]:
    live = select(ModelVersion.artifact_id).where(ModelVersion.tenant_id == tenant_id,
                                                  ModelVersion.status != DELETED,
                                                  ModelVersion.artifact_id.is_not(None))
    return list(s.scalars(select(Artifact).where(Artifact.tenant_id == tenant_id,
                                                 Artifact.media_type.in_(sorted(MODEL_MEDIA_TYPES)),
                                                 Artifact.id.not_in(live)).order_by(Artifact.id)))


def _numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {prefix + k: f for k, v in metrics.items() if (f := finite_number(v)) is not None}


def _best(key: str, values: list[float | None]) -> int | None:
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(present) < 2 or key.endswith("n_samples") or len({v for v, _ in present}) == 1:
        return None
    pick = min if lower_is_better(key.rsplit(":", 1)[-1]) else max
    return pick(present)[1]
