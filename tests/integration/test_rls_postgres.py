"""Tenant isolation on the real PostgreSQL, as the application role: row-level security is the last wall.

These tests use raw SQL inside tenant scopes on purpose, bypassing the repositories' own tenant filters,
so that what they prove is the database's policy, not the application's good manners.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from mlhub.errors import TenantAccessDenied
from mlhub.store.database import Database
from mlhub.store.models import NOT_TENANT_SCOPED, Job, Run
from mlhub.tenancy import TenantService

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def db(migrated_pg_url):
    database = Database(migrated_pg_url, pool_size=1)
    yield database
    database.dispose()


@pytest.fixture
def tenants(db):
    """Two fresh tenants, each with one run and one job."""
    svc = TenantService(db)
    out = {}
    for label in ("a", "b"):
        info, key = svc.create_tenant(f"{label}-{uuid.uuid4().hex[:8]}")
        with db.tenant_scope(info.id) as s:
            run = Run(tenant_id=info.id, name=f"run-{label}", summary={})
            job = Job(tenant_id=info.id, queue="training", kind="training", name=f"job-{label}", spec={},
                      submitted_by="test")
            s.add_all([run, job])
            s.flush()
            out[label] = {"id": info.id, "key": key, "run": run.id, "job": job.id}
    return out


def _count(db, tenant_id, sql, **params):
    with db.tenant_scope(tenant_id) as s:
        return s.execute(text(sql), params).scalar_one()


def test_a_tenant_cannot_read_another_tenants_rows(db, tenants):
    a, b = tenants["a"], tenants["b"]
    assert _count(db, b["id"], "SELECT count(*) FROM runs WHERE id = :r", r=a["run"]) == 0
    assert _count(db, a["id"], "SELECT count(*) FROM runs WHERE id = :r", r=a["run"]) == 1
    # no filter at all: only its own rows come back
    with db.tenant_scope(b["id"]) as s:
        owners = set(s.execute(text("SELECT tenant_id FROM runs")).scalars())
        visible_tenants = set(s.execute(text("SELECT id FROM tenants")).scalars())
    assert owners == {b["id"]}
    assert visible_tenants == {b["id"]}


def test_a_tenant_cannot_update_or_delete_another_tenants_rows(db, tenants):
    a, b = tenants["a"], tenants["b"]
    with db.tenant_scope(b["id"]) as s:
        assert s.execute(text("UPDATE runs SET name = 'pwned' WHERE id = :r"), {"r": a["run"]}).rowcount == 0
        assert s.execute(text("DELETE FROM runs WHERE id = :r"), {"r": a["run"]}).rowcount == 0
        assert s.execute(text("DELETE FROM jobs WHERE id = :j"), {"j": a["job"]}).rowcount == 0
    with db.tenant_scope(a["id"]) as s:
        assert s.execute(text("SELECT name FROM runs WHERE id = :r"), {"r": a["run"]}).scalar_one() == "run-a"
        assert s.execute(text("SELECT count(*) FROM jobs WHERE id = :j"), {"j": a["job"]}).scalar_one() == 1


def test_a_tenant_cannot_insert_rows_for_another_tenant(db, tenants):
    a, b = tenants["a"], tenants["b"]
    with pytest.raises(TenantAccessDenied, match="row-level security"), db.tenant_scope(b["id"]) as s:
        s.execute(text("INSERT INTO runs (tenant_id, name, experiment, status, summary, created_at) "
                       "VALUES (:t, 'smuggled', 'default', 'running', '{}', now())"), {"t": a["id"]})
    # nor move its own row into the other tenant
    with pytest.raises(TenantAccessDenied), db.tenant_scope(b["id"]) as s:
        s.execute(text("UPDATE runs SET tenant_id = :t WHERE id = :r"), {"t": a["id"], "r": b["run"]})
    assert _count(db, a["id"], "SELECT count(*) FROM runs WHERE name = 'smuggled'") == 0
    assert _count(db, b["id"], "SELECT count(*) FROM runs WHERE id = :r", r=b["run"]) == 1


def test_an_unset_tenant_sees_nothing(db, tenants):
    with db.engine.connect() as conn, conn.begin():
        conn.execute(text("SET LOCAL ROLE mlhub_app"))
        for table in ("runs", "jobs", "tenants", "api_keys", "audit_log"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table


def test_a_pooled_connection_never_carries_a_tenant_over(db, tenants):
    a, b = tenants["a"], tenants["b"]
    with db.tenant_scope(a["id"]) as s:
        pid_a = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert s.execute(text("SELECT count(*) FROM runs")).scalar_one() >= 1
    with db.tenant_scope(b["id"]) as s:
        pid_b = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        rows = s.execute(text("SELECT tenant_id FROM runs")).scalars().all()
    assert pid_a == pid_b, "the pool of size 1 should hand out the same connection"
    assert set(rows) == {b["id"]}
    # after the transaction the role and tenant are gone from the connection
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid_a
        assert conn.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar_one() in (None, "")
        assert conn.execute(text("SELECT current_user")).scalar_one() != "mlhub_app"


def test_every_tenant_table_has_forced_rls_and_a_policy(db):
    with db.engine.connect() as conn:
        tables = set(conn.execute(text(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")).scalars())
        with_tenant = set(conn.execute(text(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name = 'tenant_id'")).scalars())
        flags = {r.relname: (r.relrowsecurity, r.relforcerowsecurity) for r in conn.execute(text(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"))}
        app_policies = set(conn.execute(text(
            "SELECT tablename FROM pg_policies WHERE schemaname = current_schema() "
            "AND 'mlhub_app' = ANY(roles)")).scalars())
    assert len(with_tenant) >= 25
    unprotected = sorted(t for t in with_tenant if flags[t] != (True, True) or t not in app_policies)
    assert unprotected == [], f"tenant tables without forced RLS and an app policy: {unprotected}"
    # every table without tenant_id is listed, by name, as deliberately not tenant-scoped
    assert tables - with_tenant == set(NOT_TENANT_SCOPED)
    assert flags["tenants"] == (True, True) and "tenants" in app_policies


def test_the_app_role_is_least_privileged(db):
    with db.engine.connect() as conn:
        role = conn.execute(text(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'mlhub_app'")).one()
        owners = set(conn.execute(text(
            "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()")).scalars())
    assert role == (False, False, False)
    assert "mlhub_app" not in owners and "mlhub_scheduler" not in owners


def test_the_audit_log_is_append_only_for_the_app(db, tenants):
    a = tenants["a"]
    assert _count(db, a["id"], "SELECT count(*) FROM audit_log") >= 1  # the tenant.create event
    for sql in ("UPDATE audit_log SET outcome = 'failure'", "DELETE FROM audit_log"):
        with pytest.raises(TenantAccessDenied, match="permission denied"):
            with db.tenant_scope(a["id"]) as s:
                s.execute(text(sql))
    assert _count(db, a["id"], "SELECT count(*) FROM audit_log WHERE outcome = 'success'") >= 1


def test_the_scheduler_sees_every_tenants_jobs_and_nothing_else(db, tenants):
    a, b = tenants["a"], tenants["b"]
    with db.scheduler_scope(readonly=True) as s:
        jobs = set(s.execute(text("SELECT id FROM jobs")).scalars())
        tenant_ids = set(s.execute(text("SELECT id FROM tenants")).scalars())
    assert {a["job"], b["job"]} <= jobs
    assert {a["id"], b["id"]} <= tenant_ids
    for sql in ("SELECT count(*) FROM runs", "SELECT count(*) FROM api_keys", "SELECT count(*) FROM audit_log"):
        with pytest.raises(TenantAccessDenied, match="permission denied"):
            with db.scheduler_scope(readonly=True) as s:
                s.execute(text(sql))


def test_api_keys_resolve_through_the_definer_function_only(db, tenants):
    a, b = tenants["a"], tenants["b"]
    svc = TenantService(db)
    assert svc.authenticate(a["key"]).tenant_id == a["id"]
    # tenant B cannot read A's key hashes directly
    assert _count(db, b["id"], "SELECT count(*) FROM api_keys WHERE tenant_id = :t", t=a["id"]) == 0
    principal_a = svc.authenticate(a["key"])
    svc.revoke_key(principal_a, a["key"].split("_")[1])
    assert db.resolve_api_key_hash(__import__("mlhub.tenancy", fromlist=["x"]).hash_api_key(a["key"])) is None
