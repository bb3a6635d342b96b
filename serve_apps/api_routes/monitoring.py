"""Monitoring: drift monitors, drift reports, alerts (as `mlhub drift list|report` and `mlhub alerts list|ack`).

Checks run on demand with `mlhub drift check` or on a monitor's schedule; this face only reads, and acknowledges or
resolves alerts."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from mlhub.domain.enums import AlertStatus
from serve_apps.api_routes.common import MAX_ID, Caller, Ctx, Limit, Text, plain

router = APIRouter(tags=["monitoring"])

AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="An alert id.")]


def _report(rep) -> dict[str, Any]:
    return {**plain(rep), "drifted_features": rep.drifted_features}


@router.get("/monitors", summary="Your drift monitors")
def monitors(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    return {"monitors": plain(ctx.monitoring.list_monitors(caller))}


@router.get("/drift/{target:path}", summary="Drift reports of a monitor or a model (name, name@alias, name/VERSION), "
                                            "newest first")
def drift_reports(ctx: Ctx, caller: Caller,
                  target: Annotated[Text, Path(min_length=1, max_length=256,
                                               description="A monitor's name or a model reference.")],
                  limit: int = Limit(20)) -> dict[str, Any]:
    return {"target": target, "reports": [_report(r) for r in ctx.monitoring.reports(caller, target, limit=limit)]}


@router.get("/alerts", summary="Alerts of your tenant, newest first")
def alerts(ctx: Ctx, caller: Caller,
           status: Annotated[AlertStatus | None, Query()] = None,
           rule: Annotated[Text | None, Query(min_length=1, max_length=128)] = None,
           limit: int = Limit(100, 10_000)) -> dict[str, Any]:
    found = ctx.monitoring.alerts.list_alerts(caller, status=status.value if status else None, rule=rule,
                                              limit=limit)
    return {"alerts": plain(found)}


@router.post("/alerts/{alert_id}/ack", summary="Acknowledge an alert")
def ack(ctx: Ctx, caller: Caller, alert_id: AlertId) -> dict[str, Any]:
    return plain(ctx.monitoring.alerts.ack(caller, alert_id))


@router.post("/alerts/{alert_id}/resolve", summary="Resolve an alert")
def resolve(ctx: Ctx, caller: Caller, alert_id: AlertId) -> dict[str, Any]:
    return plain(ctx.monitoring.alerts.resolve(caller, alert_id))
