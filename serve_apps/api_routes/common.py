"""What every route module of the REST API shares: the per-replica context (backends and services, built once),
the authenticated principal as a FastAPI dependency, input types that never reach the database with bytes it
refuses, and the JSON rendering of mlhub's dataclasses."""

import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from mlhub.audit import AuditLog, Principal
from mlhub.backends import Backends
from mlhub.config import Settings
from mlhub.errors import ValidationError

MAX_ID = 2**63 - 1  # ids are BIGINT: a larger number is a 422, never a database error

#: documents the scheme in OpenAPI (the lock in /api/docs); the key itself is checked by the Authenticator
bearer = HTTPBearer(auto_error=False, description="An mlhub API key: `Authorization: Bearer mlh_...`")


def clean_text(value: str) -> str:
    """Refuse what PostgreSQL cannot store in text or JSON: NUL characters and unpaired surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(clean_text)]


def check_document(doc: Any, where: str = "body", depth: int = 0) -> None:
    """The same refusal for every key and string of a free-form JSON document (a job spec)."""
    if depth > 64:
        raise ValidationError(f"{where}: nested more than 64 levels deep")
    if isinstance(doc, str):
        try:
            clean_text(doc)
        except ValueError as exc:
            raise ValidationError(f"{where}: {exc}") from None
    elif isinstance(doc, dict):
        for k, v in doc.items():
            check_document(k, where, depth + 1)
            check_document(v, f"{where}.{k}", depth + 1)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            check_document(v, f"{where}[{i}]", depth + 1)


def Limit(default: int = 50, maximum: int = 1000):  # noqa: N802 - reads like the Query(...) it returns
    return Query(default, ge=1, le=maximum, description=f"At most this many items (1-{maximum}).")


@dataclass
class ApiContext:
    """Backends and services of one replica (or one test app)."""

    settings: Settings
    backends: Backends

    @cached_property
    def auth(self):
        from mlhub.serving.auth import Authenticator

        return Authenticator(self.backends.db, ttl_s=self.settings.api_key_cache_ttl_s, source="api")

    @cached_property
    def sessions(self):
        """The web console's session tokens (signed, expiring, checked against the API keys)."""
        from mlhub.serving.sessions import SessionTokens

        return SessionTokens(self.backends.db, ttl_s=self.settings.api_key_cache_ttl_s, source="api")

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.backends.db)

    @cached_property
    def jobs(self):
        from mlhub.jobs.service import JobService

        return JobService(self.backends.db, self.audit, queue_resources=self.settings.queue_resources)

    @cached_property
    def tracking(self):
        from mlhub.tracking import TrackingService

        return TrackingService(self.backends.db)

    @cached_property
    def registry(self):
        from mlhub.registry.service import RegistryService

        return RegistryService(self.backends.db, self.audit, cache=self.backends.cache,
                               cache_ttl_s=self.settings.cache_ttl_s)

    @cached_property
    def experiments(self):
        from mlhub.experiments.service import ExperimentService

        return ExperimentService(self.backends.db, self.audit, registry=self.registry)

    @cached_property
    def monitoring(self):
        from mlhub.monitoring.service import MonitoringService

        return MonitoringService.for_backends(self.backends)


def context(request: Request) -> ApiContext:
    return request.app.state.mlhub


def current_principal(request: Request, ctx: Annotated[ApiContext, Depends(context)],
                      _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The tenant acting: the ``Authorization: Bearer`` key decides it (AuthenticationError -> 401)."""
    return ctx.auth.principal(request.headers.get("authorization"))


Ctx = Annotated[ApiContext, Depends(context)]
Caller = Annotated[Principal, Depends(current_principal)]


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


class ApiJSONResponse(JSONResponse):
    """JSON where a NaN or infinite metric becomes null (strict JSON has no such numbers)."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            return json.dumps(_finite(content), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode()


def plain(obj: Any) -> Any:
    """A dataclass (or a list of them, tuples, datetimes) as JSON-able data."""
    return jsonable_encoder(obj)
