"""Artifacts end to end: bytes in the store, one record in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from mlhub.artifact_records import ArtifactService
from mlhub.artifacts import FilesystemArtifactStore
from mlhub.audit import AuditLog
from mlhub.errors import ArtifactIntegrityError, ConflictError, NotFoundError
from mlhub.store.database import Database
from mlhub.store.models import Artifact, ModelVersion, RegisteredModel
from mlhub.tenancy import TenantService


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, tmp_path):
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'a.db'}")
        db.upgrade()
    else:
        db = Database(request.getfixturevalue("migrated_pg_url"))
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    svc = TenantService(db)
    principals = [svc.authenticate(svc.create_tenant(f"t{i}-{uuid.uuid4().hex[:8]}")[1]) for i in range(2)]
    yield db, store, ArtifactService(db, store), principals
    db.dispose()


def _records(db, tenant_id):
    with db.tenant_scope(tenant_id, readonly=True) as s:
        return s.scalars(select(Artifact).where(Artifact.tenant_id == tenant_id)).all()


def test_upload_records_the_blob_and_reads_it_back_verified(env):
    db, store, svc, (a, _) = env
    rec = svc.upload(a, iter([b"model-", b"bytes"]), media_type="application/x-skops", name="../../etc/passwd")
    assert rec.size_bytes == 11 and rec.name == "../../etc/passwd"
    assert svc.read_bytes(a, rec.id) == b"model-bytes"
    again = svc.upload(a, b"model-bytes", media_type="application/x-skops")
    assert again.id == rec.id  # content-addressed and idempotent
    assert len(_records(db, a.tenant_id)) == 1
    # the display name never became a path
    assert all(p.name != "passwd" for p in store.root.rglob("*"))


def test_another_tenant_cannot_see_or_read_the_artifact(env):
    _, _, svc, (a, b) = env
    rec = svc.upload(a, b"secret weights")
    with pytest.raises(NotFoundError):
        svc.get(b, rec.id)
    with pytest.raises(NotFoundError):
        svc.read_bytes(b, rec.id)
    assert svc.list(b) == []


def test_an_interrupted_upload_leaves_no_record_and_gc_removes_its_pieces(env):
    db, store, svc, (a, _) = env

    def dies_midway():
        yield b"x" * 100_000
        raise ConnectionResetError("client went away")

    store._abort_upload = lambda upload: None  # act like a writer killed before it could clean up
    with pytest.raises(ConnectionResetError):
        svc.upload(a, dies_midway())
    assert _records(db, a.tenant_id) == []
    assert list(store.list_blobs(a.tenant_id)) == []
    report = svc.collect_garbage(older_than_s=0)
    assert report.interrupted_pieces >= 1
    assert list((store.root / "tmp").iterdir()) == []


def test_gc_removes_unrecorded_blobs_keeps_recorded_ones_and_audits_it(env):
    db, store, svc, (a, b) = env
    kept = svc.upload(a, b"recorded")
    orphan = store.put(a.tenant_id, b"stored but never recorded")
    other = svc.upload(b, b"stored but never recorded")  # same bytes, other tenant: recorded there
    young = svc.collect_garbage(older_than_s=3600)
    assert young.orphan_blobs == 0 and store.exists(a.tenant_id, orphan.sha256)  # grace period
    report = svc.collect_garbage(older_than_s=0)
    assert report.orphan_blobs == 1
    assert not store.exists(a.tenant_id, orphan.sha256)
    assert svc.read_bytes(a, kept.id) == b"recorded"
    assert svc.read_bytes(b, other.id) == b"stored but never recorded"
    events = AuditLog(db).list(a, action="artifact.gc")
    assert len(events) == 1 and events[0].actor == "system:gc" and events[0].source == "gc"


def test_a_corrupted_blob_is_refused(env):
    _, store, svc, (a, _) = env
    rec = svc.upload(a, b"A" * 4096)
    path = next(p for p in (store.root / "blobs").rglob("*") if p.name == rec.sha256)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError):
        svc.read_bytes(a, rec.id)


def test_an_artifact_a_model_version_uses_cannot_be_deleted(env):
    db, store, svc, (a, _) = env
    rec = svc.upload(a, b"weights")
    with db.tenant_scope(a.tenant_id) as s:
        model = RegisteredModel(tenant_id=a.tenant_id, name="m", tags={}, gates=[])
        s.add(model)
        s.flush()
        s.add(ModelVersion(tenant_id=a.tenant_id, model_id=model.id, version=1, framework="sklearn",
                           model_format="skops", artifact_id=rec.id, created_by="t", tags={}, metrics={}))
    with pytest.raises(ConflictError, match="used by model version"):
        svc.delete(a, rec.id)
    assert svc.read_bytes(a, rec.id) == b"weights"
    loose = svc.upload(a, b"unused")
    svc.delete(a, loose.id)
    assert not store.exists(a.tenant_id, loose.sha256)
    with pytest.raises(NotFoundError):
        svc.get(a, loose.id)
