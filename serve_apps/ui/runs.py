"""Tracked runs: a paginated list, one run's params and metric curves, several runs' curves on one chart."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from mlhub.domain.enums import RunStatus
from mlhub.errors import ValidationError
from mlhub.tracking import step_series
from serve_apps.api_routes.common import MAX_ID, clean_text
from serve_apps.ui.web import Pager, UiSession, ctx_of, current_session, render

router = APIRouter()

Session = Annotated[UiSession, Depends(current_session)]
RunId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_POINTS = 5_000  # per series on a chart: longer ones are thinned evenly


def thinned(points: list[tuple[int, float]]) -> dict[str, list]:
    if len(points) > MAX_POINTS:
        stride = -(-len(points) // MAX_POINTS)
        points = points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
    return {"x": [p[0] for p in points], "y": [p[1] for p in points]}


@router.get("/runs")
def runs_page(request: Request, session: Session) -> Response:
    ctx = ctx_of(request)
    q = request.query_params
    filters = {"experiment": q.get("experiment") or None, "status": q.get("status") or None,
               "filter": q.get("filter") or None, "order_by": q.get("order_by") or None}
    for value in filters.values():
        if value is not None:
            clean_text(value)
    raw_job = q.get("job_id", "")
    job_id = int(raw_job) if raw_job.isdigit() and 1 <= int(raw_job) <= MAX_ID else None
    pager = Pager.of(request, lambda limit, offset: ctx.tracking.list_runs(
        session.principal, job_id=job_id, limit=limit, offset=offset, **filters), job_id=job_id, **filters)
    return render(request, "runs.html", session=session, title="Runs", pager=pager, filters=filters, job_id=job_id,
                  statuses=[s.value for s in RunStatus])


@router.get("/runs/compare")
def compare_page(request: Request, session: Session) -> Response:
    ctx = ctx_of(request)
    raw = request.query_params.get("ids", "")
    try:
        ids = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise ValidationError("ids: comma-separated run ids, e.g. ?ids=1,2") from None
    if any(not 1 <= i <= MAX_ID for i in ids):
        raise ValidationError("ids: run ids are positive numbers")
    comparison = ctx.tracking.compare(session.principal, ids)
    traces = []
    for run in comparison.runs:
        for key, points in sorted(step_series(ctx.tracking.metric_history(session.principal, run.id)).items()):
            traces.append({"name": f"run {run.id} {run.name}: {key}", **thinned(points)})
    return render(request, "runs_compare.html", session=session, title="Compare runs", comparison=comparison,
                  traces=traces)


@router.get("/runs/{run_id}")
def run_page(request: Request, session: Session, run_id: RunId) -> Response:
    ctx = ctx_of(request)
    detail = ctx.tracking.get_run(session.principal, run_id)
    history = step_series(ctx.tracking.metric_history(session.principal, run_id))
    traces = [{"name": key, **thinned(points)} for key, points in sorted(history.items())]
    return render(request, "run.html", session=session, title=f"Run {run_id}", detail=detail, traces=traces)
