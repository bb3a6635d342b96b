"""Tenants and API keys.

A key looks like ``mlh_<prefix>_<secret>``: the 8-character prefix is public (shown in listings and the
audit log), the whole key is shown once at creation, and only its sha256 is stored. Keys are random with
190 bits of entropy, so a fast hash is the right one (no password stretching needed). Resolution is never
cached by the CLI; the HTTP faces remember a resolved key for MLHUB_API_KEY_CACHE_TTL_S (default 5 s,
mlhub.serving.auth), so there a revoked key stops working within that time.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from mlhub.audit import AuditLog, Principal
from mlhub.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from mlhub.store.database import Database
from mlhub.store.models import ApiKey, Tenant
from mlhub.store.types import utcnow

KEY_PATTERN = re.compile(r"^mlh_(?P<prefix>[A-Za-z0-9]{8})_(?P<secret>[A-Za-z0-9]{32})$")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ALPHABET = string.ascii_letters + string.digits
DEFAULT_TENANT = "default"


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """Return ``(key, prefix)``."""
    prefix = _random(8)
    return f"mlh_{prefix}_{_random(32)}", prefix


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValidationError(
            f"invalid {what} {name!r}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def admin_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"admin:{user}"


@dataclass(frozen=True)
class TenantInfo:
    id: str
    name: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyInfo:
    id: int
    name: str
    prefix: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyInfo:
        return cls(row.id, row.name, row.prefix, row.created_by, row.created_at, row.revoked_at)


class TenantService:
    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self.db = db
        self.audit = audit or AuditLog(db)

    # --- tenants ------------------------------------------------------------------------------------

    def create_tenant(self, name: str, *, actor: str | None = None, source: str = "cli") -> tuple[TenantInfo, str]:
        """Create a tenant and its first API key. Returns the key in clear: show it once, never store it."""
        check_name(name, "tenant name")
        tenant_id = str(uuid.uuid4())
        principal = Principal(tenant_id=tenant_id, actor=actor or admin_actor(), source=source)
        key, prefix = new_api_key()
        # the new tenant's own scope: RLS lets a tenant insert exactly its own row
        try:
            with self.audit.operation(principal, "tenant.create", "tenant", tenant_id, details={"name": name},
                                      audit_failure=False) as op:
                # other tenants' rows are invisible under RLS: the unique constraint is what catches a clash
                tenant = Tenant(id=tenant_id, name=name, status="active", settings={})
                op.session.add(tenant)
                op.session.flush()
                op.session.add(
                    ApiKey(tenant_id=tenant_id, name="initial", prefix=prefix, key_hash=hash_api_key(key),
                           created_by=principal.actor)
                )
                op.details["key_prefix"] = prefix
        except ConflictError as exc:
            if "name" in exc.message:
                raise ConflictError(f"tenant {name!r} already exists") from None
            raise
        return TenantInfo(tenant.id, tenant.name, tenant.status, tenant.created_at), key

    def list_tenants(self) -> list[TenantInfo]:
        """Every tenant (an operator's view, read through the scheduler role: the tenant list only)."""
        with self.db.scheduler_scope(readonly=True) as s:
            rows = s.scalars(select(Tenant).order_by(Tenant.name))
            return [TenantInfo(t.id, t.name, t.status, t.created_at) for t in rows]

    def get_tenant(self, principal: Principal) -> TenantInfo:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            t = s.get(Tenant, principal.tenant_id)
            if t is None:
                raise NotFoundError("tenant not found")
            return TenantInfo(t.id, t.name, t.status, t.created_at)

    # --- keys ---------------------------------------------------------------------------------------

    def authenticate(self, api_key: str | None, *, source: str = "cli") -> Principal:
        """Resolve an API key to the principal acting with it; AuthenticationError if unknown or revoked."""
        if not api_key:
            raise AuthenticationError("no API key: pass --api-key or set MLHUB_API_KEY")
        m = KEY_PATTERN.match(api_key.strip())
        if m is None:
            raise AuthenticationError("malformed API key (expected mlh_<prefix>_<secret>)")
        tenant_id = self.db.resolve_api_key_hash(hash_api_key(api_key.strip()))
        if tenant_id is None:
            raise AuthenticationError(f"API key mlh_{m['prefix']}_*** is unknown or revoked")
        return Principal(tenant_id=tenant_id, actor=f"key:{m['prefix']}", source=source)

    def create_key(self, principal: Principal, name: str) -> tuple[ApiKeyInfo, str]:
        check_name(name, "key name")
        key, prefix = new_api_key()
        with self.audit.operation(principal, "key.create", "api_key", details={"prefix": prefix}) as op:
            row = ApiKey(tenant_id=principal.tenant_id, name=name, prefix=prefix, key_hash=hash_api_key(key),
                         created_by=principal.actor)
            op.session.add(row)
            op.session.flush()
            op.target_id = str(row.id)
        return ApiKeyInfo.from_row(row), key

    def list_keys(self, principal: Principal, *, include_revoked: bool = False) -> list[ApiKeyInfo]:
        q = select(ApiKey).where(ApiKey.tenant_id == principal.tenant_id)
        if not include_revoked:
            q = q.where(ApiKey.revoked_at.is_(None))
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return [ApiKeyInfo.from_row(r) for r in s.scalars(q.order_by(ApiKey.id))]

    def revoke_key(self, principal: Principal, key_ref: str) -> ApiKeyInfo:
        """Revoke by id or prefix. Takes effect on the next request: resolution is never cached."""
        with self.audit.operation(principal, "key.revoke", "api_key", key_ref) as op:
            q = select(ApiKey).where(ApiKey.tenant_id == principal.tenant_id)
            q = q.where(ApiKey.id == int(key_ref)) if key_ref.isdigit() else q.where(ApiKey.prefix == key_ref)
            row = op.session.scalars(q).first()
            if row is None:
                raise NotFoundError(f"no API key {key_ref!r} in this tenant")
            if row.revoked_at is not None:
                raise ConflictError(f"API key {row.prefix} is already revoked")
            row.revoked_at = utcnow()
            op.target_id = str(row.id)
            op.details["prefix"] = row.prefix
        return ApiKeyInfo.from_row(row)


# --- embedded default ---------------------------------------------------------------------------------


def read_credentials(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_credentials(path: Path, api_key: str) -> None:
    """Write the key to a new file readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (api_key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def bootstrap_default_tenant(service: TenantService, credentials_path: Path) -> str:
    """First run on the embedded default: create tenant ``default`` and keep its key in ``credentials``."""
    existing = read_credentials(credentials_path)
    if existing:
        return existing
    try:
        _, key = service.create_tenant(DEFAULT_TENANT, actor="system:bootstrap", source="cli")
    except ConflictError:
        raise AuthenticationError(
            f"the embedded tenant {DEFAULT_TENANT!r} exists but {credentials_path} is missing: pass --api-key or "
            "set MLHUB_API_KEY, or create a new tenant with `mlhub tenants create NAME`"
        ) from None
    write_credentials(credentials_path, key)
    return key
