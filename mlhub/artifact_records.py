"""Artifacts as the platform sees them: bytes in the artifact store, one record in the database.

The record is written only after the bytes are safely stored, so an upload interrupted midway leaves no
record and no visible blob; :meth:`ArtifactService.collect_garbage` removes the pieces it left behind, and
blobs that no record points to. Reads go through the record, so a tenant can only read what its own
records name, and every read is verified against the recorded sha256.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from mlhub.artifacts import ArtifactStore
from mlhub.audit import AuditLog, Principal
from mlhub.errors import ConflictError, NotFoundError, ValidationError
from mlhub.store.database import Database
from mlhub.store.models import Artifact, ModelVersion, Tenant
from mlhub.store.types import utcnow

_MEDIA_TYPE_MAX = 128


@dataclass(frozen=True)
class ArtifactRecord:
    id: int
    sha256: str
    size_bytes: int
    media_type: str
    backend: str
    name: str | None
    run_id: int | None
    created_at: datetime

    @classmethod
    def from_row(cls, r: Artifact) -> ArtifactRecord:
        return cls(r.id, r.sha256, r.size_bytes, r.media_type, r.backend, r.name, r.run_id, r.created_at)


@dataclass(frozen=True)
class GarbageReport:
    interrupted_pieces: int
    orphan_blobs: int


class ArtifactService:
    def __init__(self, db: Database, store: ArtifactStore, audit: AuditLog | None = None) -> None:
        self.db = db
        self.store = store
        self.audit = audit or AuditLog(db)

    def upload(
        self,
        principal: Principal,
        data: bytes | BinaryIO | Iterable[bytes],
        *,
        media_type: str = "application/octet-stream",
        name: str | None = None,
        run_id: int | None = None,
    ) -> ArtifactRecord:
        """Stream ``data`` into the store, then record it. Idempotent: the same bytes give the same record.

        ``name`` is a display label only; it never becomes part of a storage key or path.
        """
        if not media_type or len(media_type) > _MEDIA_TYPE_MAX or "/" not in media_type:
            raise ValidationError(f"invalid media type {media_type!r}")
        if name is not None and (len(name) > 256 or "\x00" in name):
            raise ValidationError("artifact name must be at most 256 characters without NUL")
        blob = self.store.put(principal.tenant_id, data)
        with self.audit.operation(principal, "artifact.upload", "artifact",
                                  details={"sha256": blob.sha256, "size": blob.size}) as op:
            row = op.session.scalar(select(Artifact).where(
                Artifact.tenant_id == principal.tenant_id, Artifact.backend == blob.backend,
                Artifact.sha256 == blob.sha256))
            if row is None:
                row = Artifact(tenant_id=principal.tenant_id, sha256=blob.sha256, size_bytes=blob.size,
                               media_type=media_type, backend=blob.backend, backend_key=blob.key, name=name,
                               run_id=run_id)
                op.session.add(row)
                op.session.flush()
            else:  # the same bytes again: young again, so `models gc` leaves them to the job registering them
                row.created_at = utcnow()
            op.target_id = str(row.id)
        return ArtifactRecord.from_row(row)

    def get(self, principal: Principal, artifact_id: int) -> ArtifactRecord:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return ArtifactRecord.from_row(self._row(s, principal, artifact_id))

    def list(self, principal: Principal, *, run_id: int | None = None, limit: int = 100) -> list[ArtifactRecord]:
        q = select(Artifact).where(Artifact.tenant_id == principal.tenant_id)
        if run_id is not None:
            q = q.where(Artifact.run_id == run_id)
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return [ArtifactRecord.from_row(r) for r in s.scalars(q.order_by(Artifact.id.desc()).limit(limit))]

    def read_bytes(self, principal: Principal, artifact_id: int) -> bytes:
        """The artifact's bytes, verified against the recorded sha256 (ArtifactIntegrityError otherwise)."""
        record = self.get(principal, artifact_id)
        return self.store.read_bytes(principal.tenant_id, record.sha256)

    def download_to(self, principal: Principal, artifact_id: int, path: Path) -> Path:
        record = self.get(principal, artifact_id)
        return self.store.download_to(principal.tenant_id, record.sha256, Path(path))

    def delete(self, principal: Principal, artifact_id: int) -> None:
        """Delete the record and its bytes; refused while a model version points at it."""
        with self.audit.operation(principal, "artifact.delete", "artifact", str(artifact_id)) as op:
            row = self._row(op.session, principal, artifact_id)
            used = op.session.scalar(select(ModelVersion.id).where(
                ModelVersion.tenant_id == principal.tenant_id, ModelVersion.artifact_id == row.id).limit(1))
            if used is not None:
                raise ConflictError(f"artifact {artifact_id} is used by model version id {used}")
            sha = row.sha256
            op.session.delete(row)
        self.store.delete(principal.tenant_id, sha)

    def collect_garbage(self, *, older_than_s: float = 3600.0) -> GarbageReport:
        """Remove interrupted upload pieces, then each tenant's blobs that no record points to.

        Runs tenant by tenant, each in its own tenant scope, and audits a tenant only when something of
        its was removed. Blobs younger than ``older_than_s`` are kept: their upload may still be recording them.
        """
        pieces = self.store.collect_garbage(older_than_s=older_than_s)
        orphans = 0
        with self.db.scheduler_scope(readonly=True) as s:
            tenant_ids = list(s.scalars(select(Tenant.id)))
        for tenant_id in tenant_ids:
            blobs = list(self.store.list_blobs(tenant_id))
            if not blobs:
                continue
            with self.db.tenant_scope(tenant_id, readonly=True) as s:
                known = set(s.scalars(select(Artifact.sha256).where(
                    Artifact.tenant_id == tenant_id, Artifact.backend == self.store.backend)))
            # the grace period covers an upload between storing its bytes and recording them
            cutoff = time.time() - older_than_s
            stale = [b for b in blobs if b.sha256 not in known and (b.stored_at or 0) <= cutoff]
            if not stale:
                continue
            principal = Principal(tenant_id=tenant_id, actor="system:gc", source="gc")
            with self.audit.operation(principal, "artifact.gc", "artifact",
                                      details={"removed": [b.sha256 for b in stale][:100]}) as op:
                # re-check inside the transaction: an upload may have recorded one of them meanwhile
                recorded = set(op.session.scalars(select(Artifact.sha256).where(
                    Artifact.tenant_id == tenant_id, Artifact.sha256.in_([b.sha256 for b in stale]))))
                for b in stale:
                    if b.sha256 not in recorded and self.store.delete(tenant_id, b.sha256):
                        orphans += 1
                op.details["count"] = orphans
        return GarbageReport(interrupted_pieces=pieces, orphan_blobs=orphans)

    @staticmethod
    def _row(session, principal: Principal, artifact_id: int) -> Artifact:
        row = session.scalar(select(Artifact).where(
            Artifact.tenant_id == principal.tenant_id, Artifact.id == artifact_id))
        if row is None:
            raise NotFoundError(f"artifact {artifact_id} not found")
        return row
