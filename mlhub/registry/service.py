"""The model registry: registered models, numbered immutable versions, cached lookups, safe loading.

Registration is idempotent on (model, job): a job that is retried or redelivered registers its model once.
Aliases, stages and gated promotion live in :mod:`mlhub.registry.promotion`; tags, deletion, garbage
collection and comparison in :mod:`mlhub.registry.maintenance`. Both are mixins of :class:`RegistryService`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlhub.audit import AuditLog, Principal
from mlhub.cache import keys
from mlhub.cache.base import Cache
from mlhub.domain.enums import ModelStage
from mlhub.domain.specs import parse_model_ref
from mlhub.errors import NotFoundError, ValidationError
from mlhub.registry.maintenance import MaintenanceMixin
from mlhub.registry.promotion import PromotionMixin
from mlhub.registry.rows import DELETED, READY, VersionInfo, aliases_of, gates_of, model_row, resolve_in
from mlhub.store.database import Database
from mlhub.store.models import Evaluation, ModelAlias, ModelVersion, RegisteredModel
from mlhub.store.types import utcnow

GENERATION_TTL_S = 7 * 86_400  # outlives every entry made under it

__all__ = ["EvaluationInfo", "ModelDetail", "ModelSummary", "RegistryService", "VersionInfo", "register_version",
           "resolve_in"]


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest_version: int | None
    versions: int
    framework: str | None
    latest_metrics: dict[str, Any]
    updated_at: datetime
    aliases: dict[str, int] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class ModelDetail:
    """A registered model: its description, tags, gates, which version holds each alias and stage."""

    name: str
    task: str | None
    description: str | None
    tags: dict[str, Any]
    gates: list[str]
    aliases: dict[str, int]
    stages: dict[str, list[int]]
    versions: int
    latest_version: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EvaluationInfo:
    id: int
    version: int
    dataset: str
    task: str
    metrics: dict[str, Any]
    confusion_matrix: list[Any] | None
    labels: list[Any] | None
    job_id: int | None
    plot_artifact_id: int | None
    created_at: datetime


def register_version(
    session: Session,
    tenant_id: str,
    *,
    model_name: str,
    framework: str,
    model_format: str,
    artifact_id: int,
    artifact_sha256: str,
    created_by: str,
    job_id: int | None = None,
    job_attempt: int | None = None,
    run_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    reference_stats: dict[str, Any] | None = None,
    dataset_fingerprint: str | None = None,
    code_version: str | None = None,
    parent_version_id: int | None = None,
    label: str | None = None,
    description: str | None = None,
    task: str | None = None,
    tags: dict[str, Any] | None = None,
) -> ModelVersion:
    """Create the next version of ``model_name`` (creating the model on first use), inside a tenant scope.

    Idempotent on ``job_id``: the version a job already registered is returned unchanged. Numbers are never
    reused: a deleted version keeps its row (status ``deleted``), so the next one is still max + 1. Without an
    explicit ``parent_version_id`` the parent is the model's newest live version (the one a retrain replaces).
    """
    model = session.scalar(select(RegisteredModel).where(
        RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == model_name).with_for_update())
    if model is None:
        model = RegisteredModel(tenant_id=tenant_id, name=model_name, task=task, tags={}, gates=[])
        session.add(model)
        session.flush()
    if job_id is not None:
        prior = session.scalar(select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.job_id == job_id))
        if prior is not None:
            return prior
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)) or 0
    if parent_version_id is None:  # lineage: a retrain descends from the model's newest live version
        parent_version_id = session.scalar(select(ModelVersion.id).where(
            ModelVersion.model_id == model.id, ModelVersion.status != DELETED)
            .order_by(ModelVersion.version.desc()).limit(1))
    version = ModelVersion(
        tenant_id=tenant_id, model_id=model.id, version=latest + 1, framework=framework,
        model_format=model_format, artifact_id=artifact_id, artifact_sha256=artifact_sha256,
        input_schema=input_schema, output_schema=output_schema, reference_stats=reference_stats,
        metrics=metrics or {}, run_id=run_id, job_id=job_id, job_attempt=job_attempt,
        dataset_fingerprint=dataset_fingerprint, code_version=code_version, parent_version_id=parent_version_id,
        label=label, description=description, created_by=created_by, tags=tags or {}, stage="none", status=READY,
    )
    session.add(version)
    model.updated_at = utcnow()
    session.flush()
    return version


class RegistryService(PromotionMixin, MaintenanceMixin):
    """The model registry of one process: reads, cached ``name@alias`` / ``name/N`` lookups, safe loading;
    promotion (:mod:`mlhub.registry.promotion`) and upkeep (:mod:`mlhub.registry.maintenance`) as mixins.

    ``cache`` (the process's :class:`~mlhub.cache.Cache`, Redis when configured) holds resolved versions for
    ``cache_ttl_s``; every change through this service deletes the keys it makes stale once its transaction
    has committed, so a promotion is visible at once in every process sharing the cache (an in-process
    cache in another process may serve the old answer until its TTL: use Redis across processes).
    """

    def __init__(self, db: Database, audit: AuditLog | None = None, *, cache: Cache | None = None,
                 cache_ttl_s: float | None = None) -> None:
        self.db = db
        self.audit = audit or AuditLog(db)
        self.cache = cache
        self.cache_ttl_s = cache_ttl_s

    # --- reads --------------------------------------------------------------------------------------

    def list_models(self, principal: Principal, *, limit: int | None = None, offset: int = 0) -> list[ModelSummary]:
        """This tenant's models by name: all of them, or a page of ``limit`` after ``offset`` (the aggregates are
        computed for that page's models only)."""
        t = principal.tenant_id
        with self.db.tenant_scope(t, readonly=True) as s:
            q = select(RegisteredModel).where(RegisteredModel.tenant_id == t).order_by(RegisteredModel.name)
            if limit is not None:
                q = q.limit(limit).offset(max(offset, 0))
            models = s.scalars(q).all()
            ids = [m.id for m in models]
            live = (select(ModelVersion.model_id, func.max(ModelVersion.version).label("latest"),
                           func.count().label("n"))
                    .where(ModelVersion.tenant_id == t, ModelVersion.status != DELETED)
                    .group_by(ModelVersion.model_id))
            if limit is not None:
                live = live.where(ModelVersion.model_id.in_(ids))
            live = live.subquery()
            counts = {m: (latest, n) for m, latest, n in s.execute(select(live))}
            latest_rows = {v.model_id: v for v in s.scalars(select(ModelVersion).join(
                live, (live.c.model_id == ModelVersion.model_id) & (live.c.latest == ModelVersion.version)))}
            aliases: dict[int, dict[str, int]] = {}
            aq = (select(ModelAlias.model_id, ModelAlias.alias, ModelVersion.version)
                  .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)
                  .where(ModelAlias.tenant_id == t).order_by(ModelAlias.alias))
            if limit is not None:
                aq = aq.where(ModelAlias.model_id.in_(ids))
            for model_id, alias, number in s.execute(aq):
                aliases.setdefault(model_id, {})[alias] = number
            out = []
            for m in models:
                latest, n = counts.get(m.id, (None, 0))
                row = latest_rows.get(m.id)
                out.append(ModelSummary(m.name, latest, n, row.framework if row else None,
                                        dict(row.metrics or {}) if row else {}, m.updated_at,
                                        aliases.get(m.id, {}), m.description))
            return out

    def show(self, principal: Principal, name: str) -> ModelDetail:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            m = model_row(s, principal, name)
            rows = s.execute(select(ModelVersion.version, ModelVersion.stage).where(
                ModelVersion.model_id == m.id, ModelVersion.status != DELETED).order_by(ModelVersion.version)).all()
            stages: dict[str, list[int]] = {}
            for number, stage in rows:
                if stage != ModelStage.NONE.value:
                    stages.setdefault(stage, []).append(number)
            return ModelDetail(m.name, m.task, m.description, dict(m.tags or {}), [str(g) for g in gates_of(m)],
                               aliases_of(s, m.id), stages, len(rows), rows[-1][0] if rows else None, m.created_at,
                               m.updated_at)

    def versions(self, principal: Principal, name: str, *, include_deleted: bool = False,
                 limit: int | None = None, offset: int = 0, newest_first: bool = False) -> list[VersionInfo]:
        """A model's versions, oldest first (or newest first): all of them, or a page of ``limit`` after
        ``offset``."""
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            model = model_row(s, principal, name)
            q = select(ModelVersion).where(ModelVersion.model_id == model.id)
            if not include_deleted:
                q = q.where(ModelVersion.status != DELETED)
            by_version: dict[int, list[str]] = {}
            for alias, number in aliases_of(s, model.id).items():
                by_version.setdefault(number, []).append(alias)
            q = q.order_by(ModelVersion.version.desc() if newest_first else ModelVersion.version)
            if limit is not None:
                q = q.limit(limit).offset(max(offset, 0))
            return [VersionInfo.from_row(v, name, tuple(by_version.get(v.version, ()))) for v in s.scalars(q)]

    def resolve(self, principal: Principal, ref: str) -> VersionInfo:
        """``name`` (latest), ``name@alias`` or ``name/VERSION`` to a version of this tenant.

        Alias and version lookups go through the cache; a bare name (the latest version, which a finishing
        training job can change at any moment) always reads the database.
        """
        try:
            name, alias, number = parse_model_ref(ref)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        key = gen = None
        if self.cache is not None and (alias is not None or number is not None):
            t = principal.tenant_id
            key = keys.registry_alias(t, name, alias) if alias else keys.registry_version(t, name, number or 0)
            # one round trip: the model's generation (read before the database: a change after this replaces
            # it) and the entry, which is good only if it was made under that same generation
            raw_gen, raw_entry = self.cache.get_many(keys.registry_model(t, name), key)
            gen = raw_gen.decode() if raw_gen else "0"
            hit = _entry(raw_entry, gen)
            if hit is not None:
                return hit
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            row = resolve_in(s, principal.tenant_id, name, alias, number)
            aliases = tuple(a for a, n in aliases_of(s, row.model_id).items() if n == row.version)
            info = VersionInfo.from_row(row, name, aliases)
        if key is not None:
            self.cache.set_json(key, {"generation": gen, "info": info.to_doc()}, self.cache_ttl_s)
        return info

    def load(self, principal: Principal, ref: str, artifacts):
        """Resolve ``ref`` and load its model safely from the artifact store (bytes verified by sha256)."""
        from mlhub.training.serialization import load_model

        info = self.resolve(principal, ref)
        if info.artifact_sha256 is None:
            raise NotFoundError(f"model {ref} has no artifact")
        payload = artifacts.read_bytes(principal.tenant_id, info.artifact_sha256)
        return info, load_model(info.framework, info.model_format, payload)

    def evaluations(self, principal: Principal, ref: str, *, dataset: str | None = None) -> list[EvaluationInfo]:
        """The evaluations of one version, newest first."""
        info = self.resolve(principal, ref)
        q = select(Evaluation).where(Evaluation.tenant_id == principal.tenant_id, Evaluation.version_id == info.id)
        if dataset is not None:
            q = q.where(Evaluation.dataset == dataset)
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return [EvaluationInfo(e.id, info.version, e.dataset, e.task, dict(e.metrics or {}), e.confusion_matrix,
                                   e.labels, e.job_id, e.plot_artifact_id, e.created_at)
                    for e in s.scalars(q.order_by(Evaluation.id.desc()))]

    # --- shared by the mixins -------------------------------------------------------------------------

    def _invalidate(self, tenant_id: str, name: str, **_changed) -> None:
        """Make every cached lookup of the model stale once a change has committed: a new generation token. An
        entry that a lookup racing the change writes afterwards carries the old token, so no later lookup takes
        it (deleting keys instead would let that racing write bring the old answer back)."""
        if self.cache is None:
            return
        ttl = max(GENERATION_TTL_S, 10 * (self.cache_ttl_s or self.cache.default_ttl_s or 0))
        self.cache.set(keys.registry_model(tenant_id, name), uuid.uuid4().hex.encode(), ttl)


def _entry(raw: bytes | None, generation: str) -> VersionInfo | None:
    """A cached lookup, if it decodes and was made under ``generation``."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        return VersionInfo.from_doc(doc["info"]) if doc.get("generation") == generation else None
    except (ValueError, TypeError, KeyError, AttributeError):  # another layout or a corrupt entry: reload it
        return None
