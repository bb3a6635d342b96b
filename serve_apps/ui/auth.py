"""Log in with an API key, log out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mlhub.errors import AuthenticationError
from serve_apps.ui.web import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    UiSession,
    base,
    check_origin,
    checked_form,
    ctx_of,
    current_session,
    is_https,
    read_form,
    redirect,
    render,
)

router = APIRouter()


@router.get("/login")
def login_page(request: Request) -> Response:
    return render(request, "login.html", session=None, title="Log in", error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    check_origin(request)
    key = (await read_form(request)).get("api_key", "").strip()
    ctx = ctx_of(request)
    try:
        if not key:
            raise AuthenticationError("enter an API key")
        token, _ = await run_in_threadpool(lambda: ctx.sessions.issue(ctx.auth.principal_for_key(key), key))
    except AuthenticationError as exc:
        return render(request, "login.html", session=None, status_code=401, title="Log in", error=exc.message)
    response = redirect(request, "/jobs")
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE_S, path=base(request) or "/", httponly=True,
                        samesite="strict", secure=is_https(request))
    return response


@router.post("/logout")
async def logout(request: Request, session: Annotated[UiSession, Depends(current_session)]) -> Response:
    await checked_form(request, session)
    ctx_of(request).sessions.forget(request.cookies.get(SESSION_COOKIE, ""))
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path=base(request) or "/", httponly=True, samesite="strict",
                           secure=is_https(request))
    return response
