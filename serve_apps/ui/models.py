"""The model registry: models, one model's versions, aliases, stages, history and gates, promote and rollback
(the registry's own gated, audited calls, as the CLI makes them), and a side-by-side comparison."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mlhub.errors import MlhubError, NotFoundError, PromotionRefused, ValidationError
from serve_apps.api_routes.common import MAX_ID, clean_text
from serve_apps.ui.web import (
    Pager,
    UiSession,
    checked_form,
    ctx_of,
    current_session,
    redirect,
    render,
    set_flash,
)

router = APIRouter()

Session = Annotated[UiSession, Depends(current_session)]
ModelName = Annotated[str, Path(min_length=1, max_length=256)]
IMAGE_TYPES = frozenset({"image/png", "image/svg+xml", "image/jpeg"})


def _quoted(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def last_verdicts(ctx, session: UiSession, name: str) -> dict[str, Any] | None:
    """The gate verdicts of the model's last promotion attempt (passed or refused), from the audit log."""
    for event in ctx.audit.list(session.principal, action="model.promote", target=f"model:{name}", limit=20):
        if event.details.get("gates"):
            return {"at": event.created_at, "outcome": event.outcome, "version": event.details.get("version"),
                    "to": event.details.get("to"), "gates": event.details["gates"]}
    return None


@router.get("/models")
def models_page(request: Request, session: Session) -> Response:
    ctx = ctx_of(request)
    pager = Pager.of(request, lambda limit, offset: ctx.registry.list_models(session.principal, limit=limit,
                                                                             offset=offset))
    return render(request, "models.html", session=session, title="Models", pager=pager, quoted=_quoted)


@router.get("/models/{name}/compare")
def compare_page(request: Request, session: Session, name: ModelName) -> Response:
    ctx = ctx_of(request)
    refs = [r.strip() for r in request.query_params.get("refs", "").split(",") if r.strip()]
    refs = [r if any(c in r for c in "@/") else f"{name}/{r}" for r in refs]  # "3,4" means this model's versions
    for r in refs:
        clean_text(r)
    comparison = ctx.registry.compare(session.principal, refs)
    images = []
    for ref in refs:
        plots = [e.plot_artifact_id for e in ctx.registry.evaluations(session.principal, ref)
                 if e.plot_artifact_id is not None]
        images.append(plots[0] if plots else None)
    return render(request, "models_compare.html", session=session, title=f"Compare {name}", name=name, refs=refs,
                  comparison=comparison, images=images, quoted=_quoted)


@router.get("/models/{name}")
def model_page(request: Request, session: Session, name: ModelName) -> Response:
    ctx = ctx_of(request)
    detail = ctx.registry.show(session.principal, name)
    pager = Pager.of(request, lambda limit, offset: ctx.registry.versions(session.principal, name, limit=limit,
                                                                          offset=offset, newest_first=True))
    history = ctx.registry.history(session.principal, name, limit=50)
    return render(request, "model.html", session=session, title=f"Model {name}", model=detail, pager=pager,
                  history=history, verdicts=last_verdicts(ctx, session, name), quoted=_quoted)


@router.post("/models/{name}/promote")
async def promote(request: Request, session: Session, name: ModelName) -> Response:
    form = await checked_form(request, session)
    response = redirect(request, f"/models/{_quoted(name)}")
    try:
        raw = form.get("version", "").strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
            raise ValidationError("version: a version number")
        to = form.get("to", "").strip() or "champion"
        reason = form.get("reason", "").strip() or None
        result = await run_in_threadpool(ctx_of(request).registry.promote, session.principal, name, int(raw), to,
                                         reason=reason)
    except PromotionRefused as exc:
        failing = [f"{g['gate']}: {g['detail']}" for g in exc.details.get("gates", []) if not g.get("passed")]
        set_flash(response, request, "error", f"promotion of {name}/{raw} to {to} refused by the gates", failing)
        return response
    except NotFoundError:
        raise
    except MlhubError as exc:
        set_flash(response, request, "error", exc.message)
        return response
    if not result.changed:
        set_flash(response, request, "ok", f"{name}/{result.version} already holds {result.target}")
    else:
        was = f" (was version {result.previous})" if result.previous is not None else ""
        set_flash(response, request, "ok", f"{name}/{result.version} promoted to {result.target}{was}",
                  [f"{g.gate}: {g.detail}" for g in result.gates])
    return response


@router.post("/models/{name}/rollback")
async def rollback(request: Request, session: Session, name: ModelName) -> Response:
    form = await checked_form(request, session)
    response = redirect(request, f"/models/{_quoted(name)}")
    alias = form.get("alias", "").strip() or "champion"
    try:
        result = await run_in_threadpool(ctx_of(request).registry.rollback, session.principal, name, alias,
                                         reason=form.get("reason", "").strip() or None)
    except NotFoundError:
        raise
    except MlhubError as exc:
        set_flash(response, request, "error", exc.message)
        return response
    set_flash(response, request, "ok", f"{name}@{alias} rolled back to version {result.version} "
                                       f"(was {result.previous})")
    return response


@router.get("/artifacts/{artifact_id}")
def artifact_image(request: Request, session: Session,
                   artifact_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    """An image artifact of the tenant (an evaluation's confusion-matrix plot), bytes verified by sha256."""
    from mlhub.artifact_records import ArtifactService

    ctx = ctx_of(request)
    service = ArtifactService(ctx.backends.db, ctx.backends.artifacts, ctx.audit)
    record = service.get(session.principal, artifact_id)
    if record.media_type not in IMAGE_TYPES:
        raise NotFoundError(f"artifact {artifact_id} is not an image")
    return Response(service.read_bytes(session.principal, artifact_id), media_type=record.media_type,
                    headers={"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff",
                             "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'"})
