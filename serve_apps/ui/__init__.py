"""mlhub's web console: server-rendered pages under ``/ui`` of the API application, over the REST API's own
:class:`~serve_apps.api_routes.common.ApiContext` (the same services, no second path to the data).

Pages: jobs (queues, a filtered list, a job with live progress and logs, cancel and retry), runs (params, metric
curves, comparisons), models (versions, aliases, history, gates, promote and rollback through the registry's
gates, compare), HPO trials, experiments, drift monitors and alerts, backend health. Every list is paginated on
the server; every write needs the session's CSRF token; templates autoescape; charts are plotly.js, served from
the installed ``plotly`` package (no CDN).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from mlhub.errors import MlhubError
from serve_apps.api_routes.common import ApiContext
from serve_apps.ui import auth, insights, jobs, models, runs
from serve_apps.ui.web import STATIC, CsrfRefused, LoginRequired, optional_session, redirect, render

log = logging.getLogger("mlhub.serve.ui")

__all__ = ["create_ui"]


def plotly_js() -> Path:
    """plotly.min.js as the installed plotly package ships it."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_ui(ctx: ApiContext) -> FastAPI:
    """The console as an ASGI app to mount (at ``/ui``) beside the REST API, sharing its context."""
    from serve_apps.api import RequestGuard

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mlhub = ctx
    app.state.tenant_names = {}
    app.add_middleware(RequestGuard)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _: LoginRequired) -> Response:
        return redirect(request, "/login")

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused) -> Response:
        return render(request, "error.html", session=None, status_code=403, title="Refused",
                      error_id="csrf-error", message=f"Refused: {exc.why}.")

    @app.exception_handler(MlhubError)
    async def _mlhub(request: Request, exc: MlhubError) -> Response:
        if exc.http_status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return render(request, "error.html", session=await run_in_threadpool(optional_session, request),
                      status_code=exc.http_status,
                      title=exc.code, error_id="error", message=exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:3])
        return render(request, "error.html", session=None, status_code=422, title="Invalid request",
                      error_id="error", message=f"invalid request: {where}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return render(request, "error.html", session=None, status_code=500, title="Error", error_id="error",
                      message="internal error (logged on the server)")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, "error.html", session=await run_in_threadpool(optional_session, request),
                      status_code=exc.status_code,
                      title=str(exc.status_code), error_id="error", message=str(exc.detail))

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript",
                            headers={"cache-control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return redirect(request, "/jobs")

    for module in (auth, jobs, runs, models, insights):
        app.include_router(module.router)
    return app
