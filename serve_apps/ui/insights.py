"""HPO trials, A/B experiments (start and stop them), drift monitors with their alerts (acknowledge and resolve
them), and backend health. Writes go through the same services, audit and tenant checks as the CLI and REST."""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from mlhub.errors import NotFoundError
from serve_apps.api_routes.common import MAX_ID
from serve_apps.ui.runs import thinned
from serve_apps.ui.web import (
    Pager,
    UiSession,
    checked_form,
    ctx_of,
    current_session,
    render,
    write_and_redirect,
)

router = APIRouter()

Session = Annotated[UiSession, Depends(current_session)]
MAX_TRIALS_SHOWN = 1_000
MAX_REPORTS = 200
ExperimentRef = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]
MONITOR_NAME = re.compile(r"^[^/?#\\]{1,256}$")


def _number(v):
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


@router.get("/hpo/{job_id}")
def hpo_page(request: Request, session: Session, job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    from mlhub.hpo.trials import list_trials, trial_curves

    ctx = ctx_of(request)
    job = ctx.jobs.get(session.principal, job_id)
    trials = list_trials(ctx.backends.db, session.principal.tenant_id, job_id)[:MAX_TRIALS_SHOWN]
    # the search's metric: in its result once it ended, in its progress while it runs
    metric = next((m for m in ((job.result or {}).get("metric"), (job.progress or {}).get("metric"))
                   if isinstance(m, str)), None)
    if metric is None:
        counts = Counter(k for t in trials for k, v in t.metrics.items() if _number(v) is not None)
        metric = counts.most_common(1)[0][0] if counts else None
    curves = trial_curves(ctx.backends.db, session.principal.tenant_id, job_id, metric) if metric else {}
    curve_traces = [{"name": f"trial {tid}", **thinned(points)} for tid, points in curves.items()]
    param_traces = []
    for param in sorted({p for t in trials for p in t.params}):
        xs, ys = [], []
        for t in trials:
            score = _number(t.metrics.get(metric)) if metric else None
            if param in t.params and score is not None:
                xs.append(t.params[param] if _number(t.params[param]) is not None else str(t.params[param]))
                ys.append(score)
        if xs:
            param_traces.append({"name": param, "x": xs, "y": ys})
    return render(request, "hpo.html", session=session, title=f"HPO job {job_id}", job=job, trials=trials,
                  metric=metric, curve_traces=curve_traces, param_traces=param_traces)


@router.get("/experiments")
def experiments_page(request: Request, session: Session) -> Response:
    ctx = ctx_of(request)
    everything = ctx.experiments.list(session.principal)  # experiments are few: the service has no paging
    pager = Pager.of(request, lambda limit, offset: everything[offset:offset + limit])
    return render(request, "experiments.html", session=session, title="Experiments", pager=pager)


def _experiment_ref(ref: str) -> str:
    if ref.isdigit() and int(ref) > MAX_ID:
        raise NotFoundError(f"experiment {ref!r} not found")
    return ref


@router.get("/experiments/{ref}")
def experiment_page(request: Request, session: Session, ref: ExperimentRef) -> Response:
    ctx = ctx_of(request)
    ref = _experiment_ref(ref)
    report = ctx.experiments.status(session.principal, ref)
    return render(request, "experiment.html", session=session, title=f"Experiment {report.experiment.name}",
                  report=report)


async def _experiment_write(request: Request, session: UiSession, ref: str, action: str) -> Response:
    await checked_form(request, session)
    method = getattr(ctx_of(request).experiments, action)
    return await write_and_redirect(request, f"/experiments/{quote(ref, safe='')}",
                                    lambda: method(session.principal, _experiment_ref(ref)),
                                    lambda info: f"experiment {info.name}: {info.status}")


@router.post("/experiments/{ref}/start")
async def experiment_start(request: Request, session: Session, ref: ExperimentRef) -> Response:
    """draft -> running (refused while another experiment runs on the model)."""
    return await _experiment_write(request, session, ref, "start")


@router.post("/experiments/{ref}/stop")
async def experiment_stop(request: Request, session: Session, ref: ExperimentRef) -> Response:
    """running or draft -> stopped: the router stops routing by it within its refresh time."""
    return await _experiment_write(request, session, ref, "stop")


@router.get("/monitors")
def monitors_page(request: Request, session: Session) -> Response:
    ctx = ctx_of(request)
    everything = ctx.monitoring.list_monitors(session.principal)
    pager = Pager.of(request, lambda limit, offset: everything[offset:offset + limit])
    return render(request, "monitors.html", session=session, title="Monitors", pager=pager)


@router.get("/monitors/{name}")
def monitor_page(request: Request, session: Session, name: Annotated[str, Path(min_length=1, max_length=256)]
                 ) -> Response:
    ctx = ctx_of(request)
    monitor = ctx.monitoring.get_monitor(session.principal, name)
    reports = list(reversed(ctx.monitoring.reports(session.principal, name, limit=MAX_REPORTS)))
    series: dict[str, dict[str, list]] = {}
    for rep in reports:
        for feature, stats in rep.features.items():
            value = _number(stats.get("psi"))
            if value is not None:
                s = series.setdefault(feature, {"name": feature, "x": [], "y": []})
                s["x"].append(rep.created_at.isoformat())
                s["y"].append(value)
    raised = {a for rep in reports for a in rep.alerts}
    alerts = []
    if ctx.monitoring.alerts is not None:
        alerts = [a for a in ctx.monitoring.alerts.list_alerts(session.principal, limit=500)
                  if a.id in raised or a.data.get("monitor") == name][:100]
    return render(request, "monitor.html", session=session, title=f"Monitor {name}", monitor=monitor,
                  reports=list(reversed(reports))[:25], traces=list(series.values()), alerts=alerts)


async def _alert_write(request: Request, session: UiSession, alert_id: int, action: str) -> Response:
    form = await checked_form(request, session)
    monitor = form.get("monitor", "")  # back to the monitor page it was shown on
    alerts = ctx_of(request).monitoring.alerts

    def call():
        if alerts is None:
            raise NotFoundError(f"alert {alert_id} not found")
        return getattr(alerts, action)(session.principal, alert_id)

    back = f"/monitors/{quote(monitor, safe='')}" if MONITOR_NAME.match(monitor) else "/monitors"
    return await write_and_redirect(request, back, call, lambda info: f"alert {info.id}: {info.status}")


@router.post("/alerts/{alert_id}/ack")
async def alert_ack(request: Request, session: Session, alert_id: AlertId) -> Response:
    return await _alert_write(request, session, alert_id, "ack")


@router.post("/alerts/{alert_id}/resolve")
async def alert_resolve(request: Request, session: Session, alert_id: AlertId) -> Response:
    return await _alert_write(request, session, alert_id, "resolve")


@router.get("/health")
def health_page(request: Request, session: Session) -> Response:
    from mlhub.health import check_all

    ctx = ctx_of(request)
    report = check_all(ctx.settings, ctx.backends.db)
    return render(request, "health.html", session=session, title="Health", report=[h.to_dict() for h in report])
