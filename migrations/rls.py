"""PostgreSQL roles, grants and row-level security, applied by migrations (a no-op on SQLite).

The model (see "Database roles" in ARCHITECTURE.md):

- ``mlhub_app``: everything a tenant does. Every tenant table has RLS enabled and FORCED, with a policy on
  ``current_setting('app.tenant_id', true)`` for reads (USING) and writes (WITH CHECK): an unset tenant sees
  nothing. ``audit_log`` is append-only for it (SELECT, INSERT).
- ``mlhub_scheduler``: the orchestrator's cross-tenant work: the job tables and the tenant list, nothing else.
- ``mlhub_key_resolver``: owns the SECURITY DEFINER function that maps an API key hash to a tenant id,
  so nobody needs to read other tenants' keys to authenticate.

The login that runs migrations owns the schema and is made a member of the first two roles so the running
system can ``SET LOCAL ROLE`` to them per transaction. Roles are cluster-wide and shared by every database
on the server, so they are created idempotently and never dropped by a downgrade.

Later migrations that add a tenant table call :func:`protect_table` for it; the catalog test fails for any
table with ``tenant_id`` that lacks forced RLS and a policy.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

APP_ROLE = "mlhub_app"
SCHEDULER_ROLE = "mlhub_scheduler"
RESOLVER_ROLE = "mlhub_key_resolver"
#: the job tables the scheduler may read and write across tenants
SCHEDULER_TABLES = ("jobs", "job_events", "job_logs", "schedules")
#: tables the app role may only append to
APPEND_ONLY_TABLES = ("audit_log",)
RESOLVE_FUNCTION = "mlhub_resolve_api_key"
TENANT_PREDICATE = "tenant_id = current_setting('app.tenant_id', true)"


def _is_postgres(bind: Connection) -> bool:
    return bind.dialect.name == "postgresql"


def _exec(bind: Connection, sql: str) -> None:
    bind.execute(text(sql))


def _create_role(bind: Connection, role: str) -> None:
    # concurrent migrations of two databases on one server may race to create the same role
    _exec(
        bind,
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
              END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$""",
    )


def tenant_tables(bind: Connection) -> list[str]:
    rows = bind.execute(
        text(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name = 'tenant_id' ORDER BY table_name"
        )
    )
    return [r[0] for r in rows]


def protect_table(bind: Connection, table: str, *, scheduler: bool = False, append_only: bool = False) -> None:
    """Force RLS on a tenant table, grant the app role, and optionally give the scheduler cross-tenant access."""
    if not _is_postgres(bind):
        return
    _exec(bind, f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    _exec(bind, f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    _exec(
        bind,
        f"CREATE POLICY tenant_isolation ON {table} TO {APP_ROLE} "
        f"USING ({TENANT_PREDICATE}) WITH CHECK ({TENANT_PREDICATE})",
    )
    privileges = "SELECT, INSERT" if append_only else "SELECT, INSERT, UPDATE, DELETE"
    _exec(bind, f"GRANT {privileges} ON {table} TO {APP_ROLE}")
    if scheduler:
        _exec(bind, f"CREATE POLICY scheduler_access ON {table} TO {SCHEDULER_ROLE} USING (true) WITH CHECK (true)")
        _exec(bind, f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {SCHEDULER_ROLE}")


def apply(bind: Connection) -> None:
    """Create roles, grants and policies for the whole initial schema."""
    if not _is_postgres(bind):
        return
    schema = bind.execute(text("SELECT current_schema()")).scalar_one()
    for role in (APP_ROLE, SCHEDULER_ROLE, RESOLVER_ROLE):
        _create_role(bind, role)
    _exec(bind, f"GRANT {APP_ROLE}, {SCHEDULER_ROLE} TO CURRENT_USER")
    _exec(bind, f"GRANT USAGE ON SCHEMA {schema} TO {APP_ROLE}, {SCHEDULER_ROLE}, {RESOLVER_ROLE}")

    for table in tenant_tables(bind):
        protect_table(
            bind, table, scheduler=table in SCHEDULER_TABLES, append_only=table in APPEND_ONLY_TABLES
        )

    # the tenant list: a tenant sees (and may create, during `tenants create`) only its own row
    _exec(bind, "ALTER TABLE tenants ENABLE ROW LEVEL SECURITY")
    _exec(bind, "ALTER TABLE tenants FORCE ROW LEVEL SECURITY")
    own = "id = current_setting('app.tenant_id', true)"
    _exec(bind, f"CREATE POLICY tenant_isolation ON tenants TO {APP_ROLE} USING ({own}) WITH CHECK ({own})")
    _exec(bind, f"GRANT SELECT, INSERT, UPDATE ON tenants TO {APP_ROLE}")
    _exec(bind, f"CREATE POLICY scheduler_read ON tenants FOR SELECT TO {SCHEDULER_ROLE} USING (true)")
    _exec(bind, f"GRANT SELECT ON tenants TO {SCHEDULER_ROLE}")

    _exec(bind, f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {APP_ROLE}, {SCHEDULER_ROLE}")
    _exec(bind, f"GRANT SELECT ON alembic_version TO {APP_ROLE}, {SCHEDULER_ROLE}")

    # API key -> tenant id, for callers that do not know their tenant yet
    _exec(bind, f"GRANT SELECT ON api_keys TO {RESOLVER_ROLE}")
    _exec(bind, f"CREATE POLICY key_resolver_lookup ON api_keys FOR SELECT TO {RESOLVER_ROLE} USING (true)")
    _exec(
        bind,
        f"""CREATE OR REPLACE FUNCTION {schema}.{RESOLVE_FUNCTION}(p_key_hash text) RETURNS text
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
              SELECT k.tenant_id FROM {schema}.api_keys k
              WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
                AND (k.expires_at IS NULL OR k.expires_at > now())
            $fn$""",
    )
    _exec(bind, f"ALTER FUNCTION {schema}.{RESOLVE_FUNCTION}(text) OWNER TO {RESOLVER_ROLE}")
    _exec(bind, f"REVOKE ALL ON FUNCTION {schema}.{RESOLVE_FUNCTION}(text) FROM PUBLIC")
    _exec(bind, f"GRANT EXECUTE ON FUNCTION {schema}.{RESOLVE_FUNCTION}(text) TO {APP_ROLE}, {SCHEDULER_ROLE}")


def drop_roles_grants_and_policies(bind: Connection) -> None:
    """Undo :func:`apply` for this database. Policies and table grants go with the tables; roles stay
    (they are shared by every database on the server)."""
    if not _is_postgres(bind):
        return
    schema = bind.execute(text("SELECT current_schema()")).scalar_one()
    _exec(bind, f"DROP FUNCTION IF EXISTS {schema}.{RESOLVE_FUNCTION}(text)")
    _exec(bind, f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {APP_ROLE}, {SCHEDULER_ROLE}")
    _exec(bind, f"REVOKE USAGE ON SCHEMA {schema} FROM {APP_ROLE}, {SCHEDULER_ROLE}, {RESOLVER_ROLE}")
