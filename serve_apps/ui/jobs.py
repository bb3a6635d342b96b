"""Jobs: queue depths, a filtered and paginated list, one job with live progress and logs, cancel and retry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlhub.domain.enums import JobState, QueueName
from mlhub.errors import MlhubError
from serve_apps.api_routes.common import MAX_ID
from serve_apps.ui.web import (
    Pager,
    UiSession,
    checked_form,
    ctx_of,
    current_session,
    redirect,
    render,
    set_flash,
    write_and_redirect,
)

router = APIRouter()

Session = Annotated[UiSession, Depends(current_session)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_LOG_CHARS = 200_000  # the job page shows the tail of longer logs
STATES = [s.value for s in JobState]
QUEUES = [q.value for q in QueueName]
FINAL = sorted(s.value for s in JobState if s.is_terminal)


def progress_text(progress: dict[str, Any] | None) -> str:
    """A job's progress document as one line: ``epoch: 3, epochs: 10, loss: 0.231`` (one nested level)."""
    if not progress:
        return ""
    parts = []
    for k, v in progress.items():
        for key, value in (v.items() if isinstance(v, dict) else [(k, v)]):
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, dict | list):
                continue
            parts.append(f"{key}: {value}")
    return ", ".join(parts)[:2000]


def _logs(ctx, session: UiSession, job_id: int, after_id: int = 0) -> tuple[str, int]:
    chunks = ctx.jobs.logs(session.principal, job_id, after_id=after_id)
    text = "".join(c.text for c in chunks)
    return text[-MAX_LOG_CHARS:], chunks[-1].id if chunks else after_id


@router.get("/jobs")
def jobs_page(request: Request, session: Session) -> Response:
    ctx = ctx_of(request)
    state = request.query_params.get("state") or None
    queue = request.query_params.get("queue") or None
    state = state if state in STATES else None
    queue = queue if queue in QUEUES else None
    pager = Pager.of(request, lambda limit, offset: ctx.jobs.list(session.principal, state=state, queue=queue,
                                                                  limit=limit, offset=offset), state=state,
                     queue=queue)
    return render(request, "jobs.html", session=session, title="Jobs", pager=pager, states=STATES,
                  queue_names=QUEUES, state=state, queue=queue, queues=queue_depths(ctx, session))


def queue_depths(ctx, session: UiSession) -> list[dict[str, Any]]:
    stats = ctx.jobs.queue_stats(session.principal)
    return [{"name": q, "pending": sum(stats.get(q, {}).get(s, 0) for s in ("queued", "retrying")),
             "running": stats.get(q, {}).get("running", 0), "total": sum(stats.get(q, {}).values())}
            for q in QUEUES]


@router.get("/queues/live")
def queues_live(request: Request, session: Session) -> JSONResponse:
    """What the jobs page polls: each queue's depth."""
    return JSONResponse({"queues": queue_depths(ctx_of(request), session)}, headers={"cache-control": "no-store"})


@router.get("/jobs/{job_id}")
def job_page(request: Request, session: Session, job_id: JobId) -> Response:
    ctx = ctx_of(request)
    job = ctx.jobs.get(session.principal, job_id)
    logs, after = _logs(ctx, session, job_id)
    return render(request, "job.html", session=session, title=f"Job {job_id}", job=job,
                  progress=progress_text(job.progress), logs=logs, after_id=after, final=FINAL,
                  is_final=job.state in FINAL, retryable=job.state in ("failed", "dead", "cancelled"))


@router.get("/jobs/{job_id}/live")
def job_live(request: Request, session: Session, job_id: JobId) -> JSONResponse:
    """What the job page polls: state, progress and the log text after ``after_id``."""
    ctx = ctx_of(request)
    raw = request.query_params.get("after_id", "0")
    after_id = min(int(raw), MAX_ID) if raw.isdigit() else 0
    job = ctx.jobs.get(session.principal, job_id)
    logs, after = _logs(ctx, session, job_id, after_id)
    return JSONResponse({"state": job.state, "progress": progress_text(job.progress), "logs": logs,
                         "after_id": after, "final": job.state in FINAL, "error": job.error},
                        headers={"cache-control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, session: Session, job_id: JobId) -> Response:
    await checked_form(request, session)
    jobs = ctx_of(request).jobs
    return await write_and_redirect(
        request, f"/jobs/{job_id}", lambda: jobs.cancel(session.principal, job_id),
        lambda info: f"job {job_id}: {'cancelled' if info.state == 'cancelled' else 'cancel requested'}")


@router.post("/jobs/{job_id}/retry")
async def retry(request: Request, session: Session, job_id: JobId) -> Response:
    from serve_apps.api_routes.jobs import retry_job

    await checked_form(request, session)
    try:
        info = await run_in_threadpool(retry_job, ctx_of(request).jobs, session.principal, job_id)
    except MlhubError as exc:
        response = redirect(request, f"/jobs/{job_id}")
        set_flash(response, request, "error", exc.message)
        return response
    response = redirect(request, f"/jobs/{info.id}")
    set_flash(response, request, "ok", f"job {info.id} queued: a retry of job {job_id}")
    return response
