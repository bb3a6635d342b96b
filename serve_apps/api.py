"""The REST API: one FastAPI app (:func:`create_app`), served by Ray Serve inside the application ``mlhub-api``.

The application is on route prefix ``/``: its ingress (:func:`create_server_app`) mounts the REST API at ``/api``
and the web console (:mod:`serve_apps.ui`) at ``/ui``, both over one :class:`ApiContext` (the same services, the
same backends). The inference application keeps ``/v1``: Serve routes each request by the longest prefix.

Routes (all under ``/api``; every route except ``GET /api/health`` needs ``Authorization: Bearer <api key>``,
and the key decides the tenant: another tenant's job, run or model answers 404 like a missing one):

- ``GET  /health``                           the backends' health (200, or 503 when a configured one is down)
- ``POST /jobs`` (``Idempotency-Key``), ``GET /jobs``, ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel``,
  ``POST /jobs/{id}/retry``, ``GET /jobs/{id}/logs``, ``GET /jobs/{id}/trials``
- ``GET  /runs``, ``GET /runs/{id}``, ``GET /runs/{id}/metrics``
- ``GET  /models``, ``/models/compare?refs=...``, ``/models/{name}``, ``/models/{name}/versions``,
  ``POST /models/{name}/promote``, ``POST /models/{name}/rollback``
- ``GET  /experiments``, ``GET /experiments/{id}``, ``POST /experiments/{id}/start|stop``
- ``GET  /monitors``, ``GET /drift/{monitor or model ref}``, ``GET /alerts``, ``POST /alerts/{id}/ack|resolve``
- ``GET  /audit``
- ``GET  /openapi.json``, ``GET /docs``

Errors are one shape, ``{"error": {"code", "message", "details"}}``: an :class:`~mlhub.errors.MlhubError` with its
own status, request validation 422, anything unexpected 500 with a generic message (logged, never a traceback).

Serve strips nothing, and neither does a mount: under the ``/api`` mount the REST app sees ``root_path="/api"`` and
the full path, and Starlette routes on the part after ``root_path``, so the paths below are written without
``/api`` (and ``/api/openapi.json`` names ``/api`` as its server). Tests use ``TestClient(create_app(settings),
root_path="/api")`` the same way, without Ray, or the whole ingress: ``TestClient(create_server_app(settings))``.
"""

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlhub import __version__
from mlhub.backends import Backends
from mlhub.config import Settings, load_settings
from mlhub.domain.specs import MAX_SPEC_BYTES
from mlhub.errors import AuthenticationError, MlhubError
from serve_apps.api_routes.common import ApiContext, ApiJSONResponse, Ctx, plain

log = logging.getLogger("mlhub.serve.api")

APP_NAME = "mlhub-api"
ROUTE_PREFIX = "/"  # the application's: the REST API and the console are mounted below it
REST_PREFIX = "/api"
UI_PREFIX = "/ui"
DEPLOYMENT_NAME = "ApiServer"
API_CPUS = 0.1  # the API is I/O bound (database reads): it must not take a core from training or serving
MAX_BODY_BYTES = MAX_SPEC_BYTES  # the largest body any route takes is a job spec


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one"},
    404: {"model": ErrorBody, "description": "Not found (or another tenant's)"},
    422: {"model": ErrorBody, "description": "Invalid input"},
}

_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                 415: "unsupported_media_type"}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return ApiJSONResponse({"error": {"code": code, "message": message, "details": plain(details or {})}},
                           status_code=status, headers=headers)


async def _mlhub_error(_: Request, exc: MlhubError) -> JSONResponse:
    if exc.http_status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    headers = {"www-authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
    return error_response(exc.http_status, exc.code, exc.message, exc.details, headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()[:50]]
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    return error_response(422, "validation_failed", f"invalid request: {summary}", {"errors": errors})


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error (logged on the server)")


class RequestGuard:
    """ASGI middleware that refuses, before routing: a NUL byte in the path or query string (422: PostgreSQL
    cannot store one, so it must never reach a query as a parameter), and a body over ``max_body`` bytes (413,
    whatever Content-Length claims: the body is read, bounded, and handed on)."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            response = error_response(422, "validation_failed", "NUL characters are not allowed in paths or queries")
            await response(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send) -> None:
        response = error_response(413, "payload_too_large", f"request body over {self.max_body:,} bytes")
        await response(scope, receive, send)


def create_app(settings: Settings, *, backends: Backends | None = None) -> FastAPI:
    """The API over ``settings``' backends (built here, once, unless given). No Ray needed."""
    from serve_apps.api_routes import audit, experiments, jobs, monitoring, registry, runs

    if backends is None:
        backends = Backends(settings)
        backends.ensure_schema()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        backends.close()

    app = FastAPI(title="mlhub", version=__version__, docs_url="/docs", openapi_url="/openapi.json",
                  redoc_url=None, default_response_class=ApiJSONResponse, lifespan=lifespan,
                  description="mlhub's REST API: jobs, runs, HPO trials, the model registry, experiments and the "
                              "audit log of the tenant whose API key you send (`Authorization: Bearer mlh_...`).")
    app.state.mlhub = ApiContext(settings, backends)
    app.add_exception_handler(MlhubError, _mlhub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(RequestGuard)

    @app.get("/health", tags=["health"], summary="Health of every backend (no API key needed)",
             responses={503: {"description": "A configured backend is down"}})
    def health(ctx: Ctx) -> JSONResponse:
        from mlhub.health import any_configured_down, check_all

        report = check_all(ctx.settings, ctx.backends.db)
        down = any_configured_down(report)
        return ApiJSONResponse({"ok": not down, "version": __version__, "backends": [h.to_dict() for h in report]},
                               status_code=503 if down else 200)

    for module in (jobs, runs, registry, experiments, monitoring, audit):
        app.include_router(module.router, responses=ERRORS)
    return app


def create_server_app(settings: Settings, *, backends: Backends | None = None) -> FastAPI:
    """The ingress of ``mlhub-api``: the REST API at ``/api`` and the web console at ``/ui``, one backends object
    (closed when the app shuts down: a mounted app's own lifespan does not run)."""
    from fastapi.responses import RedirectResponse

    from serve_apps.ui import create_ui

    if backends is None:
        backends = Backends(settings)
        backends.ensure_schema()
    rest = create_app(settings, backends=backends)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        backends.close()

    outer = FastAPI(title="mlhub", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                    lifespan=lifespan)
    outer.state.mlhub = rest.state.mlhub
    outer.mount(REST_PREFIX, rest)
    outer.mount(UI_PREFIX, create_ui(rest.state.mlhub))

    @outer.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/", status_code=307)

    return outer


@serve.ingress()
class ApiServer:
    """One replica of the API: the app (and its backends) is built once, when the replica starts."""

    def __init__(self, settings_doc: dict[str, Any]) -> None:
        # not ``self.app``: Serve's ingress wrapper owns that name (a read-only property)
        self.api = create_server_app(load_settings(**settings_doc))

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.api


def build_app(settings_doc: dict[str, Any] | None = None, *, num_replicas: int = 1):
    """The Serve application: ``serve.run(build_app(settings.to_document()), name="mlhub-api",
    route_prefix="/")`` (the REST API answers under ``/api``, the console under ``/ui``). From ``serve run``/``serve deploy`` YAML, ``args`` may hold any settings as plain keys
    (the rest come from the environment)."""
    settings = load_settings(**(settings_doc or {}))
    return serve.deployment(ApiServer).options(
        name=DEPLOYMENT_NAME, num_replicas=num_replicas, ray_actor_options={"num_cpus": API_CPUS},
        max_ongoing_requests=64, health_check_period_s=10.0, graceful_shutdown_timeout_s=5.0,
    ).bind(settings.to_document())
