"""Endpoints: which of a tenant's models the inference application serves, and how.

An endpoint is a ``deployments`` row named after the model (the route is ``/v1/models/{name}/predict``): it
follows an alias (``champion`` by default: a promotion is served within seconds, no redeploy) or pins a
version. One Ray Serve application serves every endpoint of every tenant (``serve_apps/inference.py``); the
scaling a deploy asks for (``--replicas N`` or ``--autoscale MIN,MAX``) is that application's, recorded with
the endpoint that asked for it. A model without an active endpoint answers 404 on the inference routes, so a
tenant decides what is reachable over HTTP. Deploy and undeploy are audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from mlhub.audit import AuditLog, Principal
from mlhub.domain.specs import parse_model_ref
from mlhub.errors import NotFoundError, ValidationError
from mlhub.registry.maintenance import INACTIVE_DEPLOYMENT
from mlhub.registry.rows import DELETED, aliases_of, model_row
from mlhub.store.database import Database
from mlhub.store.models import Deployment, ModelVersion, RegisteredModel
from mlhub.store.types import utcnow

__all__ = ["EndpointInfo", "EndpointService", "Scaling", "parse_autoscale"]

RUNNING = "running"
STOPPED = "stopped"


@dataclass(frozen=True)
class Scaling:
    """Replicas of the inference application: a fixed number, or autoscaling between two bounds."""

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None

    def __post_init__(self) -> None:
        if self.replicas is not None and self.min_replicas is not None:
            raise ValidationError("give either a replica count or autoscaling bounds, not both")
        if self.replicas is not None and not 1 <= self.replicas <= 64:
            raise ValidationError(f"replicas must be 1-64, got {self.replicas}")
        if self.min_replicas is not None:
            if self.max_replicas is None or not 0 <= self.min_replicas <= self.max_replicas <= 64 \
                    or self.max_replicas < 1:
                raise ValidationError("autoscale needs 0 <= MIN <= MAX <= 64 and MAX >= 1")

    @property
    def given(self) -> bool:
        return self.replicas is not None or self.min_replicas is not None

    def to_doc(self) -> dict[str, int]:
        if self.replicas is not None:
            return {"replicas": self.replicas}
        if self.min_replicas is not None:
            return {"min_replicas": self.min_replicas, "max_replicas": int(self.max_replicas or 1)}
        return {}

    def serve_options(self) -> dict[str, Any]:
        """The Serve deployment options this scaling means."""
        if self.replicas is not None:
            return {"num_replicas": self.replicas}
        if self.min_replicas is not None:
            return {"num_replicas": "auto", "autoscaling_config": {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": max(1, self.min_replicas), "target_ongoing_requests": 16,
                "upscale_delay_s": 5.0, "downscale_delay_s": 60.0}}
        return {}


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """``"1,4"`` -> (1, 4)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValidationError(f"--autoscale takes MIN,MAX (e.g. 1,4), got {text!r}")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class EndpointInfo:
    id: int
    name: str
    model_id: int
    alias: str | None
    version: int | None
    status: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def ref(self) -> str:
        """The registry reference requests are served from: ``name@alias`` or ``name/VERSION``."""
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"

    @property
    def active(self) -> bool:
        return self.status not in INACTIVE_DEPLOYMENT


class EndpointService:
    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self.db = db
        self.audit = audit or AuditLog(db)

    def deploy(self, principal: Principal, model: str, *, alias: str | None = None, version: int | None = None,
               scaling: Scaling | None = None) -> EndpointInfo:
        """Create or update the endpoint of ``model`` (default: follow alias ``champion``)."""
        if alias is not None and version is not None:
            raise ValidationError("give --alias or --version, not both")
        if alias is None and version is None:
            alias = "champion"
        try:
            parse_model_ref(f"{model}@{alias}" if alias else f"{model}/{version}")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        scaling = scaling or Scaling()
        with self.audit.operation(principal, "endpoint.deploy", "endpoint", model,
                                  details={"alias": alias, "version": version, **scaling.to_doc()}) as op:
            s = op.session
            m = model_row(s, principal, model)
            version_id = None
            if alias is not None:
                if alias not in aliases_of(s, m.id):
                    raise NotFoundError(f"model {model!r} has no alias {alias!r}: promote a version first "
                                        f"(mlhub models promote {model} VERSION --to {alias}) or pass --version")
            else:
                row = s.scalar(select(ModelVersion).where(ModelVersion.model_id == m.id,
                                                          ModelVersion.version == version))
                if row is None or row.status == DELETED:
                    raise NotFoundError(f"model {model!r} has no version {version}")
                version_id = row.id
            dep = s.scalar(select(Deployment).where(Deployment.tenant_id == principal.tenant_id,
                                                    Deployment.name == model).with_for_update())
            config = {"scaling": scaling.to_doc()} if scaling.given else {}
            if dep is None:
                dep = Deployment(tenant_id=principal.tenant_id, name=model, model_id=m.id, alias=alias,
                                 version_id=version_id, status=RUNNING, config=config)
                s.add(dep)
            else:
                dep.model_id, dep.alias, dep.version_id, dep.status = m.id, alias, version_id, RUNNING
                dep.config = {**(dep.config or {}), **config}
                dep.updated_at = utcnow()
            s.flush()
            op.target_id = str(dep.id)
            return _info(s, dep)

    def undeploy(self, principal: Principal, name: str) -> EndpointInfo:
        with self.audit.operation(principal, "endpoint.undeploy", "endpoint", name) as op:
            dep = _row(op.session, principal, name, lock=True)
            if not _active(dep):
                raise NotFoundError(f"endpoint {name!r} is not deployed")
            dep.status, dep.updated_at = STOPPED, utcnow()
            op.target_id = str(dep.id)
            return _info(op.session, dep)

    def list(self, principal: Principal, *, include_stopped: bool = False) -> list[EndpointInfo]:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            rows = s.scalars(select(Deployment).where(Deployment.tenant_id == principal.tenant_id)
                             .order_by(Deployment.name)).all()
            return [_info(s, d) for d in rows if include_stopped or _active(d)]

    def get(self, principal: Principal, name: str) -> EndpointInfo:
        """The active endpoint ``name``; NotFoundError when it is not deployed (or another tenant's)."""
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            dep = s.scalar(select(Deployment).where(Deployment.tenant_id == principal.tenant_id,
                                                    Deployment.name == name))
            if dep is None or not _active(dep):
                raise NotFoundError(f"model {name!r} is not deployed (mlhub deploy {name})")
            return _info(s, dep)


def _active(dep: Deployment) -> bool:
    return dep.status not in INACTIVE_DEPLOYMENT


def _row(s, principal: Principal, name: str, *, lock: bool = False) -> Deployment:
    q = select(Deployment).where(Deployment.tenant_id == principal.tenant_id, Deployment.name == name)
    dep = s.scalar(q.with_for_update() if lock else q)
    if dep is None:
        raise NotFoundError(f"endpoint {name!r} not found")
    return dep


def _info(s, dep: Deployment) -> EndpointInfo:
    version = None
    if dep.version_id is not None:
        version = s.scalar(select(ModelVersion.version).where(ModelVersion.id == dep.version_id))
    name = s.scalar(select(RegisteredModel.name).where(RegisteredModel.id == dep.model_id)) or dep.name
    return EndpointInfo(dep.id, name, dep.model_id, dep.alias, version, dep.status, dict(dep.config or {}),
                        dep.created_at, dep.updated_at)
