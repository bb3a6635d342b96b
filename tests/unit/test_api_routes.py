"""The REST API (serve_apps/api.py) through FastAPI's TestClient over a real embedded SQLite backend, no Ray:
auth and tenant isolation, every route over its service, one error shape, validation as 422, NaN as null, and a
generic 500 for the unexpected. Paths are the served ones (``/api/...``): the client sets ``root_path`` exactly
as Ray Serve's route prefix does."""

from __future__ import annotations

import uuid

import pytest

from mlhub.store.types import utcnow

BASELINE = {"kind": "training", "name": "iris", "framework": "sklearn", "model": "random_forest",
            "dataset": {"source": "sklearn", "name": "iris"}}


class Seeded:
    """An app over ``settings`` and two tenants (``me`` with data, ``other`` without), each with an API key."""

    def __init__(self, settings, backends=None) -> None:
        from fastapi.testclient import TestClient

        from mlhub.tenancy import TenantService
        from serve_apps.api import create_app

        self.app = create_app(settings, backends=backends)
        self.ctx = self.app.state.mlhub
        self.db = self.ctx.backends.db
        tenants = TenantService(self.db)
        self.key = tenants.create_tenant(f"api-{uuid.uuid4().hex[:8]}")[1]
        self.other_key = tenants.create_tenant(f"api-{uuid.uuid4().hex[:8]}")[1]
        self.me = tenants.authenticate(self.key, source="api")
        self.other = tenants.authenticate(self.other_key, source="api")
        self.client = TestClient(self.app, root_path="/api", raise_server_exceptions=False,
                                 headers={"authorization": f"Bearer {self.key}"})

    def as_other(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.other_key}"}

    def job(self, **spec) -> int:
        r = self.client.post("/api/jobs", json={**BASELINE, **spec})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def run(self, name: str, metrics: dict[str, list[float]], params: dict | None = None) -> int:
        from mlhub.store import runs

        with self.db.tenant_scope(self.me.tenant_id) as s:
            run = runs.create_run(s, self.me.tenant_id, name, experiment="exp")
            runs.log_params(s, self.me.tenant_id, run.id, params or {})
            runs.log_metrics(s, self.me.tenant_id, run.id, [runs.MetricPoint(k, v, step) for k, vs in metrics.items()
                                                            for step, v in enumerate(vs)])
            return run.id

    def version(self, name: str, metrics: dict) -> int:
        from mlhub.artifact_records import ArtifactService
        from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
        from mlhub.registry.service import register_version

        art = ArtifactService(self.db, self.ctx.backends.artifacts).upload(
            self.me, uuid.uuid4().bytes * 8, media_type=MODEL_MEDIA_TYPES_BY_FORMAT["npz"], name=f"{name}.npz")
        with self.db.tenant_scope(self.me.tenant_id) as s:
            return register_version(s, self.me.tenant_id, model_name=name, framework="baseline", model_format="npz",
                                    artifact_id=art.id, artifact_sha256=art.sha256, created_by="test",
                                    metrics=metrics).version


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory):
    """An embedded database at the head schema, migrated once and copied for each test (migrating costs ~0.3 s)."""
    from mlhub.store.database import Database

    path = tmp_path_factory.mktemp("api_template") / "mlhub.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture
def api(tmp_path, migrated_sqlite):
    import shutil

    from mlhub.config import load_settings

    settings = load_settings(home=tmp_path / "home", redis_url=None, mongodb_uri=None, ray_address=None)
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_sqlite, settings.effective_database_url.split("sqlite:///", 1)[1])
    seeded = Seeded(settings)
    yield seeded
    seeded.ctx.backends.close()


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return body["error"]


# --- auth, health, documents --------------------------------------------------------------------------------


def test_health_needs_no_key_and_reports_every_backend(api):
    r = api.client.get("/api/health", headers={"authorization": ""})
    assert r.status_code == 200
    doc = r.json()
    assert doc["ok"] is True
    assert {b["name"]: b["status"] for b in doc["backends"]} == {
        "database": "ok", "redis": "not configured", "mongodb": "not configured", "ray": "not configured"}


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer not-a-key",
                                    "Bearer mlh_AAAAAAAA_" + "b" * 32])
def test_every_other_route_refuses_a_missing_malformed_or_unknown_key(api, header):
    headers = {"authorization": header} if header is not None else {}
    client = api.client
    client.headers.pop("authorization")
    for method, path in [("get", "/api/jobs"), ("get", "/api/jobs/1"), ("post", "/api/jobs/1/cancel"),
                         ("get", "/api/runs"), ("get", "/api/models"), ("get", "/api/audit"),
                         ("get", "/api/experiments")]:
        r = getattr(client, method)(path, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert error_of(r)["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"


def test_openapi_document_and_docs_are_served_under_the_prefix(api):
    doc = api.client.get("/api/openapi.json").json()
    assert doc["servers"] == [{"url": "/api"}]
    assert {"/jobs", "/jobs/{job_id}/retry", "/runs/{run_id}/metrics", "/models/compare", "/models/{name}/promote",
            "/audit", "/health", "/experiments/{ref}"} <= set(doc["paths"])
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    docs = api.client.get("/api/docs")
    assert docs.status_code == 200 and "/api/openapi.json" in docs.text


# --- jobs --------------------------------------------------------------------------------------------------


def test_submit_get_list_cancel_and_idempotent_resubmit(api):
    job_id = api.job()
    r = api.client.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["state"] == "queued" and r.json()["name"] == "iris"
    again = api.client.post("/api/jobs", json=BASELINE, headers={"Idempotency-Key": "k-1"})
    same = api.client.post("/api/jobs", json=BASELINE, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == same.status_code == 201 and again.json()["id"] == same.json()["id"] != job_id
    listed = api.client.get("/api/jobs", params={"state": "queued", "queue": "training"}).json()
    assert [j["id"] for j in listed["jobs"]] == [again.json()["id"], job_id]
    assert api.client.get("/api/jobs", params={"limit": 1}).json()["next_before_id"] == again.json()["id"]
    r = api.client.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = api.client.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 409 and error_of(r)["code"] == "conflict"
    assert [j["id"] for j in api.client.get("/api/jobs", params={"state": "cancelled"}).json()["jobs"]] == [job_id]


def test_retry_queues_a_new_job_with_the_same_spec_and_audits_it(api):
    job_id = api.job(name="again")
    r = api.client.post(f"/api/jobs/{job_id}/retry")
    assert r.status_code == 409 and error_of(r)["details"] == {"state": "queued"}
    api.client.post(f"/api/jobs/{job_id}/cancel")
    r = api.client.post(f"/api/jobs/{job_id}/retry", headers={"Idempotency-Key": "retry-1"})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["id"] != job_id and new["retry_of"] == job_id
    assert (new["state"], new["name"], new["attempt"]) == ("queued", "again", 0)
    # the same key answers the same new job, even though the old one could be retried again
    assert api.client.post(f"/api/jobs/{job_id}/retry", headers={"Idempotency-Key": "retry-1"}).json()["id"] == \
        new["id"]
    events = api.client.get("/api/audit", params={"action": "job.retry"}).json()["events"]
    assert events[0]["target_id"] == str(new["id"]) and events[0]["details"]["retry_of"] == job_id
    assert events[0]["source"] == "api" and events[0]["outcome"] == "success"


def test_logs_come_back_in_order_and_can_be_followed(api):
    from mlhub.jobs import store

    job_id = api.job()
    with api.db.tenant_scope(api.me.tenant_id) as s:
        store.append_logs(s, api.me.tenant_id, job_id, 1, "driver", [("stdout", 0, "hello "), ("stdout", 1, "world\n")])
    doc = api.client.get(f"/api/jobs/{job_id}/logs").json()
    assert doc["text"] == "hello world\n" and [c["seq"] for c in doc["chunks"]] == [0, 1]
    more = api.client.get(f"/api/jobs/{job_id}/logs", params={"after_id": doc["next_after_id"]}).json()
    assert more["chunks"] == [] and more["next_after_id"] == doc["next_after_id"]
    r = api.client.get(f"/api/jobs/{job_id}/logs", params={"attempt": 5})
    assert r.status_code == 422


def test_trials_of_an_hpo_job_and_of_another_tenants_job(api):
    from mlhub.hpo.trials import TrialUpdate, write_trials

    job_id = api.job()
    write_trials(api.db, api.me.tenant_id, job_id, 1, "search", [
        TrialUpdate("t1", "terminated", {"n_estimators": 10}, {"accuracy": 0.9}, 3)])
    doc = api.client.get(f"/api/jobs/{job_id}/trials").json()
    assert [(t["trial_id"], t["status"], t["params"], t["metrics"]) for t in doc["trials"]] == [
        ("t1", "terminated", {"n_estimators": 10}, {"accuracy": 0.9})]
    assert api.client.get(f"/api/jobs/{job_id}/trials", headers=api.as_other()).status_code == 404


def test_another_tenants_job_is_not_found_for_every_route(api):
    job_id = api.job()
    other = api.as_other()
    for method, path in [("get", f"/api/jobs/{job_id}"), ("post", f"/api/jobs/{job_id}/cancel"),
                         ("post", f"/api/jobs/{job_id}/retry"), ("get", f"/api/jobs/{job_id}/logs")]:
        r = getattr(api.client, method)(path, headers=other)
        assert r.status_code == 404 and error_of(r)["code"] == "not_found", (path, r.text)
    assert api.client.get("/api/jobs", headers=other).json()["jobs"] == []
    assert api.client.get(f"/api/jobs/{job_id}").json()["state"] == "queued"  # the cancel above changed nothing


@pytest.mark.parametrize("body", [
    {**BASELINE, "framework": "nope"},
    {"kind": "training"},
    [1, 2],
    {**BASELINE, "name": "a\x00b"},
    {**BASELINE, "entrypoint": "train:main", "framework": "custom"},
])
def test_bad_specs_answer_422_and_queue_nothing(api, body):
    r = api.client.post("/api/jobs", json=body)
    assert r.status_code == 422, r.text
    assert error_of(r)["code"] == "validation_failed"
    assert api.client.get("/api/jobs").json()["jobs"] == []


def test_bad_queries_are_422_with_the_field_named(api):
    for path, params, field in [("/api/jobs", {"state": "sleeping"}, "state"), ("/api/jobs", {"limit": 0}, "limit"),
                                ("/api/jobs/0", {}, "job_id"), ("/api/jobs/99999999999999999999", {}, "job_id"),
                                ("/api/runs", {"status": "x"}, "status"),
                                ("/api/audit", {"since": "yesterday"}, "since")]:
        r = api.client.get(path, params=params)
        assert r.status_code == 422, (path, r.text)
        err = error_of(r)
        assert err["code"] == "validation_failed" and err["details"]["errors"][0]["loc"][-1] == field
    r = api.client.get("/api/jobs", params={"name": "a\x00b"})
    assert r.status_code == 422 and "NUL" in error_of(r)["message"]
    assert api.client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422


def test_bodies_over_the_limit_are_refused_with_413_whatever_their_length_header_says(api):
    from serve_apps.api import MAX_BODY_BYTES

    big = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = api.client.post("/api/jobs", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2)

    r = api.client.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert api.client.get("/api/jobs").json()["jobs"] == []
    assert api.job() >= 1  # a normal body still goes through the replayed stream


# --- runs --------------------------------------------------------------------------------------------------


def test_runs_list_filter_order_show_and_metric_history(api):
    a = api.run("a", {"loss": [1.0, 0.5], "f1": [0.7, 0.8]}, {"lr": 0.1})
    b = api.run("b", {"loss": [0.9, 0.2], "f1": [0.8, 0.95]}, {"lr": 0.01})
    doc = api.client.get("/api/runs").json()
    assert [r["id"] for r in doc["runs"]] == [b, a]
    doc = api.client.get("/api/runs", params={"filter": "metrics.f1 > 0.9", "order_by": "metrics.f1 desc"}).json()
    assert [r["id"] for r in doc["runs"]] == [b]
    assert [r["id"] for r in api.client.get("/api/runs", params={"order_by": "params.lr"}).json()["runs"]] == [b, a]
    r = api.client.get("/api/runs", params={"filter": "metrics.f1 >> 1"})
    assert r.status_code == 422 and error_of(r)["code"] == "filter_syntax"
    show = api.client.get(f"/api/runs/{a}").json()
    assert show["params"] == {"lr": "0.1"} and show["latest_metrics"] == {"f1": 0.8, "loss": 0.5}
    assert show["metric_points"] == {"f1": 2, "loss": 2}
    hist = api.client.get(f"/api/runs/{a}/metrics", params={"key": "loss"}).json()
    assert hist == {"run_id": a, "metrics": {"loss": [{"step": 0, "value": 1.0}, {"step": 1, "value": 0.5}]}}
    r = api.client.get(f"/api/runs/{a}/metrics", params={"key": "nope"})
    assert r.status_code == 404 and error_of(r)["details"]["available"] == ["f1", "loss"]
    for path in (f"/api/runs/{a}", f"/api/runs/{a}/metrics"):
        assert api.client.get(path, headers=api.as_other()).status_code == 404
    assert api.client.get("/api/runs", headers=api.as_other()).json()["runs"] == []


def test_non_finite_numbers_are_rendered_as_null(api):
    from mlhub.store.models import Run

    run_id = api.run("nan", {"loss": [0.5]})
    with api.db.tenant_scope(api.me.tenant_id) as s:
        s.get(Run, run_id).summary = {"loss": float("nan"), "best": float("inf"), "f1": 0.5}
    r = api.client.get(f"/api/runs/{run_id}")
    assert r.status_code == 200 and r.json()["summary"] == {"loss": None, "best": None, "f1": 0.5}


# --- registry ----------------------------------------------------------------------------------------------


def test_models_list_show_versions_promote_rollback_and_compare(api):
    for acc in (0.8, 0.9, 0.95):
        api.version("iris", {"accuracy": acc})
    models = api.client.get("/api/models").json()["models"]
    assert [(m["name"], m["latest_version"], m["versions"]) for m in models] == [("iris", 3, 3)]
    versions = api.client.get("/api/models/iris/versions").json()["versions"]
    assert [(v["version"], v["ref"]) for v in versions] == [(1, "iris/1"), (2, "iris/2"), (3, "iris/3")]
    page = api.client.get("/api/models/iris/versions?limit=2").json()  # a page, never the whole list
    assert [v["version"] for v in page["versions"]] == [1, 2] and page["next_offset"] == 2
    page = api.client.get("/api/models/iris/versions?limit=2&offset=2").json()
    assert [v["version"] for v in page["versions"]] == [3] and page["next_offset"] is None
    newest = api.client.get("/api/models/iris/versions?limit=1&newest_first=true").json()
    assert [v["version"] for v in newest["versions"]] == [3]
    api.ctx.registry.set_gates(api.me, "iris", ["accuracy >= 0.85"])
    dry = api.client.post("/api/models/iris/promote", json={"version": 1, "dry_run": True}).json()
    assert dry["passed"] is False and dry["gates"][0]["observed"] == 0.8
    r = api.client.post("/api/models/iris/promote", json={"version": 1})
    assert r.status_code == 409 and error_of(r)["code"] == "promotion_refused"
    assert error_of(r)["details"]["gates"][0]["required"] == 0.85
    r = api.client.post("/api/models/iris/promote", json={"version": 1, "force": True})
    assert r.status_code == 422  # forcing needs a reason
    assert api.client.post("/api/models/iris/promote", json={"version": 2}).json()["previous"] is None
    r = api.client.post("/api/models/iris/promote", json={"version": 3, "to": "champion"})
    assert r.status_code == 200 and r.json()["previous"] == 2 and r.json()["gates"][0]["passed"]
    assert api.client.get("/api/models/iris").json()["aliases"] == {"champion": 3}
    r = api.client.post("/api/models/iris/rollback", json={"reason": "regression"})
    assert r.status_code == 200 and (r.json()["version"], r.json()["action"]) == (2, "rollback")
    assert api.client.post("/api/models/iris/rollback").status_code == 409  # version 2 was champion's first
    cmp = api.client.get("/api/models/compare", params={"refs": ["iris/1", "iris@champion"]}).json()
    assert [v["ref"] for v in cmp["versions"]] == ["iris/1", "iris/2"]
    assert cmp["rows"]["accuracy"] == [0.8, 0.9] and cmp["best"]["accuracy"] == 1
    assert api.client.get("/api/models/compare", params={"refs": "iris/1,iris/3"}).json()["rows"]["accuracy"] == \
        [0.8, 0.95]
    assert api.client.get("/api/models/compare", params={"refs": "iris/1"}).status_code == 422
    events = [(e["action"], e["outcome"]) for e in api.client.get("/api/audit", params={"action": "model."}
                                                                   ).json()["events"]]
    assert events == [("model.rollback", "failure"), ("model.rollback", "success"), ("model.promote", "success"),
                      ("model.promote", "success"), ("model.promote", "failure"), ("model.gates", "success")]


def test_another_tenants_model_is_not_found(api):
    api.version("iris", {"accuracy": 0.9})
    other = api.as_other()
    assert api.client.get("/api/models", headers=other).json()["models"] == []
    for method, path, body in [("get", "/api/models/iris", None), ("get", "/api/models/iris/versions", None),
                               ("post", "/api/models/iris/promote", {"version": 1}),
                               ("post", "/api/models/iris/rollback", None),
                               ("get", "/api/models/compare?refs=iris/1&refs=iris/1", None)]:
        r = api.client.request(method, path, json=body, headers=other)
        assert r.status_code == 404, (path, r.text)
    assert api.client.get("/api/models/iris").json()["aliases"] == {}


# --- experiments, audit, errors -------------------------------------------------------------------------------


def test_experiments_list_status_start_and_stop(api):
    from mlhub.domain.routing import VariantSpec

    api.version("churn", {}), api.version("churn", {})
    api.ctx.experiments.create(api.me, "churn-ab", "churn", [VariantSpec("control", 1), VariantSpec("treatment", 2)])
    listed = api.client.get("/api/experiments").json()["experiments"]
    assert [(e["name"], e["status"]) for e in listed] == [("churn-ab", "draft")]
    assert api.client.post("/api/experiments/churn-ab/start").json()["status"] == "running"
    status = api.client.get(f"/api/experiments/{listed[0]['id']}").json()
    assert status["experiment"]["status"] == "running" and [v["name"] for v in status["variants"]] == [
        "control", "treatment"]
    r = api.client.post("/api/experiments/churn-ab/start")
    assert r.status_code == 409 and error_of(r)["code"] == "experiment_state"
    r = api.client.post("/api/experiments/churn-ab/stop", json={"reason": "enough"})
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    assert api.client.get("/api/experiments", params={"status": "stopped"}).json()["experiments"][0]["reason"] == \
        "enough"
    for path in ("/api/experiments/churn-ab", "/api/experiments/99999999999999999999999"):
        assert api.client.get(path, headers=api.as_other() if "churn" in path else None).status_code == 404
    assert api.client.get("/api/experiments/a%20b").status_code == 422


def test_monitors_drift_reports_and_alerts(api):
    from mlhub.store.models import Alert, AlertRule

    api.version("churn", {})
    api.ctx.monitoring.create_monitor(api.me, "churn-drift", "churn")
    assert [m["name"] for m in api.client.get("/api/monitors").json()["monitors"]] == ["churn-drift"]
    assert api.client.get("/api/monitors", headers=api.as_other()).json()["monitors"] == []
    for target in ("churn-drift", "churn", "churn/1", "churn@champion"):
        r = api.client.get(f"/api/drift/{target}")
        assert r.status_code == 200 and r.json() == {"target": target, "reports": []}, r.text
    r = api.client.get("/api/drift/no such thing")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    rule = api.ctx.monitoring.alerts.add_rule(api.me, "failures", "job_failures")
    with api.db.tenant_scope(api.me.tenant_id) as s:
        alert = Alert(tenant_id=api.me.tenant_id, rule_id=rule.id, dedup_key="k", message="2 jobs failed",
                      data={}, last_seen_at=utcnow())
        s.add(alert)
        s.flush()
        alert_id = alert.id
        assert s.get(AlertRule, rule.id) is not None
    listed = api.client.get("/api/alerts", params={"status": "open"}).json()["alerts"]
    assert [(a["id"], a["rule"], a["message"]) for a in listed] == [(alert_id, "failures", "2 jobs failed")]
    assert api.client.post(f"/api/alerts/{alert_id}/ack", headers=api.as_other()).status_code == 404
    assert api.client.post(f"/api/alerts/{alert_id}/ack").json()["status"] == "acknowledged"
    assert api.client.post(f"/api/alerts/{alert_id}/resolve").json()["status"] == "resolved"
    assert api.client.post(f"/api/alerts/{alert_id}/resolve").status_code == 409
    assert api.client.get("/api/alerts", headers=api.as_other()).json()["alerts"] == []


def test_audit_shows_only_this_tenants_events_newest_first(api):
    first = api.job()
    api.client.post(f"/api/jobs/{first}/cancel")
    events = api.client.get("/api/audit").json()["events"]
    assert [(e["action"], e["target_id"]) for e in events[:2]] == [("job.cancel", str(first)),
                                                                     ("job.submit", str(first))]
    assert api.client.get("/api/audit", params={"target": f"job:{first}", "limit": 1}).json()["events"][0][
        "action"] == "job.cancel"
    since = utcnow().replace(tzinfo=None).isoformat()  # a naive time is UTC
    assert api.client.get("/api/audit", params={"since": since}).json()["events"] == []
    assert all(e["action"].startswith("tenant.") or e["action"].startswith("key.")
               for e in api.client.get("/api/audit", headers=api.as_other()).json()["events"])


def test_unexpected_errors_are_a_generic_500_and_unknown_paths_404(api, caplog):
    def boom():
        raise RuntimeError("secret internals at /srv/x.py line 3")

    api.app.add_api_route("/boom", boom)
    with caplog.at_level("ERROR", logger="mlhub.serve.api"):
        r = api.client.get("/api/boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal", "message": "internal error (logged on the server)",
                                  "details": {}}}
    assert "secret internals" in caplog.text  # logged for the operator, not sent to the caller
    r = api.client.get("/api/nothing-here")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = api.client.delete("/api/jobs")
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
