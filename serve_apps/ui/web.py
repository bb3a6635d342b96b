"""What every page of the web console shares: templates (autoescaped), the session cookie and its CSRF token,
form parsing, pagination and flash messages.

The session: the cookie ``mlhub_session`` holds a signed, expiring token (:mod:`mlhub.serving.sessions`) that stands
for the API key the user logged in with, never the key itself: HttpOnly (no script reads it), SameSite=Strict and
Path=/ui (the browser sends it only to the console, only from its own pages), Secure over HTTPS. Every request
verifies it against the database's API keys, so revoking the key ends its sessions (within the API key cache's
TTL). The session's CSRF token is an HMAC bound to that session, required in every POST together with a
same-origin ``Origin`` (and no cross-site ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mlhub import __version__
from mlhub.audit import Principal
from mlhub.errors import AuthenticationError, MlhubError
from serve_apps.api_routes.common import ApiContext

log = logging.getLogger("mlhub.serve.ui")

SESSION_COOKIE = "mlhub_session"
FLASH_COOKIE = "mlhub_flash"
SESSION_MAX_AGE_S = 12 * 3600
PAGE_SIZE = 25
MAX_PAGE = 1_000_000
MAX_FORM_BYTES = 16_384

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


class LoginRequired(Exception):
    """No valid session: the handler answers 303 to the login page."""


class CsrfRefused(Exception):
    """A POST without this session's CSRF token, or from another site: 403."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class UiSession:
    principal: Principal
    csrf: str
    tenant: str


def base(request: Request) -> str:
    """Where the console is mounted (``/ui`` under Serve and in tests)."""
    return request.scope.get("root_path", "").rstrip("/")


def ctx_of(request: Request) -> ApiContext:
    return request.app.state.mlhub


def is_https(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https" or request.url.scheme == "https"


def _tenant_name(request: Request, principal: Principal) -> str:
    """The tenant's name for the nav, remembered per console app (names do not change)."""
    names: dict[str, str] = request.app.state.tenant_names
    name = names.get(principal.tenant_id)
    if name is None:
        from mlhub.tenancy import TenantService

        if len(names) > 10_000:
            names.clear()
        name = names[principal.tenant_id] = TenantService(ctx_of(request).backends.db).get_tenant(principal).name
    return name


def current_session(request: Request) -> UiSession:
    """The session of the request's cookie; LoginRequired without a valid one (FastAPI dependency)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired()
    ctx = ctx_of(request)
    try:
        web = ctx.sessions.verify(token)
    except AuthenticationError:
        raise LoginRequired() from None
    return UiSession(web.principal, web.csrf, _tenant_name(request, web.principal))


def optional_session(request: Request) -> UiSession | None:
    """The request's session if it has a valid one (error pages show the nav to those logged in)."""
    try:
        return current_session(request)
    except (LoginRequired, MlhubError):
        return None


def check_origin(request: Request) -> None:
    """Refuse a state-changing request that another site's page sent."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise CsrfRefused("the request came from another site")
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
    if origin == "null" or urlsplit(origin).netloc.lower() != host.split(",")[0].strip().lower():
        raise CsrfRefused(f"the request came from another origin ({origin[:100]})")


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the console's forms send), first values."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0].replace("\x00", "") for k, v in fields.items() if v}


async def checked_form(request: Request, session: UiSession) -> dict[str, str]:
    """The form of a POST whose CSRF token and origin are this session's; CsrfRefused otherwise."""
    check_origin(request)
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf_token", "").encode(), session.csrf.encode()):
        raise CsrfRefused("missing or wrong CSRF token: reload the page and try again")
    return form


def page_of(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return min(max(int(raw), 1), MAX_PAGE) if raw.isdigit() else 1


@dataclass(frozen=True)
class Pager:
    """One page of a list fetched with LIMIT ``PAGE_SIZE + 1`` (the extra row only says a next page exists)."""

    page: int
    rows: list[Any]
    has_next: bool
    base_url: str
    params: dict[str, str]

    @classmethod
    def of(cls, request: Request, fetch, **params: Any) -> Pager:
        page = page_of(request)
        rows = list(fetch(PAGE_SIZE + 1, (page - 1) * PAGE_SIZE))
        keep = {k: str(v) for k, v in params.items() if v not in (None, "")}
        return cls(page, rows[:PAGE_SIZE], len(rows) > PAGE_SIZE, request.url.path, keep)

    def url(self, page: int) -> str:
        return f"{self.base_url}?{urlencode({**self.params, 'page': page})}"


def set_flash(response: Response, request: Request, kind: str, message: str, items: list[str] | None = None) -> None:
    doc = {"kind": kind, "message": message[:1000], "items": [i[:300] for i in (items or [])[:10]]}
    value = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path=base(request) or "/", httponly=True,
                        samesite="strict", secure=is_https(request))


def _take_flash(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return {"kind": "ok" if doc.get("kind") == "ok" else "error", "message": str(doc.get("message", "")),
                "items": [str(i) for i in doc.get("items", [])][:10]}
    except (ValueError, TypeError, AttributeError):
        return None


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 to ``path`` below the console (``/jobs``)."""
    return RedirectResponse(f"{base(request)}{path}", status_code=303)


async def write_and_redirect(request: Request, back: str, call: Callable[[], Any],
                             done: Callable[[Any], str]) -> RedirectResponse:
    """A console write: run the service ``call`` off the event loop, then 303 to ``back`` with ``done(result)``
    as the flash message, or the refusal's message (any :class:`MlhubError`)."""
    response = redirect(request, back)
    try:
        info = await run_in_threadpool(call)
        set_flash(response, request, "ok", done(info))
    except MlhubError as exc:
        set_flash(response, request, "error", exc.message)
    return response


def render(request: Request, template: str, *, session: UiSession | None, status_code: int = 200,
           **values: Any) -> HTMLResponse:
    flash = _take_flash(request)
    html = _env.get_template(template).render(
        ui=base(request), session=session, flash=flash, version=__version__, nav=NAV, path=request.url.path,
        **values)
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=base(request) or "/")
    return response


NAV = [("jobs", "Jobs"), ("runs", "Runs"), ("models", "Models"), ("experiments", "Experiments"),
       ("monitors", "Monitors"), ("health", "Health")]

#: no inline script runs (charts read their data from JSON blocks), no framing, nothing from elsewhere
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
