"""Rows of the registry as its services read them: version records, alias maps, reference resolution.

Shared by :mod:`mlhub.registry.service` and its mixins; each function takes an open tenant-scoped session.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlhub.audit import Principal
from mlhub.domain.gates import Gate, parse_gates
from mlhub.errors import NotFoundError
from mlhub.store.models import ModelAlias, ModelVersion, RegisteredModel

READY = "ready"
DELETED = "deleted"
#: the media type of each stored model format (training jobs upload with these; gc looks for them)
MODEL_MEDIA_TYPES_BY_FORMAT = {"skops": "application/x-skops", "npz": "application/x-npz",
                               "pt": "application/x-mlhub-torch", "keras": "application/x-keras"}
MODEL_MEDIA_TYPES = frozenset(MODEL_MEDIA_TYPES_BY_FORMAT.values())


@dataclass(frozen=True)
class VersionInfo:
    """One model version as callers see it (immutable apart from its tags, description and stage)."""

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
    label: str | None = None
    status: str = "ready"
    description: str | None = None
    output_schema: dict[str, Any] | None = None
    code_version: str | None = None
    parent_version_id: int | None = None
    created_by: str | None = None
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, v: ModelVersion, model_name: str, aliases: tuple[str, ...] = ()) -> VersionInfo:
        return cls(v.id, model_name, v.version, v.framework, v.model_format, v.stage, v.artifact_id,
                   v.artifact_sha256, dict(v.metrics or {}), v.input_schema, v.reference_stats, v.run_id, v.job_id,
                   v.dataset_fingerprint, v.created_at, dict(v.tags or {}), v.label, v.status, v.description,
                   v.output_schema, v.code_version, v.parent_version_id, v.created_by, tuple(aliases))

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"

    def to_doc(self) -> dict[str, Any]:
        """A JSON-able dict (the cache's value); :meth:`from_doc` reverses it."""
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["created_at"] = self.created_at.isoformat()
        doc["aliases"] = list(self.aliases)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> VersionInfo:
        return cls(**{**doc, "created_at": datetime.fromisoformat(doc["created_at"]),
                      "aliases": tuple(doc.get("aliases") or ())})


def model_row(s: Session, principal: Principal, name: str, *, lock: bool = False) -> RegisteredModel:
    q = select(RegisteredModel).where(RegisteredModel.tenant_id == principal.tenant_id,
                                      RegisteredModel.name == name)
    model = s.scalar(q.with_for_update() if lock else q)
    if model is None:
        raise NotFoundError(f"model {name!r} not found")
    return model


def aliases_of(s: Session, model_id: int) -> dict[str, int]:
    """``{alias: version number}`` of one model."""
    return dict(s.execute(select(ModelAlias.alias, ModelVersion.version)
                          .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)
                          .where(ModelAlias.model_id == model_id).order_by(ModelAlias.alias)).all())


def gates_of(model: RegisteredModel) -> list[Gate]:
    return parse_gates(list(model.gates or []))


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
        q = q.where(ModelVersion.status != DELETED).order_by(ModelVersion.version.desc()).limit(1)
    version = s.scalar(q)
    if version is None:
        raise NotFoundError(f"model {name!r} has no version {number}" if number else f"model {name!r} has no versions")
    if version.status == DELETED:
        raise NotFoundError(f"version {version.version} of model {name!r} was deleted")
    return version
