"""``mlhub drift ...`` and ``mlhub alerts ...``: drift monitors, checks and reports; alert rules and alerts.

Everything works against the database alone (no Ray needed): ``drift check`` computes in this process unless
``--async`` queues it as a job on the evaluation queue."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json, print_table, to_plain
from mlhub.errors import ValidationError

drift_app = typer.Typer(help="Data drift: monitors, checks against the training reference, reports with a PNG.",
                        no_args_is_help=True)
monitor_app = typer.Typer(help="Drift monitors: a model (alias), a window, thresholds, an optional schedule.",
                          no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts: rules (drift, error rate, latency p99, job failures), alerts, ack.",
                         no_args_is_help=True)
rules_app = typer.Typer(help="Alert rules: what fires, where it is delivered, what it retrains.",
                        no_args_is_help=True)
drift_app.add_typer(monitor_app, name="monitor")
alerts_app.add_typer(rules_app, name="rules")

JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
TARGET_ARG = typer.Argument(..., metavar="NAME", help="A monitor's name, or a model (name, name@alias, name/VERSION) "
                            "checked with the default thresholds.")
_DURATION = re.compile(r"^\s*(?:every\s+)?(\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(value: str, option: str) -> int:
    """``90``, ``30s``, ``15m``, ``1h``, ``1d``, ``2w`` -> seconds."""
    m = _DURATION.match(value or "")
    if m is None or int(m[1]) <= 0:
        raise ValidationError(f"{option}: expected a duration like 30m, 1h, 1d; got {value!r}")
    return int(m[1]) * _UNITS[m[2].lower()]


def _monitoring():
    from mlhub.monitoring.service import MonitoringService

    return MonitoringService.for_backends(STATE.backends)


def _alerts():
    return _monitoring().alerts


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _feature_rows(features: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, f in features.items():
        test = (f"KS D={_fmt(f.get('ks_d'))} p={_fmt(f.get('ks_p'), '.2g')}" if f.get("kind") == "numeric" else
                f"chi2 p={_fmt(f.get('chi2_p'), '.2g')} TV={_fmt(f.get('tv'))}" if f.get("kind") == "categorical"
                else "-")
        rows.append({"feature": name, "kind": f.get("kind"), "rows": f.get("n"), "psi": _fmt(f.get("psi")),
                     "test": test, "mean ref/recent": f"{_fmt(f.get('mean_ref'), '.4g')} / {_fmt(f.get('mean_cur'), '.4g')}",
                     "drifted": "DRIFT" if f.get("drifted") else "no", "why": "; ".join(f.get("reasons") or []) or "-",
                     "_style": "red" if f.get("drifted") else None})
    return rows


def _print_report(rep) -> None:
    print_table(_feature_rows(rep.features), ["feature", "kind", "rows", "psi", "test", "mean ref/recent", "drifted",
                                              "why"],
                f"drift report {rep.id}: {rep.monitor or rep.model} (version {rep.version}), {rep.sample_size} rows")
    verdict = f"DRIFTED: {', '.join(rep.drifted_features)}" if rep.drifted else "no drift"
    console.print(f"report {rep.id}: {verdict}", markup=False, highlight=False)


# --- drift ----------------------------------------------------------------------------------------------


@drift_app.command("check")
def drift_check(target: str = TARGET_ARG,
                window: str | None = typer.Option(None, "--window", help="How far back (1h, 1d, 7d); default: the "
                                                  "monitor's window, else 1d."),
                async_: bool = typer.Option(False, "--async", help="Queue a drift check job on the evaluation queue "
                                            "instead of checking here."),
                json_: bool = JSON_OPT) -> None:
    """Compare recent prediction inputs with the training reference now; store the report; fire drift alerts."""
    window_s = parse_duration(window, "--window") if window else None
    service = _monitoring()
    if async_:
        job = service.enqueue_check(STATE.principal(), target, window_s=window_s, jobs=service.alerts.jobs)
        if json_:
            print_json({"job_id": job.id, "queue": job.queue, "state": job.state})
        else:
            console.print(f"queued drift check job {job.id} on the {job.queue} queue", markup=False)
        return
    rep = service.check(STATE.principal(), target, window_s=window_s)
    if json_:
        print_json({**to_plain(rep), "drifted_features": rep.drifted_features})
        return
    _print_report(rep)
    if rep.alerts:
        console.print(f"alerts raised: {', '.join(map(str, rep.alerts))} (see `mlhub alerts list`)", markup=False)


@drift_app.command("report")
def drift_report(target: str = TARGET_ARG,
                 out: Path | None = typer.Option(None, "--out", "-o", help="PNG file to write (default: "
                                                 "drift-NAME.png here)."),
                 report_id: int | None = typer.Option(None, "--id", min=1, help="A given report (default: the "
                                                      "latest)."),
                 json_: bool = JSON_OPT) -> None:
    """Write a PNG of the reference vs recent distributions of every feature (drifted ones in red); print a table."""
    target_file = out or Path(f"drift-{re.sub(r'[^A-Za-z0-9_.-]', '-', target)}.png")
    path, rep = _monitoring().plot(STATE.principal(), target, target_file, report_id=report_id)
    if json_:
        print_json({**to_plain(rep), "drifted_features": rep.drifted_features, "png": str(path)})
        return
    _print_report(rep)
    console.print(f"plot written to {path}", markup=False, highlight=False)


@drift_app.command("history")
def drift_history(target: str = TARGET_ARG, limit: int = typer.Option(20, "--limit", min=1, max=1000),
                  json_: bool = JSON_OPT) -> None:
    """Past drift reports of a monitor or model, newest first."""
    reps = _monitoring().reports(STATE.principal(), target, limit=limit)
    if json_:
        print_json([{**to_plain(r), "drifted_features": r.drifted_features} for r in reps])
        return
    print_table([{"id": r.id, "version": r.version, "rows": r.sample_size, "drifted": "DRIFT" if r.drifted else "no",
                  "features": ", ".join(r.drifted_features) or "-", "job": r.job_id, "created_at": r.created_at,
                  "_style": "red" if r.drifted else None} for r in reps],
                ["id", "version", "rows", "drifted", "features", "job", "created_at"], f"drift reports of {target}")


@monitor_app.command("create")
def monitor_create(name: str = typer.Argument(..., help="The monitor's name."),
                   model: str = typer.Option(..., "--model", help="A registered model's name."),
                   alias: str | None = typer.Option(None, "--alias", help="Check the version holding this alias "
                                                    "(default: the latest version)."),
                   schedule: str | None = typer.Option(None, "--schedule", help="Cron expression in UTC (e.g. "
                                                       "'0 * * * *') or an interval (30m, 1h, 1d): a drift check "
                                                       "job runs on the evaluation queue."),
                   window: str = typer.Option("1d", "--window", help="Recent inputs this far back (1h, 1d, 7d)."),
                   psi: float | None = typer.Option(None, "--psi", help="PSI above this is drift (0.2)."),
                   p_value: float | None = typer.Option(None, "--p-value", help="KS / chi2 p below this is drift "
                                                        "(0.01), with at least --min-effect."),
                   min_effect: float | None = typer.Option(None, "--min-effect", help="Least KS D or total "
                                                           "variation distance a significant test needs (0.05)."),
                   min_samples: int | None = typer.Option(None, "--min-samples", help="Fewer rows are never called "
                                                          "drift (30)."),
                   json_: bool = JSON_OPT) -> None:
    """Monitor a model's inputs for drift, optionally on a schedule."""
    cron = interval = None
    if schedule is not None:
        if _DURATION.match(schedule):
            interval = parse_duration(schedule, "--schedule")
        else:
            cron = schedule
    thresholds = {k: v for k, v in {"psi": psi, "p_value": p_value, "min_effect": min_effect,
                                    "min_samples": min_samples}.items() if v is not None}
    info = _monitoring().create_monitor(STATE.principal(), name, model, alias=alias, cron=cron, interval_s=interval,
                                        window_s=parse_duration(window, "--window"), thresholds=thresholds)
    if json_:
        print_json(to_plain(info))
        return
    when = f"; {info.schedule}, next run {info.next_run_at:%Y-%m-%d %H:%M:%S} UTC" if info.schedule else \
        "; no schedule (run `mlhub drift check` yourself)"
    console.print(f"monitor {info.name}: {info.model}{'@' + info.alias if info.alias else ''}, window "
                  f"{info.window_s} s{when}", markup=False, highlight=False)


@monitor_app.command("list")
def monitor_list(json_: bool = JSON_OPT) -> None:
    """Your monitors with their schedule and last verdict."""
    rows = _monitoring().list_monitors(STATE.principal())
    if json_:
        print_json(to_plain(rows))
        return
    print_table([{"name": m.name, "model": m.model, "alias": m.alias, "window_s": m.window_s,
                  "thresholds": m.thresholds, "schedule": m.schedule, "next_run_at": m.next_run_at,
                  "last": "-" if m.last_drifted is None else ("DRIFT" if m.last_drifted else "ok"),
                  "checked_at": m.last_checked_at} for m in rows],
                ["name", "model", "alias", "window_s", "thresholds", "schedule", "next_run_at", "last", "checked_at"],
                "monitors")


@monitor_app.command("delete")
def monitor_delete(name: str = typer.Argument(..., help="The monitor's name.")) -> None:
    """Delete a monitor with its schedule, reports and drift rules."""
    _monitoring().delete_monitor(STATE.principal(), name)
    console.print(f"monitor {name} deleted", markup=False)


# --- alerts ---------------------------------------------------------------------------------------------


_THRESHOLD_KEY = {"error_rate": "threshold", "latency_p99": "threshold_ms", "job_failures": "threshold"}


@rules_app.command("add")
def rules_add(name: str = typer.Argument(..., help="The rule's name."),
              kind: str = typer.Option(..., "--kind", help="drift, error_rate, latency_p99 or job_failures."),
              monitor: str | None = typer.Option(None, "--monitor", help="drift: only this monitor's reports."),
              model: str | None = typer.Option(None, "--model", help="error_rate/latency_p99: only this endpoint."),
              threshold: float | None = typer.Option(None, "--threshold", help="error_rate: share (0.05); "
                                                     "latency_p99: milliseconds (required); job_failures: count (1)."),
              window: str | None = typer.Option(None, "--window", help="Look back this far (1h)."),
              min_requests: int | None = typer.Option(None, "--min-requests", help="Least logged requests (20)."),
              min_features: int | None = typer.Option(None, "--min-features", help="drift: least drifted features "
                                                      "(1)."),
              queue: str | None = typer.Option(None, "--queue", help="job_failures: only this queue."),
              job_name: str | None = typer.Option(None, "--job-name", help="job_failures: only jobs of this name."),
              severity: str = typer.Option("warning", "--severity", help="info, warning or critical."),
              webhook: str | None = typer.Option(None, "--webhook", help="POST alerts here (http/https; private "
                                                 "addresses need MLHUB_WEBHOOK_ALLOW_PRIVATE or "
                                                 "MLHUB_WEBHOOK_ALLOWED_HOSTS)."),
              dedup_window: str = typer.Option("1h", "--dedup-window", help="Repeats within this time bump the open "
                                               "alert instead of raising a new one."),
              retrain: Path | None = typer.Option(None, "--retrain", help="A training spec file (YAML/JSON) enqueued "
                                                  "once per alert (closed loop)."),
              json_: bool = JSON_OPT) -> None:
    """Add an alert rule."""
    condition: dict[str, Any] = {"severity": severity}
    if threshold is not None:
        if kind not in _THRESHOLD_KEY:
            raise ValidationError(f"--threshold does not apply to {kind} rules")
        condition[_THRESHOLD_KEY[kind]] = int(threshold) if kind == "job_failures" and threshold.is_integer() \
            else threshold
    extra = {"model": model, "min_requests": min_requests, "min_features": min_features, "queue": queue,
             "job_name": job_name, "window_s": parse_duration(window, "--window") if window else None}
    condition.update({k: v for k, v in extra.items() if v is not None})
    spec_doc = None
    if retrain is not None:
        from mlhub.domain.specs import load_spec_file, spec_to_document

        spec_doc = spec_to_document(load_spec_file(retrain))
    rule = _alerts().add_rule(STATE.principal(), name, kind, condition=condition, monitor=monitor,
                              webhook_url=webhook, dedup_window_s=parse_duration(dedup_window, "--dedup-window"),
                              retrain=spec_doc)
    if json_:
        print_json(to_plain(rule))
        return
    console.print(f"alert rule {rule.name} ({rule.kind}) added", markup=False)


@rules_app.command("list")
def rules_list(json_: bool = JSON_OPT) -> None:
    """Your alert rules."""
    rules = _alerts().list_rules(STATE.principal())
    if json_:
        print_json(to_plain(rules))
        return
    print_table([{"name": r.name, "kind": r.kind, "monitor": r.monitor, "condition": r.condition,
                  "webhook": r.webhook_url, "dedup_window_s": r.dedup_window_s, "retrain": r.retrain,
                  "enabled": r.enabled} for r in rules],
                ["name", "kind", "monitor", "condition", "webhook", "dedup_window_s", "retrain", "enabled"],
                "alert rules")


@rules_app.command("delete")
def rules_delete(name: str = typer.Argument(..., help="The rule's name.")) -> None:
    """Delete an alert rule and its alerts."""
    _alerts().delete_rule(STATE.principal(), name)
    console.print(f"alert rule {name} deleted", markup=False)


def _alert_rows(alerts) -> list[dict[str, Any]]:
    return [{"id": a.id, "rule": a.rule, "kind": a.kind, "severity": a.severity, "status": a.status,
             "count": a.count, "message": a.message, "last_seen_at": a.last_seen_at,
             "delivered": "yes" if a.delivered_at else (a.delivery_error or "-"),
             "_style": "red" if a.status == "open" and a.severity == "critical" else None} for a in alerts]


_ALERT_COLUMNS = ["id", "rule", "kind", "severity", "status", "count", "message", "last_seen_at", "delivered"]


@alerts_app.command("list")
def alerts_list(status: str | None = typer.Option(None, "--status", help="open, acknowledged or resolved."),
                rule: str | None = typer.Option(None, "--rule", help="Only this rule's alerts."),
                limit: int = typer.Option(100, "--limit", min=1, max=10_000), json_: bool = JSON_OPT) -> None:
    """Alerts, newest first."""
    alerts = _alerts().list_alerts(STATE.principal(), status=status, rule=rule, limit=limit)
    if json_:
        print_json(to_plain(alerts))
        return
    print_table(_alert_rows(alerts), _ALERT_COLUMNS, "alerts")


@alerts_app.command("ack")
def alerts_ack(alert_id: int = typer.Argument(..., min=1, metavar="ID")) -> None:
    """Acknowledge an alert (repeats keep bumping it, without new deliveries)."""
    a = _alerts().ack(STATE.principal(), alert_id)
    console.print(f"alert {a.id} acknowledged", markup=False)


@alerts_app.command("resolve")
def alerts_resolve(alert_id: int = typer.Argument(..., min=1, metavar="ID")) -> None:
    """Resolve an alert (the next firing raises a new one)."""
    a = _alerts().resolve(STATE.principal(), alert_id)
    console.print(f"alert {a.id} resolved", markup=False)


@alerts_app.command("check")
def alerts_check(json_: bool = JSON_OPT) -> None:
    """Evaluate the error-rate, latency p99 and job-failure rules now."""
    raised = _alerts().evaluate(STATE.principal())
    if json_:
        print_json(to_plain(raised))
        return
    if not raised:
        console.print("no rule fired", markup=False)
        return
    print_table(_alert_rows(raised), _ALERT_COLUMNS, "alerts raised")
