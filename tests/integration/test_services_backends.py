"""Tenants, keys, audit and the metric batch path behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import uuid

import pytest

from mlhub.audit import AuditLog
from mlhub.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from mlhub.store import runs as runs_repo
from mlhub.store.database import Database
from mlhub.store.models import ApiKey
from mlhub.store.runs import MetricPoint
from mlhub.tenancy import TenantService


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 's.db'}")
        database.upgrade()
    else:
        database = Database(request.getfixturevalue("migrated_pg_url"))
    yield database
    database.dispose()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_new_tenants_key_authenticates_and_only_its_hash_is_stored(db):
    svc = TenantService(db)
    tenant, key = svc.create_tenant(_name("acme"))
    principal = svc.authenticate(key)
    assert principal.tenant_id == tenant.id
    with db.tenant_scope(tenant.id, readonly=True) as s:
        stored = [r.key_hash for r in s.query(ApiKey).all()]
    assert len(stored) == 1 and key not in stored[0] and len(stored[0]) == 64


def test_duplicate_tenant_is_a_conflict_and_leaves_nothing_behind(db):
    svc = TenantService(db)
    name = _name("dup")
    svc.create_tenant(name)
    with pytest.raises(ConflictError, match="already exists"):
        svc.create_tenant(name)
    assert [t.name for t in svc.list_tenants()].count(name) == 1


def test_a_revoked_key_stops_working_at_once(db):
    svc = TenantService(db)
    tenant, key = svc.create_tenant(_name("rev"))
    principal = svc.authenticate(key)
    info, second = svc.create_key(principal, "ci")
    assert svc.authenticate(second).tenant_id == tenant.id
    svc.revoke_key(principal, info.prefix)
    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        svc.authenticate(second)
    assert svc.authenticate(key).tenant_id == tenant.id  # the other key still works
    with pytest.raises(ConflictError):
        svc.revoke_key(principal, str(info.id))


def test_keys_of_one_tenant_are_invisible_and_unrevokable_to_another(db):
    svc = TenantService(db)
    _, key_a = svc.create_tenant(_name("a"))
    _, key_b = svc.create_tenant(_name("b"))
    a, b = svc.authenticate(key_a), svc.authenticate(key_b)
    a_keys = svc.list_keys(a)
    assert {k.prefix for k in svc.list_keys(b)}.isdisjoint({k.prefix for k in a_keys})
    with pytest.raises(NotFoundError):
        svc.revoke_key(b, a_keys[0].prefix)
    assert svc.authenticate(key_a).tenant_id == a.tenant_id


@pytest.mark.parametrize("bad", ["", "mlh_short", "not-a-key", "mlh_ABCDEFGH_" + "x" * 31 + "!"])
def test_malformed_keys_are_refused_with_a_clear_error(db, bad):
    with pytest.raises(AuthenticationError):
        TenantService(db).authenticate(bad)


def test_every_operation_writes_one_audit_event_success_or_failure(db):
    svc, audit = TenantService(db), AuditLog(db)
    _, key = svc.create_tenant(_name("aud"))
    p = svc.authenticate(key)
    info, _ = svc.create_key(p, "k2")
    svc.revoke_key(p, str(info.id))
    with pytest.raises(NotFoundError):
        svc.revoke_key(p, "999999")
    events = audit.list(p)
    assert [(e.action, e.outcome) for e in reversed(events)] == [
        ("tenant.create", "success"), ("key.create", "success"), ("key.revoke", "success"),
        ("key.revoke", "failure"),
    ]
    assert events[0].target_id == "999999" and "no API key" in events[0].message
    assert events[1].target_id == str(info.id) and events[1].actor == p.actor
    assert [e.action for e in audit.list(p, action="key.create")] == ["key.create"]
    assert len(audit.list(p, target=f"api_key:{info.id}")) == 2


def test_the_audit_log_of_one_tenant_is_not_visible_to_another(db):
    svc, audit = TenantService(db), AuditLog(db)
    _, key_a = svc.create_tenant(_name("x"))
    _, key_b = svc.create_tenant(_name("y"))
    a, b = svc.authenticate(key_a), svc.authenticate(key_b)
    assert {e.tenant_id for e in audit.list(a)} == {a.tenant_id}
    assert {e.tenant_id for e in audit.list(b)} == {b.tenant_id}


def test_metric_batches_are_all_or_nothing_and_validated_together(db):
    svc = TenantService(db)
    _, key = svc.create_tenant(_name("m"))
    p = svc.authenticate(key)
    with db.tenant_scope(p.tenant_id) as s:
        run = runs_repo.create_run(s, p.tenant_id, "train")
        n = runs_repo.log_metrics(s, p.tenant_id, run.id, [MetricPoint("loss", 1.0 / (i + 1), i) for i in range(500)])
    assert n == 500
    bad = [MetricPoint("loss", 0.1, 600), MetricPoint("loss", math.nan, 601), MetricPoint("bad key!", 1.0, 602),
           MetricPoint("acc", 0.5, -1)]
    with pytest.raises(ValidationError) as exc_info, db.tenant_scope(p.tenant_id) as s:
        runs_repo.log_metrics(s, p.tenant_id, run.id, bad)
    assert len(exc_info.value.details["errors"]) == 3
    with db.tenant_scope(p.tenant_id, readonly=True) as s:
        history = runs_repo.metric_history(s, p.tenant_id, run.id, "loss")
    assert len(history) == 500 and history[0] == (0, 1.0) and history[-1][0] == 499


def test_metric_timestamps_round_trip_as_utc(db):
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import select

    from mlhub.store.models import Metric

    svc = TenantService(db)
    _, key = svc.create_tenant(_name("ts"))
    p = svc.authenticate(key)
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    with db.tenant_scope(p.tenant_id) as s:
        run = runs_repo.create_run(s, p.tenant_id, "ts")
        runs_repo.log_metrics(s, p.tenant_id, run.id, [MetricPoint("x", 1.0, 0, when)])
    with db.tenant_scope(p.tenant_id, readonly=True) as s:
        stored = s.scalar(select(Metric.timestamp).where(Metric.run_id == run.id))
    assert stored == when and stored.tzinfo is not None and stored.astimezone(UTC).hour == 1
