"""What an inference replica does without Ray, on SQLite and PostgreSQL (RLS on): endpoints, per-request alias
resolution that follows a promotion, loading with warm-up, sampled prediction logs, key memory, health."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from sqlalchemy import select

from mlhub.artifact_records import ArtifactService
from mlhub.config import load_settings
from mlhub.errors import AuthenticationError, NotFoundError, ValidationError
from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
from mlhub.registry.service import register_version
from mlhub.serving.auth import Authenticator
from mlhub.serving.core import InferenceCore
from mlhub.serving.endpoints import EndpointService, Scaling, parse_autoscale
from mlhub.serving.payload import parse_predict_doc
from mlhub.store.database import Database
from mlhub.store.models import PredictionLog
from mlhub.tenancy import TenantService

TTL = 0.3


@pytest.fixture(scope="module")
def trained():
    from mlhub.domain.specs import parse_spec
    from mlhub.training import get_adapter, load_dataset

    spec = parse_spec({"kind": "training", "name": "iris", "framework": "sklearn", "model": "logistic_regression",
                       "dataset": {"source": "sklearn", "name": "iris"}})
    data = load_dataset(spec.dataset, allowed_roots=[])
    return get_adapter("sklearn").train(spec, data, lambda r: None), data


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def core(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'd.db'}" if request.param == "sqlite"
           else request.getfixturevalue("migrated_pg_url"))
    Database(url).upgrade()
    settings = load_settings(home=tmp_path / "home", database_url=url, redis_url=None, mongodb_uri=None,
                             prediction_log_sample_rate=0.0, serve_alias_ttl_s=TTL, api_key_cache_ttl_s=TTL)
    c = InferenceCore(settings)
    yield c
    c.close()


class Tenant:
    def __init__(self, core: InferenceCore, trained) -> None:
        self.core, (self.trained, self.data) = core, trained
        tenants = TenantService(core.backends.db)
        self.key = tenants.create_tenant(f"srv-{uuid.uuid4().hex[:8]}")[1]
        self.principal = tenants.authenticate(self.key)
        self.header = f"Bearer {self.key}"

    def version(self, name: str = "iris") -> int:
        t, db = self.trained, self.core.backends.db
        art = ArtifactService(db, self.core.backends.artifacts).upload(
            self.principal, t.payload, media_type=MODEL_MEDIA_TYPES_BY_FORMAT[t.model_format], name="m")
        with db.tenant_scope(self.principal.tenant_id) as s:
            return register_version(s, self.principal.tenant_id, model_name=name, framework="sklearn",
                                    model_format=t.model_format, artifact_id=art.id, artifact_sha256=art.sha256,
                                    created_by="test", metrics=t.metrics, input_schema=t.input_schema,
                                    reference_stats=t.reference_stats).version

    def promote(self, version: int, name: str = "iris") -> None:
        self.core.registry.promote(self.principal, name, version, "champion")


def test_an_endpoint_follows_its_alias_and_picks_up_a_promotion_within_the_ttl(core, trained):
    me = Tenant(core, trained)
    me.version(), me.version()
    me.promote(1)
    ep = EndpointService(core.backends.db).deploy(me.principal, "iris")
    assert ep.ref == "iris@champion" and ep.active
    principal = core.authenticate(me.header)
    first = core.target(principal, "iris")
    assert first.version.version == 1
    model = core.load(first.model_key)
    assert core.loads == 1
    x = np.asarray(me.data.x_test[:5])
    request = parse_predict_doc({"inputs": x.tolist()}, max_rows=100)
    assert model.model.predict(core.rows(model, request)).tolist() == model.model.predict(x).tolist()

    me.promote(2)
    deadline = time.monotonic() + 10 * TTL
    while core.target(principal, "iris").version.version != 2:
        assert time.monotonic() < deadline, "the promotion was not picked up"
        time.sleep(0.05)
    meta = core.metadata(principal, "iris")
    assert meta["version"] == 2 and meta["endpoint"]["alias"] == "champion" and meta["input_schema"]


def test_a_pinned_version_stays_and_undeploy_turns_the_route_off(core, trained):
    me = Tenant(core, trained)
    me.version(), me.version()
    me.promote(2)
    service = EndpointService(core.backends.db)
    service.deploy(me.principal, "iris", version=1, scaling=Scaling(replicas=2))
    assert core.target(me.principal, "iris").version.version == 1
    [listed] = service.list(me.principal)
    assert listed.ref == "iris/1" and listed.config == {"scaling": {"replicas": 2}}
    service.undeploy(me.principal, "iris")
    time.sleep(TTL * 1.5)
    # the first request after the TTL still gets the route it knew while the replica reads it again off the
    # request path; then the route is off
    deadline = time.monotonic() + 10 * TTL
    while True:
        try:
            core.target(me.principal, "iris")
        except NotFoundError as exc:
            assert "not deployed" in exc.message
            break
        assert time.monotonic() < deadline, "the undeploy was not picked up"
        time.sleep(0.05)
    assert service.list(me.principal) == [] and len(service.list(me.principal, include_stopped=True)) == 1
    with pytest.raises(NotFoundError, match="not deployed"):
        service.undeploy(me.principal, "iris")


def test_another_tenants_model_is_not_found(core, trained):
    me, other = Tenant(core, trained), Tenant(core, trained)
    me.version()
    me.promote(1)
    EndpointService(core.backends.db).deploy(me.principal, "iris")
    with pytest.raises(NotFoundError):
        core.target(other.principal, "iris")
    with pytest.raises(NotFoundError):
        core.version_by_id(other.principal, core.target(me.principal, "iris").version.id)


def test_deploy_refuses_what_it_cannot_serve(core, trained):
    me = Tenant(core, trained)
    service = EndpointService(core.backends.db)
    with pytest.raises(NotFoundError, match="not found"):
        service.deploy(me.principal, "nope")
    me.version()
    with pytest.raises(NotFoundError, match="no alias 'champion'"):
        service.deploy(me.principal, "iris")
    with pytest.raises(NotFoundError, match="no version 7"):
        service.deploy(me.principal, "iris", version=7)
    with pytest.raises(ValidationError, match="not both"):
        service.deploy(me.principal, "iris", alias="champion", version=1)
    with pytest.raises(ValidationError):
        Scaling(replicas=0)
    with pytest.raises(ValidationError):
        Scaling(min_replicas=3, max_replicas=2)
    with pytest.raises(ValidationError, match="MIN,MAX"):
        parse_autoscale("1-4")
    assert Scaling(min_replicas=1, max_replicas=4).serve_options()["autoscaling_config"]["max_replicas"] == 4
    assert service.list(me.principal) == []


def test_prediction_logs_are_sampled_and_written_per_tenant_off_the_request_path(core, trained):
    me = Tenant(core, trained)
    me.version()
    me.promote(1)
    EndpointService(core.backends.db).deploy(me.principal, "iris")
    target = core.target(me.principal, "iris")
    x = np.asarray(me.data.x_test[:3])
    core.logger.sample_rate = 0.0
    core.record(me.principal, target, x, [0, 1, 2], 1.5, 200)
    core.logger.sample_rate = 1.0
    core.record(me.principal, target, x, [0, 1, 2], 2.5, 200, request_id="r1")
    core.logger.flush()
    with core.backends.db.tenant_scope(me.principal.tenant_id, readonly=True) as s:
        rows = s.scalars(select(PredictionLog).where(PredictionLog.tenant_id == me.principal.tenant_id)).all()
    assert [(r.request_id, r.endpoint, r.version_id, r.outputs, r.latency_ms) for r in rows] == [
        ("r1", "iris", target.version.id, [0, 1, 2], 2.5)]
    assert np.allclose(rows[0].inputs, x)


def test_keys_are_remembered_briefly_and_a_revoked_key_stops_working_after_that(core, trained):
    me = Tenant(core, trained)
    now = [0.0]
    auth = Authenticator(core.backends.db, ttl_s=5.0, clock=lambda: now[0])
    assert auth.principal(me.header).tenant_id == me.principal.tenant_id
    TenantService(core.backends.db).revoke_key(me.principal, me.key.split("_")[1])
    assert auth.principal(me.header).tenant_id == me.principal.tenant_id  # within the TTL
    now[0] = 6.0
    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        auth.principal(me.header)
    for header in (None, "Basic abc", "Bearer", "Bearer not-a-key"):
        with pytest.raises(AuthenticationError):
            auth.principal(header)


def test_the_key_memory_stays_bounded_and_keeps_no_key(core, trained):
    me = Tenant(core, trained)
    now = [0.0]
    auth = Authenticator(core.backends.db, ttl_s=5.0, max_entries=3, clock=lambda: now[0])
    for i in range(5):  # unknown keys are remembered too, within the bound
        with pytest.raises(AuthenticationError, match="unknown or revoked"):
            auth.principal(f"Bearer mlh_AAAAAAA{i}_" + "B" * 32)
        assert len(auth._entries) <= 3
    assert auth.principal(me.header).tenant_id == me.principal.tenant_id
    assert auth.principal(me.header) is auth.principal(me.header)  # one Principal per remembered key
    assert me.key not in repr(auth._entries) and len(auth._entries) <= 3


def test_health_fails_when_the_log_writer_is_gone(core, trained):
    core.check_health()
    core.logger.close()
    with pytest.raises(RuntimeError, match="writer"):
        core.check_health()
