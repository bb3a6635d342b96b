"""Tracked runs and their metrics, as `mlhub runs list|show` shows them."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from mlhub.domain.enums import RunStatus
from serve_apps.api_routes.common import MAX_ID, Caller, Ctx, Limit, Text, plain

router = APIRouter(tags=["runs"])

RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="A run id.")]


def _run(info) -> dict[str, Any]:
    return {**plain(info), "duration_s": info.duration_s}


@router.get("/runs", summary="Your runs, newest first, or filtered and ordered like `mlhub runs list`")
def list_runs(ctx: Ctx, caller: Caller,
              experiment: Annotated[Text | None, Query(max_length=256)] = None,
              job_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
              status: Annotated[RunStatus | None, Query()] = None,
              filter: Annotated[Text | None, Query(  # noqa: A002 - the name users type
                  max_length=4096, description="e.g. `metrics.f1 > 0.9 and params.lr < 0.01`")] = None,
              order_by: Annotated[Text | None, Query(max_length=1024, description="e.g. `metrics.f1 desc, name`")]
              = None,
              limit: int = Limit()) -> dict[str, Any]:
    runs = ctx.tracking.list_runs(caller, experiment=experiment, job_id=job_id,
                                  status=status.value if status else None, filter=filter, order_by=order_by,
                                  limit=limit)
    return {"runs": [_run(r) for r in runs]}


@router.get("/runs/{run_id}", summary="One run: params, tags, final and latest metrics, artifacts")
def get_run(ctx: Ctx, caller: Caller, run_id: RunId) -> dict[str, Any]:
    detail = ctx.tracking.get_run(caller, run_id)
    return {**_run(detail.run), "params": detail.params, "tags": detail.tags,
            "final_metrics": plain(detail.final_metrics), "latest_metrics": detail.latest_metrics,
            "metric_points": detail.metric_points, "artifacts": plain(list(detail.artifacts))}


@router.get("/runs/{run_id}/metrics", summary="Metric histories of a run: every series, or the keys asked for")
def run_metrics(ctx: Ctx, caller: Caller, run_id: RunId,
                key: Annotated[list[Text] | None, Query(max_length=100, description="A metric key (repeat it).")]
                = None) -> dict[str, Any]:
    history = ctx.tracking.metric_history(caller, run_id, key or None)
    return {"run_id": run_id,
            "metrics": {k: [{"step": s, "value": v} for s, v in points] for k, points in history.items()}}
