"""Drift monitors and drift checks: recent logged prediction inputs against a model version's training reference.

A *monitor* names a model (and optionally an alias: the version that holds it at check time, else the latest
version), a window of recent inputs, thresholds (:class:`~mlhub.domain.drift.Thresholds`) and optionally a
schedule: a recurring ``drift_check`` job on the ``evaluation`` queue, run by the orchestrator.

A *check* (``check``) works in this process, without Ray: it resolves the version, reads the newest
``drift_max_rows`` input rows that version served within the window (``prediction_logs``, 4xx/5xx answers left
out), compares them with ``reference_stats`` feature by feature (:func:`mlhub.domain.drift.detect`), stores a
``drift_reports`` row (its PNG as an artifact when an artifact store is given) and then fires the drift alert
rules. A check's target is a monitor's name or, when no monitor has that name, a model reference (``name``,
``name@alias``, ``name/VERSION``) checked with the default thresholds over the last day.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pydantic
from sqlalchemy import delete, select

from mlhub.audit import AuditLog, Principal
from mlhub.domain.drift import Thresholds, detect
from mlhub.domain.schedule import next_occurrence
from mlhub.domain.specs import (
    NAME_RE,
    DriftCheckSpec,
    ScheduleSpec,
    error_lines,
    parse_model_ref,
    spec_to_document,
)
from mlhub.errors import ConflictError, NotFoundError, ValidationError
from mlhub.store.database import Database
from mlhub.store.models import DriftReport, ModelVersion, Monitor, PredictionLog, RegisteredModel, Schedule
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.monitoring")

__all__ = ["DEFAULT_WINDOW_S", "DriftReportInfo", "MonitorInfo", "MonitoringService"]

DEFAULT_WINDOW_S = 86_400
DEFAULT_MAX_ROWS = 50_000


@dataclass(frozen=True)
class MonitorInfo:
    id: int
    name: str
    model: str
    alias: str | None
    window_s: int
    thresholds: dict[str, Any]
    schedule: str | None  # "cron 0 * * * *" or "every 3600 s"
    next_run_at: datetime | None
    enabled: bool
    created_at: datetime
    last_report_id: int | None = None
    last_drifted: bool | None = None
    last_checked_at: datetime | None = None


@dataclass(frozen=True)
class DriftReportInfo:
    id: int
    monitor: str | None
    monitor_id: int | None
    model: str
    version: int
    version_id: int
    job_id: int | None
    window_start: datetime | None
    window_end: datetime | None
    sample_size: int
    drifted: bool
    features: dict[str, dict[str, Any]]
    plot_artifact_id: int | None
    created_at: datetime
    alerts: tuple[int, ...] = field(default=())  # alerts this check raised (new ones and repeats)

    @property
    def drifted_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.get("drifted")]


@dataclass(frozen=True)
class _Target:
    monitor: Monitor | None
    model: str
    alias: str | None
    number: int | None
    window_s: int
    thresholds: Thresholds


def _schedule_text(sched: Schedule | None) -> str | None:
    if sched is None:
        return None
    return f"cron {sched.cron}" if sched.cron else f"every {sched.interval_s} s"


def job_name_for(target: str) -> str:
    """A job name (``NAME_RE``) for a drift check of ``target``."""
    return ("drift-" + re.sub(r"[^A-Za-z0-9_.\-]", "-", target))[:64]


class MonitoringService:
    """Monitors, drift checks and reports of the caller's tenant; plain dataclasses out.

    ``artifacts``: where report PNGs go (none: no PNG is stored, ``plot`` still draws one). ``alerts``: an
    :class:`~mlhub.monitoring.alerts.AlertService` whose drift rules every check fires (none: no alerts).
    """

    def __init__(self, db: Database, artifacts=None, audit: AuditLog | None = None, *, alerts=None,
                 max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.db = db
        self.artifacts = artifacts
        self.audit = audit or AuditLog(db)
        self.alerts = alerts
        self.max_rows = max_rows

    @classmethod
    def for_backends(cls, backends) -> MonitoringService:
        """The service with the deployment's artifact store, alerts (webhook policy from settings) and row cap."""
        from mlhub.jobs.service import JobService
        from mlhub.monitoring.alerts import AlertService
        from mlhub.monitoring.webhooks import WebhookPolicy

        settings = backends.settings
        audit = AuditLog(backends.db)
        jobs = JobService(backends.db, audit, queue_resources=settings.queue_resources)
        alerts = AlertService(backends.db, audit, policy=WebhookPolicy.from_settings(settings), jobs=jobs)
        return cls(backends.db, backends.artifacts, audit, alerts=alerts, max_rows=settings.drift_max_rows)

    # --- monitors -----------------------------------------------------------------------------------

    def create_monitor(self, principal: Principal, name: str, model: str, *, alias: str | None = None,
                       cron: str | None = None, interval_s: int | None = None, window_s: int = DEFAULT_WINDOW_S,
                       thresholds: dict[str, Any] | None = None) -> MonitorInfo:
        """A monitor of ``model`` (a registered model's name); with ``cron`` or ``interval_s`` a recurring drift
        check job is scheduled on the evaluation queue (deleted with the monitor)."""
        if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
            raise ValidationError(f"invalid monitor name {name!r}: 1-64 of letters, digits, '_', '.', '-'")
        if alias is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", alias):
            raise ValidationError(f"invalid alias {alias!r}")
        if not 60 <= int(window_s) <= 366 * 86_400:
            raise ValidationError("the window must be between 60 s and 366 days")
        th = Thresholds.from_dict(thresholds)
        schedule = None
        if cron is not None or interval_s is not None:
            try:
                schedule = ScheduleSpec(cron=cron, interval_s=interval_s)
            except pydantic.ValidationError as exc:
                raise ValidationError("invalid schedule: " + "; ".join(error_lines(exc))) from None
        t = principal.tenant_id
        with self.audit.operation(principal, "monitor.create", "monitor", name, details={"model": model}) as op:
            s = op.session
            model_id = s.scalar(select(RegisteredModel.id).where(RegisteredModel.tenant_id == t,
                                                                 RegisteredModel.name == model))
            if model_id is None:
                raise NotFoundError(f"model {model!r} not found")
            if s.scalar(select(Monitor.id).where(Monitor.tenant_id == t, Monitor.name == name)) is not None:
                raise ConflictError(f"monitor {name!r} already exists")
            sched = None
            if schedule is not None:
                spec = DriftCheckSpec(name=job_name_for(name), target=name)
                doc = spec_to_document(spec)
                doc.pop("schedule", None)
                sched = Schedule(tenant_id=t, name=spec.name, queue=spec.queue.value, spec=doc, cron=schedule.cron,
                                 interval_s=schedule.interval_s, enabled=True,
                                 next_run_at=next_occurrence(schedule, utcnow()))
                s.add(sched)
                s.flush()
            mon = Monitor(tenant_id=t, name=name, model_id=model_id, alias=alias,
                          schedule_id=sched.id if sched else None, thresholds=th.to_dict(), window_s=int(window_s),
                          enabled=True)
            s.add(mon)
            s.flush()
            op.target_id = str(mon.id)
            return self._monitor_info(s, mon, model, sched)

    def list_monitors(self, principal: Principal) -> list[MonitorInfo]:
        t = principal.tenant_id
        with self.db.tenant_scope(t, readonly=True) as s:
            rows = s.execute(select(Monitor, RegisteredModel.name).join(
                RegisteredModel, RegisteredModel.id == Monitor.model_id).where(Monitor.tenant_id == t)
                .order_by(Monitor.name)).all()
            return [self._monitor_info(s, m, model, s.get(Schedule, m.schedule_id) if m.schedule_id else None)
                    for m, model in rows]

    def get_monitor(self, principal: Principal, name: str) -> MonitorInfo:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            mon, model = self._monitor(s, principal, name)
            return self._monitor_info(s, mon, model, s.get(Schedule, mon.schedule_id) if mon.schedule_id else None)

    def delete_monitor(self, principal: Principal, name: str) -> None:
        """Delete a monitor, its schedule, its reports and its drift rules."""
        with self.audit.operation(principal, "monitor.delete", "monitor", name) as op:
            mon, _ = self._monitor(op.session, principal, name)
            op.target_id = str(mon.id)
            schedule_id = mon.schedule_id
            op.session.execute(delete(DriftReport).where(DriftReport.tenant_id == principal.tenant_id,
                                                         DriftReport.monitor_id == mon.id))
            op.session.delete(mon)
            op.session.flush()
            if schedule_id is not None:
                op.session.execute(delete(Schedule).where(Schedule.tenant_id == principal.tenant_id,
                                                          Schedule.id == schedule_id))

    @staticmethod
    def _monitor(s, principal: Principal, name: str) -> tuple[Monitor, str]:
        row = s.execute(select(Monitor, RegisteredModel.name).join(
            RegisteredModel, RegisteredModel.id == Monitor.model_id).where(
            Monitor.tenant_id == principal.tenant_id, Monitor.name == name)).first()
        if row is None:
            raise NotFoundError(f"monitor {name!r} not found")
        return row[0], row[1]

    @staticmethod
    def _monitor_info(s, mon: Monitor, model: str, sched: Schedule | None) -> MonitorInfo:
        last = s.scalar(select(DriftReport).where(DriftReport.tenant_id == mon.tenant_id,
                                                  DriftReport.monitor_id == mon.id)
                        .order_by(DriftReport.id.desc()).limit(1))
        return MonitorInfo(mon.id, mon.name, model, mon.alias, mon.window_s, dict(mon.thresholds or {}),
                           _schedule_text(sched), sched.next_run_at if sched else None, mon.enabled, mon.created_at,
                           last.id if last else None, last.drifted if last else None,
                           last.created_at if last else None)

    # --- checks -------------------------------------------------------------------------------------

    def _target(self, s, principal: Principal, target: str, window_s: int | None) -> _Target:
        if window_s is not None and not 60 <= int(window_s) <= 366 * 86_400:
            raise ValidationError("the window must be between 60 s and 366 days")
        row = s.execute(select(Monitor, RegisteredModel.name).join(
            RegisteredModel, RegisteredModel.id == Monitor.model_id).where(
            Monitor.tenant_id == principal.tenant_id, Monitor.name == target)).first()
        if row is not None:
            mon, model = row
            return _Target(mon, model, mon.alias, None, int(window_s or mon.window_s),
                           Thresholds.from_dict(mon.thresholds))
        try:
            name, alias, number = parse_model_ref(target)
        except ValueError:
            raise NotFoundError(f"no monitor and no model named {target!r}") from None
        return _Target(None, name, alias, number, int(window_s or DEFAULT_WINDOW_S), Thresholds())

    def check(self, principal: Principal, target: str, *, window_s: int | None = None, job_id: int | None = None,
              now: datetime | None = None) -> DriftReportInfo:
        """Run a drift check now, in this process; store and return its report (then fire the drift rules).

        With ``job_id`` (a drift check job) a retried attempt replaces the report its earlier attempt stored."""
        from mlhub.registry.rows import resolve_in

        t = principal.tenant_id
        end = now or utcnow()
        with self.db.tenant_scope(t, readonly=True) as s:
            tg = self._target(s, principal, target, window_s)
            try:
                version: ModelVersion = resolve_in(s, t, tg.model, tg.alias, tg.number)
            except NotFoundError as exc:
                if tg.monitor is None and s.scalar(select(RegisteredModel.id).where(
                        RegisteredModel.tenant_id == t, RegisteredModel.name == tg.model)) is None:
                    raise NotFoundError(f"no monitor and no model named {target!r}") from None
                raise exc
            if not version.reference_stats or not (version.input_schema or {}).get("features"):
                raise ValidationError(f"{tg.model} version {version.version} has no reference statistics or input "
                                      "schema to compare with (it was not trained by an mlhub training job)")
            names = [f["name"] for f in version.input_schema["features"]]
            start = end - timedelta(seconds=tg.window_s)
            rows = self._recent_rows(s, t, version.id, start, end)
            version_id, number, reference = version.id, version.version, version.reference_stats
        result = detect(reference, names, rows, tg.thresholds)
        features = {f.name: f.to_dict() for f in result.features}
        subject = tg.monitor.name if tg.monitor else tg.model
        plot_id = self._store_plot(principal, subject, number, features, result.drifted)
        with self.audit.operation(principal, "drift.check", "drift_report",
                                  details={"target": target, "version": number}) as op:
            if job_id is not None:
                op.session.execute(delete(DriftReport).where(DriftReport.tenant_id == t, DriftReport.job_id == job_id))
            rep = DriftReport(tenant_id=t, monitor_id=tg.monitor.id if tg.monitor else None, version_id=version_id,
                              job_id=job_id, window_start=start, window_end=end, sample_size=result.sample_size,
                              features=features, drifted=result.drifted, plot_artifact_id=plot_id)
            op.session.add(rep)
            op.session.flush()
            op.target_id = str(rep.id)
            op.details.update(drifted=result.drifted, sample_size=result.sample_size)
            info = self._report_info(rep, tg.monitor.name if tg.monitor else None, tg.model, number)
        log.info("drift check of %s (version %s): %s rows, drifted=%s %s", subject, number, result.sample_size,
                 result.drifted, result.drifted_features)
        if self.alerts is not None:
            raised = self.alerts.on_drift_report(principal, info)
            info = DriftReportInfo(**{**info.__dict__, "alerts": tuple(a.id for a in raised)})
        return info

    def _recent_rows(self, s, tenant_id: str, version_id: int, start: datetime, end: datetime) -> list[list[Any]]:
        """The newest ``max_rows`` input rows the version served in ``[start, end)`` (successful answers only)."""
        q = (select(PredictionLog.inputs).where(
            PredictionLog.tenant_id == tenant_id, PredictionLog.version_id == version_id,
            PredictionLog.created_at >= start, PredictionLog.created_at < end, PredictionLog.status_code < 400)
            .order_by(PredictionLog.id.desc()).execution_options(yield_per=1000))
        rows: list[list[Any]] = []
        for inputs in s.scalars(q):
            if isinstance(inputs, list):
                rows.extend(r for r in inputs if isinstance(r, list))
            if len(rows) >= self.max_rows:
                break
        return rows[: self.max_rows]

    def _store_plot(self, principal: Principal, subject: str, number: int, features: dict, drifted: bool) -> int | None:
        if self.artifacts is None:
            return None
        try:
            from mlhub.artifact_records import ArtifactService
            from mlhub.monitoring.plot import render_drift_png

            png = render_drift_png(_title(subject, number, drifted), features)
            rec = ArtifactService(self.db, self.artifacts, self.audit).upload(
                principal, png, media_type="image/png", name=f"drift-{subject}-v{number}.png")
            return rec.id
        except ValidationError:  # nothing to draw (no feature had a reference): the report stands without a PNG
            return None

    # --- reports ------------------------------------------------------------------------------------

    def reports(self, principal: Principal, target: str, *, limit: int = 20) -> list[DriftReportInfo]:
        """The target's reports, newest first (a monitor's, or every report of a model's versions)."""
        if not 1 <= limit <= 1000:
            raise ValidationError("limit must be between 1 and 1000")
        t = principal.tenant_id
        with self.db.tenant_scope(t, readonly=True) as s:
            q = (select(DriftReport, ModelVersion.version, RegisteredModel.name, Monitor.name)
                 .join(ModelVersion, ModelVersion.id == DriftReport.version_id)
                 .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
                 .outerjoin(Monitor, Monitor.id == DriftReport.monitor_id)
                 .where(DriftReport.tenant_id == t).order_by(DriftReport.id.desc()).limit(limit))
            tg = self._target(s, principal, target, None)
            if tg.monitor is not None:
                q = q.where(DriftReport.monitor_id == tg.monitor.id)
            else:
                q = q.where(RegisteredModel.name == tg.model)
                if tg.number is not None:
                    q = q.where(ModelVersion.version == tg.number)
            return [self._report_info(r, mon, model, number) for r, number, model, mon in s.execute(q).all()]

    def report(self, principal: Principal, target: str, report_id: int | None = None) -> DriftReportInfo:
        """The target's latest report, or its report ``report_id``."""
        if report_id is None:
            found = self.reports(principal, target, limit=1)
            if not found:
                raise NotFoundError(f"no drift report for {target!r} yet: run `mlhub drift check {target}`")
            return found[0]
        for rep in self._report_by_id(principal, report_id):
            return rep
        raise NotFoundError(f"drift report {report_id} not found")

    def _report_by_id(self, principal: Principal, report_id: int) -> list[DriftReportInfo]:
        t = principal.tenant_id
        with self.db.tenant_scope(t, readonly=True) as s:
            rows = s.execute(select(DriftReport, ModelVersion.version, RegisteredModel.name, Monitor.name)
                             .join(ModelVersion, ModelVersion.id == DriftReport.version_id)
                             .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
                             .outerjoin(Monitor, Monitor.id == DriftReport.monitor_id)
                             .where(DriftReport.tenant_id == t, DriftReport.id == report_id)).all()
            return [self._report_info(r, mon, model, number) for r, number, model, mon in rows]

    def plot(self, principal: Principal, target: str, out, *, report_id: int | None = None):
        """Write the PNG of the target's latest report (or report ``report_id``) to ``out``; return
        ``(path, report)``."""
        from mlhub.monitoring.plot import plot_drift

        rep = self.report(principal, target, report_id)
        subject = rep.monitor or rep.model
        return plot_drift(_title(subject, rep.version, rep.drifted, rep), rep.features, out), rep

    @staticmethod
    def _report_info(r: DriftReport, monitor: str | None, model: str, number: int) -> DriftReportInfo:
        return DriftReportInfo(r.id, monitor, r.monitor_id, model, number, r.version_id, r.job_id, r.window_start,
                               r.window_end, r.sample_size, r.drifted, dict(r.features or {}), r.plot_artifact_id,
                               r.created_at)

    # --- jobs ---------------------------------------------------------------------------------------

    def enqueue_check(self, principal: Principal, target: str, *, window_s: int | None = None, jobs=None):
        """Queue a drift check job on the evaluation queue (the orchestrator runs it); returns its JobInfo."""
        from mlhub.jobs.service import JobService

        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            self._target(s, principal, target, window_s)  # a bad target or window fails here, not in the job
        spec = DriftCheckSpec(name=job_name_for(target), target=target, window_s=window_s)
        return (jobs or JobService(self.db, self.audit)).submit(principal, spec)

    def run_job(self, principal: Principal, target: str, *, window_s: int | None, job_id: int) -> dict[str, Any]:
        """What a drift check job does: the check, then the tenant's error-rate, latency and job-failure rules."""
        rep = self.check(principal, target, window_s=window_s, job_id=job_id)
        print(f"drift check of {target}: {rep.model} version {rep.version}, {rep.sample_size} rows, "
              f"drifted={rep.drifted} {rep.drifted_features}", flush=True)
        raised = list(rep.alerts)
        if self.alerts is not None:
            raised += [a.id for a in self.alerts.evaluate(principal)]
        return {"kind": "drift_check", "target": target, "report_id": rep.id, "model": rep.model,
                "version": rep.version, "sample_size": rep.sample_size, "drifted": rep.drifted,
                "drifted_features": rep.drifted_features, "alerts": raised}


def _title(subject: str, number: int, drifted: bool, rep: DriftReportInfo | None = None) -> str:
    when = f", {rep.window_start:%Y-%m-%d %H:%M} to {rep.window_end:%Y-%m-%d %H:%M} UTC" \
        if rep is not None and rep.window_start and rep.window_end else ""
    n = f", {rep.sample_size} rows" if rep is not None else ""
    return f"drift of {subject} (version {number}){when}{n}: {'DRIFTED' if drifted else 'no drift'}"
