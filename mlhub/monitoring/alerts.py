"""Alert rules, their evaluation, deduplicated alerts, delivery (log and webhook) and the closed retraining loop.

Rule kinds (``alert_rules.kind``) and their ``condition`` (JSON; every key optional unless said):

- ``drift``: a drift report is drifted with at least ``min_features`` (1) drifted features; the rule's monitor
  (``monitor_id``), or any monitor when none. Evaluated after every drift check.
- ``error_rate``: share of logged predictions of ``model`` (every endpoint when unset) answered 5xx over the last
  ``window_s`` (3600) above ``threshold`` (0.05), once there are ``min_requests`` (20).
- ``latency_p99``: the 99th percentile of ``latency_ms`` of the same rows above ``threshold_ms`` (required).
- ``job_failures``: at least ``threshold`` (1) jobs ended ``failed`` or ``dead`` within ``window_s`` (3600),
  optionally only of ``queue`` or of jobs named ``job_name``. Also evaluated as soon as a job fails.

``severity`` (info | warning | critical) sits in the condition too. The metric kinds are evaluated by
``mlhub alerts check``, by every drift check job and (job failures) by the orchestrator when a job fails.

Deduplication: a firing rule looks for its alert with the same ``dedup_key`` that is still open or acknowledged
and was last seen within ``dedup_window_s``; if there is one, it bumps ``count`` and ``last_seen_at`` and nothing
is delivered again; otherwise a new alert is created (the rule row is locked meanwhile, so two evaluations at once
cannot both create one). A new alert is written to the log (``mlhub.alerts``), POSTed to the rule's webhook
(validated again at delivery; the outcome lands in ``delivered_at`` or ``delivery_error``, never raising into the
caller) and, when the rule's ``action`` holds ``{"retrain": <training spec>}``, enqueues that training job with
the idempotency key ``alert-<id>-retrain``: one job per alert, however often it repeats.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select

from mlhub.audit import AuditLog, Principal
from mlhub.domain.enums import AlertStatus, JobState
from mlhub.domain.specs import NAME_RE, TrainingSpec, parse_spec, spec_to_document
from mlhub.errors import ConflictError, MlhubError, NotFoundError, ValidationError
from mlhub.monitoring.webhooks import WebhookPolicy, deliver, validate_webhook_url
from mlhub.store.database import Database
from mlhub.store.models import Alert, AlertRule, Job, Monitor, PredictionLog
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.alerts")

__all__ = ["RULE_KINDS", "AlertInfo", "AlertService", "RuleInfo", "configure_failure_alerts", "job_failures_hook"]

RULE_KINDS = ("drift", "error_rate", "latency_p99", "job_failures")
METRIC_KINDS = ("error_rate", "latency_p99", "job_failures")
SEVERITIES = ("info", "warning", "critical")
_CONDITION_KEYS = {
    "drift": {"min_features"},
    "error_rate": {"model", "threshold", "window_s", "min_requests"},
    "latency_p99": {"model", "threshold_ms", "window_s", "min_requests"},
    "job_failures": {"threshold", "window_s", "queue", "job_name"},
}
MAX_LATENCY_ROWS = 100_000
LIVE = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value)


@dataclass(frozen=True)
class RuleInfo:
    id: int
    name: str
    kind: str
    monitor: str | None
    condition: dict[str, Any]
    webhook_url: str | None
    dedup_window_s: int
    retrain: str | None  # the name of the training job an alert enqueues
    enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class AlertInfo:
    id: int
    rule: str
    kind: str
    dedup_key: str
    severity: str
    status: str
    message: str
    data: dict[str, Any]
    count: int
    created_at: datetime
    last_seen_at: datetime
    delivered_at: datetime | None
    delivery_error: str | None
    new: bool = False  # created by this evaluation (not a repeat)


@dataclass(frozen=True)
class _Firing:
    rule_id: int
    dedup_key: str
    message: str
    data: dict[str, Any]


def _rule_info(rule: AlertRule, monitor: str | None) -> RuleInfo:
    retrain = (rule.action or {}).get("retrain")
    return RuleInfo(rule.id, rule.name, rule.kind, monitor, dict(rule.condition or {}), rule.webhook_url,
                    rule.dedup_window_s, retrain.get("name") if isinstance(retrain, dict) else None, rule.enabled,
                    rule.created_at)


def _alert_info(a: Alert, rule: AlertRule, new: bool = False) -> AlertInfo:
    return AlertInfo(a.id, rule.name, rule.kind, a.dedup_key, a.severity, a.status, a.message, dict(a.data or {}),
                     a.count, a.created_at, a.last_seen_at, a.delivered_at, a.delivery_error, new)


def _positive(cond: dict[str, Any], key: str, *, integer: bool = False, upper: float | None = None) -> None:
    if key not in cond:
        return
    v = cond[key]
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if ok and integer:
        ok = float(v).is_integer()
    if not ok or (upper is not None and v > upper):
        raise ValidationError(f"condition {key} must be a positive {'integer' if integer else 'number'}"
                              + (f" at most {upper:g}" if upper is not None else "") + f", got {v!r}")
    cond[key] = int(v) if integer else float(v)


def validate_condition(kind: str, condition: Mapping[str, Any] | None) -> dict[str, Any]:
    """A rule's condition checked for its kind: unknown keys, bad numbers and missing thresholds are refused."""
    if kind not in RULE_KINDS:
        raise ValidationError(f"unknown alert rule kind {kind!r}: one of {', '.join(RULE_KINDS)}")
    cond = dict(condition or {})
    unknown = set(cond) - _CONDITION_KEYS[kind] - {"severity"}
    if unknown:
        raise ValidationError(f"unknown condition key(s) for {kind} rules: {sorted(unknown)}; allowed: "
                              f"{sorted(_CONDITION_KEYS[kind] | {'severity'})}")
    cond.setdefault("severity", "warning")
    if cond["severity"] not in SEVERITIES:
        raise ValidationError(f"severity must be one of {', '.join(SEVERITIES)}")
    _positive(cond, "window_s", integer=True, upper=366 * 86_400)
    _positive(cond, "min_requests", integer=True)
    _positive(cond, "min_features", integer=True)
    _positive(cond, "threshold_ms")
    if kind == "error_rate":
        _positive(cond, "threshold", upper=1)
    if kind == "job_failures":
        _positive(cond, "threshold", integer=True)
    if kind == "latency_p99" and "threshold_ms" not in cond:
        raise ValidationError("latency_p99 rules need threshold_ms")
    for key in ("model", "queue", "job_name"):
        if key in cond and (not isinstance(cond[key], str) or not __import__("re").fullmatch(NAME_RE, cond[key])):
            raise ValidationError(f"condition {key} must be a name (letters, digits, '_', '.', '-'), got {cond[key]!r}")
    return cond


class AlertService:
    """Alert rules and alerts of a tenant, as the caller's principal. Plain dataclasses out.

    ``policy`` governs webhooks (:class:`~mlhub.monitoring.webhooks.WebhookPolicy`); ``background`` delivers in a
    daemon thread (the orchestrator's path, which must not wait on a slow webhook); ``jobs`` submits retraining.
    """

    def __init__(self, db: Database, audit: AuditLog | None = None, *, policy: WebhookPolicy | None = None,
                 jobs=None, background: bool = False) -> None:
        self.db = db
        self.audit = audit or AuditLog(db)
        self.policy = policy or WebhookPolicy()
        self._jobs = jobs
        self.background = background

    @property
    def jobs(self):
        if self._jobs is None:
            from mlhub.jobs.service import JobService

            self._jobs = JobService(self.db, self.audit)
        return self._jobs

    # --- rules --------------------------------------------------------------------------------------

    def add_rule(self, principal: Principal, name: str, kind: str, *, condition: Mapping[str, Any] | None = None,
                 monitor: str | None = None, webhook_url: str | None = None, dedup_window_s: int = 3600,
                 retrain: Mapping[str, Any] | None = None) -> RuleInfo:
        """Create a rule. ``retrain`` is a training spec document enqueued once per alert (closed loop)."""
        import re

        if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
            raise ValidationError(f"invalid rule name {name!r}: 1-64 of letters, digits, '_', '.', '-'")
        cond = validate_condition(kind, condition)
        if monitor is not None and kind != "drift":
            raise ValidationError("only drift rules watch a monitor")
        if not 1 <= int(dedup_window_s) <= 366 * 86_400:
            raise ValidationError("dedup window must be between 1 s and 366 days")
        if webhook_url:
            validate_webhook_url(webhook_url, self.policy)  # WebhookRefused (a ValidationError) when not allowed
        action = None
        if retrain is not None:
            spec = parse_spec(dict(retrain))
            if not isinstance(spec, TrainingSpec):
                raise ValidationError(f"a retrain action holds a training spec, got a {spec.kind} spec")
            if spec.schedule is not None:
                raise ValidationError("a retrain action cannot carry a schedule")
            from mlhub.jobs.service import validate_for_submit

            validate_for_submit(spec)
            action = {"retrain": spec_to_document(spec)}
        with self.audit.operation(principal, "alert_rule.create", "alert_rule", name,
                                  details={"kind": kind}) as op:
            s = op.session
            if s.scalar(select(AlertRule.id).where(AlertRule.tenant_id == principal.tenant_id, AlertRule.name == name)):
                raise ConflictError(f"alert rule {name!r} already exists")
            monitor_id = None
            if monitor is not None:
                monitor_id = s.scalar(select(Monitor.id).where(Monitor.tenant_id == principal.tenant_id,
                                                               Monitor.name == monitor))
                if monitor_id is None:
                    raise NotFoundError(f"monitor {monitor!r} not found")
            rule = AlertRule(tenant_id=principal.tenant_id, name=name, kind=kind, monitor_id=monitor_id,
                             condition=cond, webhook_url=webhook_url or None, dedup_window_s=int(dedup_window_s),
                             action=action, enabled=True)
            s.add(rule)
            s.flush()
            op.target_id = str(rule.id)
            return _rule_info(rule, monitor)

    def list_rules(self, principal: Principal) -> list[RuleInfo]:
        t = principal.tenant_id
        with self.db.tenant_scope(t, readonly=True) as s:
            names = dict(s.execute(select(Monitor.id, Monitor.name).where(Monitor.tenant_id == t)).all())
            return [_rule_info(r, names.get(r.monitor_id)) for r in s.scalars(
                select(AlertRule).where(AlertRule.tenant_id == t).order_by(AlertRule.name))]

    def delete_rule(self, principal: Principal, name: str) -> None:
        """Delete a rule and its alerts."""
        with self.audit.operation(principal, "alert_rule.delete", "alert_rule", name) as op:
            rule = self._rule(op.session, principal, name)
            op.target_id = str(rule.id)
            op.session.execute(delete(Alert).where(Alert.tenant_id == principal.tenant_id, Alert.rule_id == rule.id))
            op.session.delete(rule)

    @staticmethod
    def _rule(s, principal: Principal, name: str) -> AlertRule:
        rule = s.scalar(select(AlertRule).where(AlertRule.tenant_id == principal.tenant_id, AlertRule.name == name))
        if rule is None:
            raise NotFoundError(f"alert rule {name!r} not found")
        return rule

    # --- alerts -------------------------------------------------------------------------------------

    def list_alerts(self, principal: Principal, *, status: str | None = None, rule: str | None = None,
                    limit: int = 100) -> list[AlertInfo]:
        """Newest first."""
        if status is not None and status not in {s.value for s in AlertStatus}:
            raise ValidationError(f"unknown alert status {status!r}: one of {', '.join(s.value for s in AlertStatus)}")
        if not 1 <= limit <= 10_000:
            raise ValidationError("limit must be between 1 and 10000")
        t = principal.tenant_id
        q = (select(Alert, AlertRule).join(AlertRule, AlertRule.id == Alert.rule_id)
             .where(Alert.tenant_id == t).order_by(Alert.id.desc()).limit(limit))
        if status:
            q = q.where(Alert.status == status)
        if rule:
            q = q.where(AlertRule.name == rule)
        with self.db.tenant_scope(t, readonly=True) as s:
            return [_alert_info(a, r) for a, r in s.execute(q).all()]

    def ack(self, principal: Principal, alert_id: int) -> AlertInfo:
        return self._set_status(principal, alert_id, AlertStatus.ACKNOWLEDGED)

    def resolve(self, principal: Principal, alert_id: int) -> AlertInfo:
        return self._set_status(principal, alert_id, AlertStatus.RESOLVED)

    def _set_status(self, principal: Principal, alert_id: int, status: AlertStatus) -> AlertInfo:
        action = "alert.ack" if status is AlertStatus.ACKNOWLEDGED else "alert.resolve"
        with self.audit.operation(principal, action, "alert", str(alert_id)) as op:
            row = op.session.execute(select(Alert, AlertRule).join(AlertRule, AlertRule.id == Alert.rule_id).where(
                Alert.tenant_id == principal.tenant_id, Alert.id == alert_id)).first()
            if row is None:
                raise NotFoundError(f"alert {alert_id} not found")
            alert, rule = row
            if alert.status == AlertStatus.RESOLVED.value:
                raise ConflictError(f"alert {alert_id} is already resolved")
            alert.status = status.value
            op.session.flush()
            return _alert_info(alert, rule)

    # --- evaluation ---------------------------------------------------------------------------------

    def evaluate(self, principal: Principal, *, kinds: Iterable[str] = METRIC_KINDS,
                 now: datetime | None = None) -> list[AlertInfo]:
        """Evaluate the tenant's error-rate, latency and job-failure rules now; return the alerts they raised
        (new ones and repeats)."""
        kinds = [k for k in kinds if k in METRIC_KINDS]
        now = now or utcnow()
        t = principal.tenant_id
        firings: list[_Firing] = []
        with self.db.tenant_scope(t, readonly=True) as s:
            rules = s.scalars(select(AlertRule).where(AlertRule.tenant_id == t, AlertRule.enabled.is_(True),
                                                      AlertRule.kind.in_(kinds)).order_by(AlertRule.id)).all()
            for rule in rules:
                firing = _observe(s, t, rule, now)
                if firing is not None:
                    firings.append(firing)
        return [a for f in firings if (a := self._fire(principal, f, now)) is not None]

    def on_drift_report(self, principal: Principal, report) -> list[AlertInfo]:
        """Fire the drift rules a stored report meets (``report``: a :class:`~mlhub.monitoring.service.DriftReportInfo`)."""
        if not report.drifted:
            return []
        t = principal.tenant_id
        drifted = [n for n, f in report.features.items() if f.get("drifted")]
        with self.db.tenant_scope(t, readonly=True) as s:
            rules = s.scalars(select(AlertRule).where(
                AlertRule.tenant_id == t, AlertRule.enabled.is_(True), AlertRule.kind == "drift",
                (AlertRule.monitor_id.is_(None)) | (AlertRule.monitor_id == report.monitor_id))
                .order_by(AlertRule.id)).all()
            firings = []
            for rule in rules:
                if len(drifted) < int((rule.condition or {}).get("min_features", 1)):
                    continue
                subject = report.monitor or f"{report.model}/{report.version}"
                worst = {n: report.features[n].get("psi") for n in drifted}
                firings.append(_Firing(rule.id, f"drift:{subject}", (
                    f"drift on {subject} ({report.model} version {report.version}): {len(drifted)} of "
                    f"{len(report.features)} features drifted ({', '.join(drifted[:10])}) in {report.sample_size} rows"),
                    {"report_id": report.id, "monitor": report.monitor, "model": report.model,
                     "version": report.version, "drifted_features": drifted, "psi": worst,
                     "sample_size": report.sample_size}))
        return [a for f in firings if (a := self._fire(principal, f, utcnow())) is not None]

    # --- firing, delivery, retraining ---------------------------------------------------------------

    def _fire(self, principal: Principal, firing: _Firing, now: datetime) -> AlertInfo | None:
        t = principal.tenant_id
        with self.db.tenant_scope(t) as s:
            rule = s.scalar(select(AlertRule).where(AlertRule.tenant_id == t, AlertRule.id == firing.rule_id)
                            .with_for_update())  # one evaluation at a time per rule: dedup cannot race
            if rule is None or not rule.enabled:
                return None
            since = now - timedelta(seconds=rule.dedup_window_s)
            alert = s.scalar(select(Alert).where(
                Alert.tenant_id == t, Alert.rule_id == rule.id, Alert.dedup_key == firing.dedup_key,
                Alert.status.in_(LIVE), Alert.last_seen_at >= since).order_by(Alert.id.desc()).limit(1))
            new = alert is None
            if new:
                alert = Alert(tenant_id=t, rule_id=rule.id, dedup_key=firing.dedup_key[:256],
                              severity=(rule.condition or {}).get("severity", "warning"), status="open",
                              message=firing.message, data=firing.data, count=1, last_seen_at=now)
                s.add(alert)
                s.flush()
                AuditLog.add(s, principal, "alert.fire", "alert", str(alert.id),
                             details={"rule": rule.name, "dedup_key": alert.dedup_key})
            else:
                alert.count += 1
                alert.last_seen_at = now
                alert.message = firing.message
                alert.data = {**(alert.data or {}), **firing.data}
            s.flush()
            info = _alert_info(alert, rule, new)
            webhook, action = rule.webhook_url, dict(rule.action or {})
        if new:
            log.warning("ALERT %s [%s] rule %s: %s", info.id, info.severity, info.rule, info.message)
        if new or (webhook and info.delivered_at is None):  # a repeat retries a delivery that failed before
            work = (principal, info, webhook, action if new else {})
            if self.background:
                threading.Thread(target=self._after_fire, args=work, daemon=True, name="mlhub-alert").start()
            else:
                info = self._after_fire(*work)
        return info

    def _after_fire(self, principal: Principal, info: AlertInfo, webhook: str | None,
                    action: dict[str, Any]) -> AlertInfo:
        """Deliver and retrain after the alert committed; record the outcomes. Never raises."""
        updates: dict[str, Any] = {}
        try:
            if webhook:
                payload = {"alert_id": info.id, "rule": info.rule, "kind": info.kind, "severity": info.severity,
                           "status": info.status, "message": info.message, "data": info.data, "count": info.count,
                           "tenant": principal.tenant_id, "created_at": info.created_at}
                result = deliver(webhook, payload, self.policy)
                updates.update(delivered_at=utcnow() if result.ok else None,
                               delivery_error=None if result.ok else result.error)
            if action.get("retrain"):
                updates["data"] = {**info.data, **self._retrain(principal, info, action["retrain"])}
            if updates:
                with self.db.tenant_scope(principal.tenant_id) as s:
                    alert = s.get(Alert, info.id)
                    if alert is not None:
                        for k, v in updates.items():
                            setattr(alert, k, v)
                return AlertInfo(**{**info.__dict__, **updates})
        except Exception as exc:  # noqa: BLE001 - alert delivery must never break the caller (or a job)
            log.warning("alert %s: delivery bookkeeping failed: %s", info.id, exc)
        return info

    def _retrain(self, principal: Principal, info: AlertInfo, spec_doc: dict[str, Any]) -> dict[str, Any]:
        try:
            job = self.jobs.submit(principal, parse_spec(spec_doc), idempotency_key=f"alert-{info.id}-retrain")
            log.warning("alert %s enqueued retraining job %s (%s)", info.id, job.id, spec_doc.get("name"))
            return {"retrain_job_id": job.id}
        except MlhubError as exc:
            log.warning("alert %s could not enqueue its retraining job: %s", info.id, exc.message)
            return {"retrain_error": exc.message}


def _observe(s, tenant_id: str, rule: AlertRule, now: datetime) -> _Firing | None:
    """Whether a metric rule fires now, and with what message and data."""
    cond = dict(rule.condition or {})
    window = int(cond.get("window_s", 3600))
    since = now - timedelta(seconds=window)
    if rule.kind == "job_failures":
        q = select(Job.id, Job.name, Job.error).where(
            Job.tenant_id == tenant_id, Job.state.in_([JobState.FAILED.value, JobState.DEAD.value]),
            Job.finished_at >= since)
        if cond.get("queue"):
            q = q.where(Job.queue == cond["queue"])
        if cond.get("job_name"):
            q = q.where(Job.name == cond["job_name"])
        failed = s.execute(q.order_by(Job.id.desc()).limit(1000)).all()
        if len(failed) < int(cond.get("threshold", 1)):
            return None
        scope = f"{cond.get('queue') or '*'}:{cond.get('job_name') or '*'}"
        return _Firing(rule.id, f"job_failures:{scope}", (
            f"{len(failed)} job(s) failed in the last {window} s (latest: job {failed[0].id} {failed[0].name!r}: "
            f"{(failed[0].error or 'no error recorded')[:300]})"),
            {"failed": len(failed), "job_ids": [r.id for r in failed[:20]], "window_s": window})
    model = cond.get("model")
    base = [PredictionLog.tenant_id == tenant_id, PredictionLog.created_at >= since]
    if model:
        base.append(PredictionLog.endpoint == model)
    min_requests = int(cond.get("min_requests", 20))
    scope = f"{rule.kind}:{model or '*'}"
    if rule.kind == "error_rate":
        n, errors = s.execute(select(func.count(), func.coalesce(func.sum(
            case((PredictionLog.status_code >= 500, 1), else_=0)), 0)).where(*base)).one()
        threshold = float(cond.get("threshold", 0.05))
        if n < min_requests or errors / n <= threshold:
            return None
        rate = errors / n
        return _Firing(rule.id, scope, f"error rate of {model or 'all endpoints'} is {rate:.1%} ({errors} of {n} "
                       f"logged requests in {window} s) > {threshold:.1%}",
                       {"model": model, "error_rate": rate, "errors": int(errors), "requests": int(n),
                        "window_s": window})
    latencies = sorted(float(v) for v in s.scalars(
        select(PredictionLog.latency_ms).where(*base, PredictionLog.latency_ms.is_not(None))
        .order_by(PredictionLog.id.desc()).limit(MAX_LATENCY_ROWS)))
    threshold_ms = float(cond["threshold_ms"])
    if len(latencies) < min_requests:
        return None
    p99 = latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)]  # nearest rank
    if p99 <= threshold_ms:
        return None
    return _Firing(rule.id, scope, f"latency p99 of {model or 'all endpoints'} is {p99:.1f} ms over "
                   f"{len(latencies)} logged requests in {window} s > {threshold_ms:g} ms",
                   {"model": model, "p99_ms": p99, "requests": len(latencies), "window_s": window})


# --- the orchestrator's hook -------------------------------------------------------------------------------

_FAILURE_POLICY: WebhookPolicy | None = None


def configure_failure_alerts(settings) -> None:
    """Give the process's job-failure alerts the deployment's webhook settings (``MLHUB_WEBHOOK_*``); without it
    they are delivered under the strict default policy (public addresses only)."""
    global _FAILURE_POLICY
    _FAILURE_POLICY = WebhookPolicy.from_settings(settings)


def job_failures_hook(db: Database, tenant_ids: Iterable[str]) -> int:
    """Evaluate the job-failure rules of tenants whose jobs just failed (called by :mod:`mlhub.jobs.completion`
    after the outcomes committed); webhooks are called in a background thread. Returns the alerts raised."""
    raised = 0
    for tenant_id in dict.fromkeys(tenant_ids):
        principal = Principal(tenant_id=tenant_id, actor="system:alerts", source="orchestrator")
        service = AlertService(db, policy=_FAILURE_POLICY, background=True)
        raised += len(service.evaluate(principal, kinds=("job_failures",)))
    return raised
