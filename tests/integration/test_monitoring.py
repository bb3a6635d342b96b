"""Drift monitoring and alerts on SQLite and on PostgreSQL (row-level security on), no Ray: a model version with
training reference statistics, logged predictions (shifted), a stored drifted report with its PNG, an alert raised
once and repeated (dedup), delivered to a real local HTTP server (allowed by the explicit setting), a loopback
webhook refused without it, the closed retraining loop enqueueing one job, metric rules, a drift check job run by
the job runner, and the CLI as a user drives it."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from sqlalchemy import insert, select, update

from mlhub.domain.specs import DiagnosticSpec
from mlhub.errors import ConflictError, NotFoundError, ValidationError, WebhookRefused
from mlhub.jobs.service import JobService
from mlhub.monitoring.alerts import AlertService, job_failures_hook
from mlhub.monitoring.service import MonitoringService
from mlhub.monitoring.webhooks import WebhookPolicy
from mlhub.store.models import Alert, Job, PredictionLog, Schedule
from mlhub.store.types import utcnow
from mlhub.training.schema import input_schema, reference_stats
from tests.integration.test_registry import Setup
from tests.integration.test_tracking_cli import run_cli
from tests.unit.test_tracking import PNG_MAGIC

FEATURES = ["age", "income", "segment"]
ALLOW_LOCAL = WebhookPolicy(allow_private=True, retries=1, timeout_s=5.0, backoff_s=0.05)
RETRAIN = {"kind": "training", "name": "retrain-credit", "framework": "baseline", "model": "logistic",
           "register_as": "credit", "dataset": {"source": "synthetic", "task": "classification", "n_features": 3}}


class Hook:
    """A real HTTP server on 127.0.0.1 recording the JSON bodies POSTed to it (answers ``status``)."""

    def __init__(self, status: int = 200) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "host": self.headers.get("Host"), "body": json.loads(body)})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def training_rows(rng, n=3_000):
    return np.column_stack([rng.normal(40, 10, n), rng.lognormal(10, 0.5, n), rng.integers(0, 4, n)])


class World(Setup):
    """A tenant with model ``credit`` (version 1 trained on ``training_rows``, alias champion) and services."""

    def __init__(self, db, tmp_path, policy: WebhookPolicy = ALLOW_LOCAL) -> None:
        super().__init__(db, tmp_path)
        rng = np.random.default_rng(0)
        x = training_rows(rng)
        self.version("credit", {"accuracy": 0.9}, input_schema=input_schema(FEATURES, x),
                     reference_stats=reference_stats(FEATURES, x))
        self.models.promote("credit", 1, to="champion")
        self.version_id = self.models.get("credit/1").id
        self.jobs = JobService(db)
        self.alerts = AlertService(db, policy=policy, jobs=self.jobs)
        self.monitoring = MonitoringService(db, self.store, alerts=self.alerts)

    def log(self, rows, *, minutes_ago: float = 5, status: int = 200, latency_ms: float = 3.0, per_request=25,
            endpoint="credit") -> None:
        now = utcnow()
        batch = [{"tenant_id": self.me.tenant_id, "version_id": self.version_id, "endpoint": endpoint,
                  "inputs": [list(map(float, r)) for r in rows[i:i + per_request]], "outputs": [0] * per_request,
                  "latency_ms": latency_ms, "status_code": status, "created_at": now - timedelta(minutes=minutes_ago)}
                 for i in range(0, len(rows), per_request)]
        with self.db.tenant_scope(self.me.tenant_id) as s:
            s.execute(insert(PredictionLog), batch)


@pytest.fixture
def world(db, tmp_path):
    return World(db, tmp_path)


def shifted_rows(rng, n=600):
    return np.column_stack([rng.normal(55, 10, n), rng.lognormal(10, 0.5, n), rng.choice([0, 1, 2, 3, 9], n)])


def test_same_distribution_is_no_drift_and_old_or_failed_rows_are_left_out(world):
    rng = np.random.default_rng(1)
    world.log(training_rows(rng, 600))
    world.log(shifted_rows(rng, 600), minutes_ago=3 * 24 * 60)  # outside the default one-day window
    world.log(shifted_rows(rng, 600), status=500)                # failed requests are not model inputs
    world.monitoring.create_monitor(world.me, "credit-mon", "credit", alias="champion")
    rep = world.monitoring.check(world.me, "credit-mon")
    assert rep.sample_size == 600 and not rep.drifted and rep.drifted_features == []
    assert set(rep.features) == set(FEATURES) and rep.features["segment"]["kind"] == "categorical"
    assert rep.monitor == "credit-mon" and (rep.model, rep.version) == ("credit", 1)
    # the 3-day window takes the old shifted rows in
    assert world.monitoring.check(world.me, "credit-mon", window_s=4 * 86_400).drifted


def test_shifted_inputs_drift_alert_once_with_dedup_deliver_and_retrain_once(world, hook, tmp_path):
    rng = np.random.default_rng(2)
    world.log(shifted_rows(rng))
    world.monitoring.create_monitor(world.me, "credit-mon", "credit", alias="champion", thresholds={"psi": 0.25})
    rule = world.alerts.add_rule(world.me, "credit-drift", "drift", monitor="credit-mon", webhook_url=hook.url,
                                 condition={"severity": "critical"}, retrain=RETRAIN)
    assert (rule.monitor, rule.retrain, rule.condition["severity"]) == ("credit-mon", "retrain-credit", "critical")

    first = world.monitoring.check(world.me, "credit-mon")
    assert first.drifted and first.drifted_features == ["age", "segment"] and first.sample_size == 600
    assert first.features["age"]["psi"] > 0.25 and "other" in first.features["segment"]["bins"]["values"]
    assert first.plot_artifact_id is not None
    png = world.store.read_bytes(world.me.tenant_id, _sha(world, first.plot_artifact_id))
    assert png[:8] == PNG_MAGIC
    [alert_id] = first.alerts

    second = world.monitoring.check(world.me, "credit-mon")
    assert second.drifted and second.alerts == (alert_id,)  # the same alert, bumped
    [alert] = world.alerts.list_alerts(world.me)
    assert (alert.id, alert.count, alert.status, alert.severity) == (alert_id, 2, "open", "critical")
    assert alert.delivered_at is not None and alert.delivery_error is None
    assert alert.data["drifted_features"] == ["age", "segment"] and alert.data["report_id"] == second.id
    # delivered once, to the real server, with the alert as JSON
    assert len(hook.received) == 1
    body = hook.received[0]["body"]
    assert (body["alert_id"], body["rule"], body["kind"], body["severity"]) == (alert_id, "credit-drift", "drift",
                                                                                  "critical")
    assert hook.received[0]["path"] == "/alerts" and "drift on credit-mon" in body["message"]
    # the closed loop: one training job for the alert, however often it repeats
    retrains = world.jobs.list(world.me, name="retrain-credit")
    assert len(retrains) == 1 and retrains[0].queue == "training" and alert.data["retrain_job_id"] == retrains[0].id

    # acknowledged: still deduplicated; resolved: the next firing is a new alert (and a new retraining job)
    assert world.alerts.ack(world.me, alert_id).status == "acknowledged"
    assert world.monitoring.check(world.me, "credit-mon").alerts == (alert_id,)
    world.alerts.resolve(world.me, alert_id)
    with pytest.raises(ConflictError):
        world.alerts.ack(world.me, alert_id)
    third = world.monitoring.check(world.me, "credit-mon")
    assert third.alerts and third.alerts[0] != alert_id
    assert len(hook.received) == 2 and len(world.jobs.list(world.me, name="retrain-credit")) == 2

    path, rep = world.monitoring.plot(world.me, "credit-mon", tmp_path / "drift.png")
    assert rep.id == third.id and path.read_bytes()[:8] == PNG_MAGIC
    history = world.monitoring.reports(world.me, "credit-mon")
    assert len(history) == 4 and history[0].id == third.id and history[-1].id == first.id


def _sha(world, artifact_id: int) -> str:
    from mlhub.artifact_records import ArtifactService

    return ArtifactService(world.db, world.store).get(world.me, artifact_id).sha256


def test_dedup_window_expiry_raises_a_new_alert(world):
    rng = np.random.default_rng(3)
    world.log(shifted_rows(rng))
    world.alerts.add_rule(world.me, "any-drift", "drift", dedup_window_s=60)
    a = world.monitoring.check(world.me, "credit@champion").alerts  # a model reference, no monitor
    with world.db.tenant_scope(world.me.tenant_id) as s:  # its last sighting is now older than the window
        s.execute(update(Alert).where(Alert.id == a[0]).values(last_seen_at=utcnow() - timedelta(minutes=5)))
    b = world.monitoring.check(world.me, "credit@champion").alerts
    assert a != b and len(world.alerts.list_alerts(world.me, status="open")) == 2


def test_loopback_webhooks_are_refused_unless_allowed_and_delivery_failure_is_recorded(db, tmp_path, hook):
    strict = World(db, tmp_path, policy=WebhookPolicy())
    with pytest.raises(WebhookRefused, match="127.0.0.1"):
        strict.alerts.add_rule(strict.me, "local", "drift", webhook_url=hook.url)
    for bad in ("file:///etc/passwd", "ftp://example.com/x", "http://169.254.169.254/latest"):
        with pytest.raises(WebhookRefused):
            strict.alerts.add_rule(strict.me, "bad", "drift", webhook_url=bad)
    assert strict.alerts.list_rules(strict.me) == []
    # a rule stored while allowed, fired after the allowance is gone: refused at delivery, recorded, no raise
    AlertService(db, policy=ALLOW_LOCAL).add_rule(strict.me, "local", "drift", webhook_url=hook.url)
    strict.log(shifted_rows(np.random.default_rng(4)))
    rep = strict.monitoring.check(strict.me, "credit")
    [alert] = strict.alerts.list_alerts(strict.me)
    assert rep.alerts == (alert.id,) and alert.delivered_at is None and "refused" in alert.delivery_error
    assert hook.received == []
    # a server that answers 500 is retried, then the failure is recorded
    failing = Hook(status=500)
    try:
        AlertService(db, policy=ALLOW_LOCAL).add_rule(strict.me, "failing", "drift", webhook_url=failing.url)
        MonitoringService(db, alerts=AlertService(db, policy=ALLOW_LOCAL)).check(strict.me, "credit")
        failed = next(a for a in strict.alerts.list_alerts(strict.me) if a.rule == "failing")
        assert len(failing.received) == 2 and "HTTP 500" in failed.delivery_error and failed.delivered_at is None
    finally:
        failing.close()


def test_metric_rules_error_rate_latency_and_job_failures(world, hook):
    ok, slow = np.zeros((40, 3)), np.zeros((10, 3))
    world.log(ok, per_request=1, latency_ms=5.0)
    world.log(slow, per_request=1, latency_ms=900.0, status=503)
    world.log(ok, per_request=1, latency_ms=5.0, endpoint="other")
    world.alerts.add_rule(world.me, "errors", "error_rate", condition={"model": "credit", "threshold": 0.1})
    world.alerts.add_rule(world.me, "errors-other", "error_rate", condition={"model": "other", "threshold": 0.1})
    world.alerts.add_rule(world.me, "p99", "latency_p99", condition={"threshold_ms": 500}, webhook_url=hook.url)
    world.alerts.add_rule(world.me, "p99-lax", "latency_p99", condition={"threshold_ms": 5000})
    world.alerts.add_rule(world.me, "failures", "job_failures", condition={"threshold": 2, "queue": "evaluation"})
    raised = {a.rule: a for a in world.alerts.evaluate(world.me)}
    assert set(raised) == {"errors", "p99"}
    assert raised["errors"].data["error_rate"] == pytest.approx(10 / 50) and raised["p99"].data["p99_ms"] == 900.0
    assert len(hook.received) == 1 and hook.received[0]["body"]["rule"] == "p99"

    # two failed evaluation jobs: the job-failure rule fires through the orchestrator's hook
    ids = [world.jobs.submit(world.me, DiagnosticSpec(name=f"boom-{i}")).id for i in range(2)]
    with world.db.tenant_scope(world.me.tenant_id) as s:
        s.execute(update(Job).where(Job.id.in_(ids)).values(state="failed", finished_at=utcnow(), error="boom"))
    assert job_failures_hook(world.db, [world.me.tenant_id, world.me.tenant_id]) == 1
    [failures] = world.alerts.list_alerts(world.me, rule="failures")
    assert failures.data["failed"] == 2 and "boom" in failures.message
    again = {a.rule: a for a in world.alerts.evaluate(world.me)}
    assert again["failures"].id == failures.id and again["failures"].count == 2 and len(hook.received) == 1
    # another tenant sees none of it
    assert AlertService(world.db).list_alerts(world.other) == []
    assert AlertService(world.db).evaluate(world.other) == []


def test_bad_input_is_refused_with_typed_errors(world):
    m, a = world.monitoring, world.alerts
    with pytest.raises(NotFoundError):
        m.create_monitor(world.me, "x", "no-such-model")
    with pytest.raises(ValidationError, match="cron"):
        m.create_monitor(world.me, "x", "credit", cron="not a cron")
    with pytest.raises(ValidationError, match="psi"):
        m.create_monitor(world.me, "x", "credit", thresholds={"psi": -1})
    m.create_monitor(world.me, "x", "credit")
    with pytest.raises(ConflictError):
        m.create_monitor(world.me, "x", "credit")
    with pytest.raises(NotFoundError, match="no monitor and no model"):
        m.check(world.me, "nothing-here")
    with pytest.raises(NotFoundError, match="no alias"):
        m.check(world.me, "credit@nope")
    with pytest.raises(NotFoundError, match="no drift report"):
        m.report(world.me, "x")
    with pytest.raises(ValidationError, match="latency_p99 rules need threshold_ms"):
        a.add_rule(world.me, "r", "latency_p99")
    with pytest.raises(ValidationError, match="unknown alert rule kind"):
        a.add_rule(world.me, "r", "cpu")
    with pytest.raises(ValidationError, match="unknown condition key"):
        a.add_rule(world.me, "r", "error_rate", condition={"thresh": 1})
    with pytest.raises(ValidationError, match="training spec"):
        a.add_rule(world.me, "r", "drift", retrain={"kind": "diagnostic", "name": "d"})
    with pytest.raises(NotFoundError):
        a.add_rule(world.me, "r", "drift", monitor="nope")
    with pytest.raises(NotFoundError):
        a.ack(world.me, 999_999)
    assert a.list_rules(world.me) == []
    # the other tenant cannot see or check this tenant's monitor
    with pytest.raises(NotFoundError):
        MonitoringService(world.db).check(world.other, "x")


def test_a_scheduled_monitor_and_the_drift_check_job_run_by_the_job_runner(world, tmp_path):
    from mlhub.backends import Backends
    from mlhub.config import load_settings
    from mlhub.jobs.runner import execute

    world.log(shifted_rows(np.random.default_rng(5)))
    mon = world.monitoring.create_monitor(world.me, "hourly", "credit", interval_s=3600, window_s=7200)
    assert mon.schedule == "every 3600 s" and mon.next_run_at > utcnow()
    with world.db.tenant_scope(world.me.tenant_id, readonly=True) as s:
        sched = s.scalar(select(Schedule).where(Schedule.tenant_id == world.me.tenant_id))
        assert (sched.queue, sched.spec["kind"], sched.spec["target"]) == ("evaluation", "drift_check", "hourly")
    job = world.monitoring.enqueue_check(world.me, "hourly", jobs=world.jobs)
    assert (job.queue, job.kind, job.name) == ("evaluation", "drift_check", "drift-hourly")
    settings = load_settings(home=tmp_path, database_url=world.db.url, webhook_allow_private=True)
    backends = Backends(settings)
    backends.__dict__["artifacts"] = world.store  # the world's artifact store
    with world.db.tenant_scope(world.me.tenant_id, readonly=True) as s:
        spec = s.get(Job, job.id).spec
    doc = {"id": job.id, "tenant_id": world.me.tenant_id, "attempt": 1, "name": job.name, "spec": spec}
    for _ in range(2):  # a redelivered attempt replaces its report
        outcome = execute(settings.to_document(), doc, backends=backends)
        assert outcome["status"] == "succeeded", outcome
    result = outcome["result"]
    assert result["kind"] == "drift_check" and result["drifted"] and result["drifted_features"] == ["age", "segment"]
    reports = world.monitoring.reports(world.me, "hourly")
    assert len(reports) == 1 and reports[0].job_id == job.id and reports[0].id == result["report_id"]
    assert world.monitoring.list_monitors(world.me)[0].last_drifted is True
    world.monitoring.delete_monitor(world.me, "hourly")
    with world.db.tenant_scope(world.me.tenant_id, readonly=True) as s:
        assert s.scalar(select(Schedule).where(Schedule.tenant_id == world.me.tenant_id)) is None
    assert world.monitoring.list_monitors(world.me) == []


@pytest.mark.postgres
def test_the_cli_on_postgres(capsys, migrated_pg_url, monkeypatch, tmp_path, hook):
    from mlhub.store.database import Database

    monkeypatch.setenv("MLHUB_DATABASE_URL", migrated_pg_url)
    monkeypatch.setenv("MLHUB_HOME", str(tmp_path))
    db = Database(migrated_pg_url)
    try:
        w = World(db, tmp_path)  # artifacts under MLHUB_HOME/artifacts, where the CLI looks
        w.log(shifted_rows(np.random.default_rng(6)))
        key = w.key
    finally:
        db.dispose()
    spec_file = tmp_path / "retrain.json"
    spec_file.write_text(json.dumps(RETRAIN))

    def cli(*args):
        return run_cli(capsys, "--api-key", key, *args)

    rc, out, err = cli("drift", "monitor", "create", "mon", "--model", "credit", "--alias", "champion",
                       "--schedule", "0 * * * *", "--window", "2h", "--psi", "0.3")
    assert rc == 0 and "cron 0 * * * *" in out, err
    rc, out, err = cli("drift", "monitor", "list", "--json")
    assert rc == 0 and json.loads(out)[0]["thresholds"]["psi"] == 0.3 and json.loads(out)[0]["window_s"] == 7200
    rc, _, err = cli("alerts", "rules", "add", "drift-hook", "--kind", "drift", "--webhook", hook.url)
    assert rc == 2 and "refused" in err and "MLHUB_WEBHOOK_ALLOW_PRIVATE" in err
    monkeypatch.setenv("MLHUB_WEBHOOK_ALLOW_PRIVATE", "true")
    rc, out, err = cli("alerts", "rules", "add", "drift-hook", "--kind", "drift", "--monitor", "mon", "--webhook",
                       hook.url, "--retrain", str(spec_file), "--severity", "critical")
    assert rc == 0, err
    rc, out, err = cli("drift", "check", "mon")
    assert rc == 0 and "DRIFTED: age, segment" in out and "alerts raised" in out, err
    rc, out, err = cli("drift", "check", "mon", "--json")
    assert rc == 0 and json.loads(out)["drifted"] is True
    png = tmp_path / "mon.png"
    rc, out, err = cli("drift", "report", "mon", "--out", str(png))
    assert rc == 0 and png.read_bytes()[:8] == PNG_MAGIC and "DRIFT" in out, err
    rc, out, err = cli("alerts", "list", "--status", "open", "--json")
    alerts = json.loads(out)
    assert rc == 0 and len(alerts) == 1 and alerts[0]["count"] == 2 and alerts[0]["delivered_at"], err
    assert len(hook.received) == 1 and alerts[0]["data"]["retrain_job_id"]
    rc, out, err = cli("alerts", "ack", str(alerts[0]["id"]))
    assert rc == 0 and "acknowledged" in out
    rc, out, err = cli("alerts", "rules", "add", "errs", "--kind", "error_rate", "--threshold", "0.5")
    assert rc == 0, err
    rc, out, err = cli("alerts", "check")
    assert rc == 0 and "no rule fired" in out
    rc, out, err = cli("drift", "check", "credit", "--async", "--json")
    assert rc == 0 and json.loads(out)["queue"] == "evaluation", err
    rc, out, err = cli("drift", "history", "mon", "--json")
    assert rc == 0 and len(json.loads(out)) == 2
    rc, _, err = cli("drift", "check", "nope")
    assert rc == 4 and "no monitor and no model" in err
    rc, out, err = cli("drift", "monitor", "delete", "mon")
    assert rc == 0
    rc, out, err = cli("alerts", "rules", "list", "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)] == ["errs"]  # the monitor's drift rule went with it
    other = uuid.uuid4().hex  # an unknown key is refused
    rc, _, err = run_cli(capsys, "--api-key", other, "alerts", "list")
    assert rc == 3
