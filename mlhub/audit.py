"""The audit log: one event per state-changing operation, whichever path it takes.

Services wrap each state change in :meth:`AuditLog.operation`: the event is written in the same transaction
as the change when it succeeds, and in a transaction of its own when it fails (the change is rolled back,
the failed attempt is still recorded). On PostgreSQL the app role may only INSERT and SELECT this table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlhub.domain.enums import AuditOutcome
from mlhub.errors import AuthenticationError, MlhubError, TenantAccessDenied, ValidationError, redact
from mlhub.store.database import Database
from mlhub.store.models import AuditEvent

log = logging.getLogger("mlhub.audit")

SOURCES = frozenset({"cli", "api", "python", "orchestrator", "gc", "serve"})


@dataclass(frozen=True)
class Principal:
    """Who acts, and as which tenant. ``actor`` is shown in the audit log (never a secret)."""

    tenant_id: str
    actor: str
    source: str = "cli"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}")


@dataclass
class Operation:
    """Handle given to the body of an audited operation."""

    session: Session
    target_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    id: int
    tenant_id: str
    created_at: datetime
    actor: str
    source: str
    action: str
    target_type: str
    target_id: str | None
    outcome: str
    message: str | None
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: AuditEvent) -> AuditRecord:
        return cls(
            id=row.id, tenant_id=row.tenant_id, created_at=row.created_at, actor=row.actor, source=row.source,
            action=row.action, target_type=row.target_type, target_id=row.target_id, outcome=row.outcome,
            message=row.message, details=row.details,
        )


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def add(
        session: Session,
        principal: Principal,
        action: str,
        target_type: str,
        target_id: str | None,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        *,
        message: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one event inside an open tenant scope."""
        session.add(
            AuditEvent(
                tenant_id=principal.tenant_id, actor=principal.actor[:128], source=principal.source,
                action=action, target_type=target_type, target_id=None if target_id is None else str(target_id),
                outcome=outcome.value, message=None if message is None else redact(message)[:2000],
                details=details or {},
            )
        )

    @contextmanager
    def operation(
        self,
        principal: Principal,
        action: str,
        target_type: str,
        target_id: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        audit_failure: bool = True,
    ) -> Iterator[Operation]:
        """Run a state change in one tenant transaction and audit it, success or failure.

        ``audit_failure=False`` is for operations whose tenant may not exist when they fail (tenant creation).
        """
        op: Operation | None = None
        try:
            with self.db.tenant_scope(principal.tenant_id) as session:
                op = Operation(session=session, target_id=target_id, details=dict(details or {}))
                yield op
                self.add(session, principal, action, target_type, op.target_id, details=op.details)
        except MlhubError as exc:
            outcome = (
                AuditOutcome.DENIED
                if isinstance(exc, AuthenticationError | TenantAccessDenied)
                else AuditOutcome.FAILURE
            )
            failed_target = op.target_id if op is not None else target_id
            if audit_failure:  # what the operation learnt before failing (e.g. gate verdicts) is kept too
                self._record_failure(principal, action, target_type, failed_target, outcome, exc.message,
                                     op.details if op is not None else details)
            raise

    def _record_failure(self, principal, action, target_type, target_id, outcome, message, details) -> None:
        try:
            with self.db.tenant_scope(principal.tenant_id) as session:
                self.add(session, principal, action, target_type, target_id, outcome, message=message,
                         details=details)
        except MlhubError as exc:  # the audit write must not hide the original error
            log.warning("could not audit failed %s: %s", action, exc.message)

    def list(
        self,
        principal: Principal,
        *,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Newest first. ``target`` matches ``type`` or ``type:id``."""
        if not 1 <= limit <= 10_000:
            raise ValidationError("limit must be between 1 and 10000")
        q = select(AuditEvent).where(AuditEvent.tenant_id == principal.tenant_id)
        if action:
            q = q.where(AuditEvent.action.startswith(action, autoescape=True))
        if target:
            ttype, _, tid = target.partition(":")
            q = q.where(AuditEvent.target_type == ttype)
            if tid:
                q = q.where(AuditEvent.target_id == tid)
        if since:
            q = q.where(AuditEvent.created_at >= since)
        if until:
            q = q.where(AuditEvent.created_at < until)
        q = q.order_by(AuditEvent.id.desc()).limit(limit)
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as session:
            return [AuditRecord.from_row(r) for r in session.scalars(q)]
