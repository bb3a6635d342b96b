"""The model registry, minimal floor: registered models, numbered immutable versions, lookups, loading.

Registration is idempotent on (model, job): a job that is retried or redelivered registers its model
once. The Registry issue adds aliases, stages, gated promotion and cached lookups on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlhub.audit import AuditLog, Principal
from mlhub.domain.specs import parse_model_ref
from mlhub.errors import NotFoundError, ValidationError
from mlhub.store.database import Database
from mlhub.store.models import ModelAlias, ModelVersion, RegisteredModel
from mlhub.store.types import utcnow


@dataclass(frozen=True)
class VersionInfo:
    id: int
    model: str
    version: int
    framework: str
    model_format: str
    stage: str
    artifact_id: int | None
    artifact_sha256: str | None
    metrics: dict[str, Any]
    input_schema: dict[str, Any] | None
    reference_stats: dict[str, Any] | None
    run_id: int | None
    job_id: int | None
    dataset_fingerprint: str | None
    created_at: datetime
    tags: dict[str, Any]

    @classmethod
    def from_row(cls, v: ModelVersion, model_name: str) -> VersionInfo:
        return cls(v.id, model_name, v.version, v.framework, v.model_format, v.stage, v.artifact_id,
                   v.artifact_sha256, v.metrics, v.input_schema, v.reference_stats, v.run_id, v.job_id,
                   v.dataset_fingerprint, v.created_at, v.tags)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest_version: int | None
    versions: int
    framework: str | None
    latest_metrics: dict[str, Any]
    updated_at: datetime


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
    reference_stats: dict[str, Any] | None = None,
    dataset_fingerprint: str | None = None,
    task: str | None = None,
    tags: dict[str, Any] | None = None,
) -> ModelVersion:
    """Create the next version of ``model_name`` (creating the model on first use), inside a tenant scope.

    Idempotent on ``job_id``: the version a job already registered is returned unchanged.
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
    version = ModelVersion(
        tenant_id=tenant_id, model_id=model.id, version=latest + 1, framework=framework,
        model_format=model_format, artifact_id=artifact_id, artifact_sha256=artifact_sha256,
        input_schema=input_schema, reference_stats=reference_stats, metrics=metrics or {}, run_id=run_id,
        job_id=job_id, job_attempt=job_attempt, dataset_fingerprint=dataset_fingerprint, created_by=created_by,
        tags=tags or {}, stage="none", status="ready",
    )
    session.add(version)
    model.updated_at = utcnow()
    session.flush()
    return version


class RegistryService:
    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self.db = db
        self.audit = audit or AuditLog(db)

    def list_models(self, principal: Principal) -> list[ModelSummary]:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            models = s.scalars(select(RegisteredModel).where(RegisteredModel.tenant_id == principal.tenant_id)
                               .order_by(RegisteredModel.name)).all()
            out = []
            for m in models:
                latest = s.scalar(select(ModelVersion).where(ModelVersion.model_id == m.id)
                                  .order_by(ModelVersion.version.desc()).limit(1))
                count = s.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.model_id == m.id))
                out.append(ModelSummary(m.name, latest.version if latest else None, count,
                                        latest.framework if latest else None, latest.metrics if latest else {},
                                        m.updated_at))
            return out

    def versions(self, principal: Principal, name: str) -> list[VersionInfo]:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            model = self._model(s, principal, name)
            rows = s.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id)
                             .order_by(ModelVersion.version)).all()
            return [VersionInfo.from_row(v, name) for v in rows]

    def resolve(self, principal: Principal, ref: str) -> VersionInfo:
        """``name`` (latest), ``name@alias`` or ``name/VERSION`` to a version of this tenant."""
        try:
            name, alias, number = parse_model_ref(ref)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return VersionInfo.from_row(resolve_in(s, principal.tenant_id, name, alias, number), name)

    def load(self, principal: Principal, ref: str, artifacts):
        """Resolve ``ref`` and load its model safely from the artifact store (bytes verified by sha256)."""
        from mlhub.training.serialization import load_model

        info = self.resolve(principal, ref)
        if info.artifact_sha256 is None:
            raise NotFoundError(f"model {ref} has no artifact")
        payload = artifacts.read_bytes(principal.tenant_id, info.artifact_sha256)
        return info, load_model(info.framework, info.model_format, payload)

    @staticmethod
    def _model(s: Session, principal: Principal, name: str) -> RegisteredModel:
        model = s.scalar(select(RegisteredModel).where(
            RegisteredModel.tenant_id == principal.tenant_id, RegisteredModel.name == name))
        if model is None:
            raise NotFoundError(f"model {name!r} not found")
        return model


def resolve_in(s: Session, tenant_id: str, name: str, alias: str | None, number: int | None) -> ModelVersion:
    model = s.scalar(select(RegisteredModel).where(RegisteredModel.tenant_id == tenant_id,
                                                   RegisteredModel.name == name))
    if model is None:
        raise NotFoundError(f"model {name!r} not found")
    q = select(ModelVersion).where(ModelVersion.model_id == model.id)
    if alias is not None:
        target = s.scalar(select(ModelAlias.version_id).where(ModelAlias.model_id == model.id,
                                                              ModelAlias.alias == alias))
        if target is None:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        q = q.where(ModelVersion.id == target)
    elif number is not None:
        q = q.where(ModelVersion.version == number)
    else:
        q = q.order_by(ModelVersion.version.desc()).limit(1)
    version = s.scalar(q)
    if version is None:
        raise NotFoundError(f"model {name!r} has no version {number}" if number else f"model {name!r} has no versions")
    return version
