"""The system of record: engines, and one managed session per unit of work.

Every unit of work is a *scope* that commits or rolls back as a whole and turns database errors into
mlhub's own (:func:`translate_db_error`):

- :meth:`Database.tenant_scope` for everything a tenant does. On PostgreSQL it switches, for this
  transaction only (``set_config(..., true)`` = ``SET LOCAL``), to the ``mlhub_app`` role and sets
  ``app.tenant_id``, so row-level security is the last wall and a pooled connection never carries a
  tenant over. Repositories filter by tenant as well, on every backend.
- :meth:`Database.scheduler_scope` for the orchestrator's cross-tenant work (job tables, tenant list).

SQLite (the embedded default) runs in WAL mode with a busy timeout; write scopes take the write lock at
``BEGIN IMMEDIATE`` so two writers queue instead of failing with "database is locked".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from mlhub.errors import BackendUnavailable, ConflictError, MlhubError, TenantAccessDenied, redact
from mlhub.store import migrate

log = logging.getLogger("mlhub.store")

APP_ROLE = "mlhub_app"
SCHEDULER_ROLE = "mlhub_scheduler"
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SQLITE_BUSY_TIMEOUT_MS = 30_000


def translate_db_error(exc: SQLAlchemyError) -> MlhubError:
    """Map a database error to mlhub's error, with credentials redacted from the message."""
    orig = getattr(exc, "orig", None)
    detail = redact(str(orig) if orig is not None else str(exc)).strip().splitlines()[0:1]
    msg = detail[0] if detail else type(exc).__name__
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(exc, IntegrityError):
        return ConflictError(f"conflicts with existing data: {msg}")
    if sqlstate == "42501" or "row-level security" in msg or "permission denied" in msg:
        return TenantAccessDenied(f"not allowed for this tenant: {msg}")
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return BackendUnavailable(f"database unavailable: {msg}")
    return MlhubError(f"database error: {msg}")


def _sqlite_engine(url: str) -> Engine:
    path = url.split("sqlite:///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # take transaction control away from pysqlite so BEGIN IMMEDIATE is ours to issue
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("mlhub_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str, pool_size: int, pre_ping: bool = True) -> Engine:
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # a connection killed by pg_terminate_backend is replaced before use, not failed on; the
        # orchestrator's own engine skips the extra round trip (its loop retries, and a disconnect
        # invalidates the whole pool)
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "mlhub"},
    )


def make_engine(url: str, pool_size: int = 5, *, pre_ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return _postgres_engine(url, pool_size, pre_ping)


class Database:
    """Engines for the owner, app and scheduler logins (often one URL for all three) and scoped sessions."""

    def __init__(
        self,
        url: str,
        *,
        app_url: str | None = None,
        scheduler_url: str | None = None,
        pool_size: int = 5,
    ) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._app_engine = make_engine(app_url, pool_size) if app_url else self.engine
        self._scheduler_url = scheduler_url or url
        self._pool_size = pool_size
        self._scheduler_engine_: Engine | None = None

    @property
    def _scheduler_engine(self) -> Engine:
        """Its own pool (made on first use): the orchestrator's hot path, without pre-ping round trips."""
        if self._scheduler_engine_ is None:
            if self.is_postgres:
                self._scheduler_engine_ = make_engine(self._scheduler_url, self._pool_size, pre_ping=False)
            else:
                self._scheduler_engine_ = self.engine
        return self._scheduler_engine_

    @classmethod
    def from_settings(cls, settings) -> Database:
        def secret(v):
            return v.get_secret_value() if v is not None else None

        return cls(
            settings.effective_database_url,
            app_url=secret(settings.database_app_url),
            scheduler_url=secret(settings.database_scheduler_url),
            pool_size=settings.database_pool_size,
        )

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # --- schema -------------------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        try:
            return migrate.current_revision(self.engine)
        except SQLAlchemyError as exc:
            raise translate_db_error(exc) from exc

    def check_schema(self) -> None:
        """Raise :class:`~mlhub.errors.SchemaOutdated` unless the schema is at this mlhub's head."""
        migrate.ensure_current(self.current_revision())

    def upgrade(self, revision: str = "head") -> None:
        try:
            migrate.upgrade(self.engine, revision)
        except SQLAlchemyError as exc:
            raise translate_db_error(exc) from exc

    def downgrade(self, revision: str) -> None:
        try:
            migrate.downgrade(self.engine, revision)
        except SQLAlchemyError as exc:
            raise translate_db_error(exc) from exc

    # --- scopes -------------------------------------------------------------------------------------

    @contextmanager
    def tenant_scope(self, tenant_id: str, *, readonly: bool = False) -> Iterator[Session]:
        """A transaction acting as ``tenant_id``: commits on success, rolls back on any error."""
        if not isinstance(tenant_id, str) or not _TENANT_ID.match(tenant_id):
            raise TenantAccessDenied("invalid tenant id")
        with self._scope(self._app_engine, APP_ROLE, tenant_id, readonly) as session:
            yield session

    @contextmanager
    def scheduler_scope(self, *, readonly: bool = False) -> Iterator[Session]:
        """A transaction for the orchestrator's cross-tenant work: job tables and the tenant list only."""
        with self._scope(self._scheduler_engine, SCHEDULER_ROLE, None, readonly) as session:
            yield session

    @contextmanager
    def _scope(self, engine: Engine, role: str, tenant_id: str | None, readonly: bool) -> Iterator[Session]:
        try:
            with engine.connect() as conn:
                conn.execution_options(mlhub_readonly=readonly)
                with conn.begin():
                    if self.is_postgres:
                        conn.execute(
                            text("SELECT set_config('role', :role, true), set_config('app.tenant_id', :t, true)"),
                            {"role": role, "t": tenant_id or ""},
                        )
                    session = Session(bind=conn, expire_on_commit=False, autoflush=True)
                    try:
                        yield session
                        session.flush()
                    finally:
                        session.close()
        except SQLAlchemyError as exc:
            raise translate_db_error(exc) from exc

    def resolve_api_key_hash(self, key_hash: str) -> str | None:
        """Tenant id of an active API key, by its hash. On PostgreSQL through the SECURITY DEFINER function,
        so no role ever reads other tenants' keys."""
        from mlhub.store.models import ApiKey  # local: keeps module import light for the CLI
        from mlhub.store.types import utcnow

        try:
            with self.engine.connect() as conn:
                conn.execution_options(mlhub_readonly=True)
                with conn.begin():
                    if self.is_postgres:
                        conn.execute(text("SELECT set_config('role', :role, true)"), {"role": APP_ROLE})
                        return conn.execute(
                            text("SELECT mlhub_resolve_api_key(:h)"), {"h": key_hash}
                        ).scalar_one_or_none()
                    row = conn.execute(
                        ApiKey.__table__.select().where(
                            ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
                        )
                    ).first()
                    if row is None or (row.expires_at is not None and _aware(row.expires_at) <= utcnow()):
                        return None
                    return row.tenant_id
        except SQLAlchemyError as exc:
            raise translate_db_error(exc) from exc

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(mlhub_readonly=True)
                with conn.begin():
                    conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise translate_db_error(exc) from exc

    def dispose(self) -> None:
        engines = (self.engine, self._app_engine, self._scheduler_engine_)
        for engine in {id(e): e for e in engines if e is not None}.values():
            engine.dispose()


def _aware(value):
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
