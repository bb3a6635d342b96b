"""The web console (serve_apps/ui) through FastAPI's TestClient over the whole ingress of the API application
(``/api`` and ``/ui`` mounted as Serve serves them) and a real embedded SQLite backend, no Ray: login and session
cookie, CSRF, escaping, tenant isolation, server-side pagination, and promotion through the registry's gates."""

from __future__ import annotations

import re
import uuid

import pytest

PASSING_GATE = "accuracy >= 0.85"


class Console:
    """The ingress over ``settings`` with two tenants, ``me`` (logged in by :meth:`login`) and ``other``."""

    def __init__(self, settings) -> None:
        from fastapi.testclient import TestClient

        from mlhub.tenancy import TenantService
        from serve_apps.api import create_server_app

        self.app = create_server_app(settings)
        self.ctx = self.app.state.mlhub
        self.db = self.ctx.backends.db
        tenants = TenantService(self.db)
        self.me_name = f"ui-{uuid.uuid4().hex[:8]}"
        self.key = tenants.create_tenant(self.me_name)[1]
        self.other_key = tenants.create_tenant(f"ui-{uuid.uuid4().hex[:8]}")[1]
        self.me = tenants.authenticate(self.key, source="api")
        self.other = tenants.authenticate(self.other_key, source="api")
        self.client = TestClient(self.app, follow_redirects=False, raise_server_exceptions=False)

    def login(self, key: str | None = None, **kwargs):
        r = self.client.post("/ui/login", data={"api_key": key or self.key}, **kwargs)
        assert r.status_code == 303, r.text
        return r

    def csrf(self, path: str = "/ui/jobs") -> str:
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    def version(self, name: str, metrics: dict, *, principal=None, description: str | None = None) -> int:
        from mlhub.artifact_records import ArtifactService
        from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
        from mlhub.registry.service import register_version

        who = principal or self.me
        art = ArtifactService(self.db, self.ctx.backends.artifacts).upload(
            who, uuid.uuid4().bytes * 8, media_type=MODEL_MEDIA_TYPES_BY_FORMAT["npz"], name=f"{name}.npz")
        with self.db.tenant_scope(who.tenant_id) as s:
            return register_version(s, who.tenant_id, model_name=name, framework="baseline", model_format="npz",
                                    artifact_id=art.id, artifact_sha256=art.sha256, created_by="test",
                                    metrics=metrics, description=description).version


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory):
    from mlhub.store.database import Database

    path = tmp_path_factory.mktemp("ui_template") / "mlhub.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture
def ui(tmp_path, migrated_sqlite):
    import shutil

    from mlhub.config import load_settings

    settings = load_settings(home=tmp_path / "home", redis_url=None, mongodb_uri=None, ray_address=None)
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_sqlite, settings.effective_database_url.split("sqlite:///", 1)[1])
    console = Console(settings)
    yield console
    console.ctx.backends.close()


def cookie_attrs(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    return {k.lower(): v for k, _, v in (p.partition("=") for p in parts[1:])}


# --- login, session, CSRF -------------------------------------------------------------------------------------


def test_pages_need_a_session_and_the_login_form_takes_an_api_key(ui):
    for path in ("/ui/jobs", "/ui/jobs/1", "/ui/runs", "/ui/models", "/ui/models/x", "/ui/experiments",
                 "/ui/monitors", "/ui/health", "/ui/hpo/1", "/ui/jobs/1/live"):
        r = ui.client.get(path)
        assert (r.status_code, r.headers.get("location")) == (303, "/ui/login"), path
    page = ui.client.get("/ui/login")
    assert page.status_code == 200
    assert '<form method="post" action="/ui/login">' in page.text
    assert re.search(r'<input name="api_key" type="password"', page.text) and '<button type="submit">' in page.text


def test_login_sets_a_strict_http_only_cookie_secure_only_over_https(ui):
    r = ui.login()
    assert r.headers["location"] == "/ui/jobs"
    name, _, _ = r.headers["set-cookie"].partition("=")
    attrs = cookie_attrs(r.headers["set-cookie"])
    assert name == "mlhub_session" and "httponly" in attrs and attrs["samesite"].lower() == "strict"
    assert attrs["path"] == "/ui" and "secure" not in attrs
    page = ui.client.get("/ui/jobs")
    assert page.status_code == 200 and f'<strong id="tenant">{ui.me_name}</strong>' in page.text
    assert "content-security-policy" in page.headers and page.headers["x-frame-options"] == "DENY"

    forwarded = ui.client.post("/ui/login", data={"api_key": ui.key}, headers={"x-forwarded-proto": "https"})
    assert "secure" in cookie_attrs(forwarded.headers["set-cookie"])
    from fastapi.testclient import TestClient

    with TestClient(ui.app, base_url="https://testserver", follow_redirects=False) as https:
        r = https.post("/ui/login", data={"api_key": ui.key})
        assert r.status_code == 303 and "secure" in cookie_attrs(r.headers["set-cookie"])


def test_a_wrong_key_is_refused_with_a_401_page(ui):
    for key in ("mlh_nope_nope", "not a key", ""):
        r = ui.client.post("/ui/login", data={"api_key": key})
        assert r.status_code == 401 and 'id="login-error"' in r.text
        assert "set-cookie" not in r.headers
    assert ui.client.get("/ui/jobs").status_code == 303


def test_writes_need_the_sessions_csrf_token_and_a_same_site_origin(ui):
    job = ui.ctx.jobs.submit(ui.me, _spec())
    ui.login()
    token = ui.csrf()
    for data, headers in [({}, {}), ({"csrf_token": "0" * 64}, {}),
                          ({"csrf_token": token}, {"origin": "https://evil.example"}),
                          ({"csrf_token": token}, {"sec-fetch-site": "cross-site"})]:
        r = ui.client.post(f"/ui/jobs/{job.id}/cancel", data=data, headers=headers)
        assert r.status_code == 403 and 'id="csrf-error"' in r.text, (data, headers)
    assert ui.ctx.jobs.get(ui.me, job.id).state == "queued"
    r = ui.client.post("/ui/logout", data={})
    assert r.status_code == 403  # logging someone out is a write too
    r = ui.client.post(f"/ui/jobs/{job.id}/cancel", data={"csrf_token": token},
                       headers={"origin": "http://testserver"})
    assert (r.status_code, r.headers["location"]) == (303, f"/ui/jobs/{job.id}")
    assert ui.ctx.jobs.get(ui.me, job.id).state == "cancelled"
    assert 'id="flash" class="ok"' in ui.client.get(f"/ui/jobs/{job.id}").text
    r = ui.client.post("/ui/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert 'mlhub_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]


def test_the_cookie_is_a_signed_token_not_the_key_and_a_revoked_key_ends_the_session(ui):
    from fastapi.testclient import TestClient

    from mlhub.tenancy import TenantService

    r = ui.login()
    token = r.cookies["mlhub_session"]
    assert ui.key not in token and ui.key.split("_")[2] not in token and token.startswith("v1.")
    mine = ui.csrf()
    other = TestClient(ui.app, follow_redirects=False)
    other.post("/ui/login", data={"api_key": ui.other_key})
    theirs = re.search(r'name="csrf_token" value="([^"]+)"', other.get("/ui/jobs").text).group(1)
    assert theirs != mine  # bound to the session
    version, payload, signature = token.split(".")
    for forged in (f"{version}.{payload}.{signature[:-2]}AA", f"{version}.{payload[:-2]}.{signature}",
                   "v1.e30.x", "garbage", ui.key):
        assert TestClient(ui.app, follow_redirects=False, cookies={"mlhub_session": forged}).get(
            "/ui/jobs").status_code == 303, forged
    ui.ctx.sessions.ttl_s = 0  # (the verified-token memory would keep it up to 5 s)
    key_ref = ui.key.split("_")[1]
    TenantService(ui.db).revoke_key(ui.me, key_ref)
    assert ui.client.get("/ui/jobs").status_code == 303


def test_a_session_token_expires():
    import base64
    import json
    from unittest.mock import MagicMock

    from mlhub.errors import AuthenticationError
    from mlhub.serving.sessions import SessionTokens

    tokens = SessionTokens(MagicMock(), max_age_s=60, clock=lambda: 1_000.0)
    payload = base64.urlsafe_b64encode(json.dumps({"t": "x", "k": 1, "e": 999}).encode()).decode().rstrip("=")
    with pytest.raises(AuthenticationError):
        tokens.verify(f"v1.{payload}.sig")  # expired before any database read
    tokens.db.tenant_scope.assert_not_called()


def _spec(**kw):
    from mlhub.domain.specs import parse_spec

    return parse_spec({"kind": "training", "name": "ui-job", "framework": "sklearn", "model": "random_forest",
                       "dataset": {"source": "sklearn", "name": "iris"}, **kw})


# --- jobs -------------------------------------------------------------------------------------------------


def test_sixty_jobs_are_three_pages_of_at_most_25_rows(ui):
    ids = ui.ctx.jobs.submit_many(ui.me, [_spec(name=f"job-{i}") for i in range(60)])
    ui.login()
    shown = []
    pages = 0
    url = "/ui/jobs"
    while url:
        page = ui.client.get(url)
        rows = [int(x) for x in re.findall(r'<tr data-job-id="(\d+)">', page.text)]
        assert len(rows) <= 25
        shown += rows
        pages += 1
        nxt = re.search(r'<a id="next-page" href="([^"]+)"', page.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        if pages > 1:
            assert 'id="prev-page"' in page.text
    assert pages == 3 and shown == sorted(ids, reverse=True)
    assert 'id="queues"' in page.text
    depths = {q["name"]: q["pending"] for q in ui.client.get("/ui/queues/live").json()["queues"]}
    assert depths["training"] == 60 and depths["hpo"] == 0
    filtered = ui.client.get("/ui/jobs", params={"state": "succeeded"}).text
    assert re.findall(r'data-job-id="(\d+)"', filtered) == []
    one = ui.client.get(f"/ui/jobs/{ids[0]}").text
    assert re.search(r'id="job-state"[^>]*>queued<', one) and 'id="job-logs"' in one and 'id="job-progress"' in one
    live = ui.client.get(f"/ui/jobs/{ids[0]}/live").json()
    assert live["state"] == "queued" and live["final"] is False


def test_retry_from_the_console_queues_a_new_job(ui):
    job = ui.ctx.jobs.submit(ui.me, _spec())
    ui.ctx.jobs.cancel(ui.me, job.id)
    ui.login()
    r = ui.client.post(f"/ui/jobs/{job.id}/retry", data={"csrf_token": ui.csrf(f"/ui/jobs/{job.id}")})
    assert r.status_code == 303
    new_id = int(r.headers["location"].rsplit("/", 1)[1])
    assert new_id != job.id and ui.ctx.jobs.get(ui.me, new_id).state == "queued"


def test_another_tenants_job_is_not_found(ui):
    job = ui.ctx.jobs.submit(ui.other, _spec())
    ui.login()
    assert ui.client.get(f"/ui/jobs/{job.id}").status_code == 404
    assert ui.client.get(f"/ui/jobs/{job.id}/live").status_code == 404
    assert f'data-job-id="{job.id}"' not in ui.client.get("/ui/jobs").text


# --- models --------------------------------------------------------------------------------------------------


def test_user_text_is_escaped(ui):
    evil = "<script>alert(1)</script>"
    ui.version("churn", {"accuracy": 0.9}, description=evil)
    ui.ctx.registry.describe(ui.me, "churn", evil)
    ui.login()
    for path in ("/ui/models", "/ui/models/churn"):
        page = ui.client.get(path).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page, path


def test_another_tenants_model_is_absent(ui):
    ui.version("theirs", {"accuracy": 0.9}, principal=ui.other)
    ui.version("mine", {"accuracy": 0.9})
    ui.login()
    listed = re.findall(r'<tr data-model="([^"]+)"', ui.client.get("/ui/models").text)
    assert listed == ["mine"]
    assert ui.client.get("/ui/models/theirs").status_code == 404
    r = ui.client.post("/ui/models/theirs/promote", data={"csrf_token": ui.csrf(), "version": "1", "to": "champion"})
    assert r.status_code == 404
    assert ui.ctx.registry.show(ui.other, "theirs").aliases == {}


def test_promote_through_a_passing_gate_and_a_refusal_by_a_failing_one(ui):
    for acc in (0.8, 0.9):
        ui.version("iris", {"accuracy": acc})
    ui.ctx.registry.set_gates(ui.me, "iris", [PASSING_GATE])
    ui.login()
    token = ui.csrf("/ui/models/iris")

    r = ui.client.post("/ui/models/iris/promote", data={"csrf_token": token, "version": "2", "to": "champion"})
    assert (r.status_code, r.headers["location"]) == (303, "/ui/models/iris")
    page = ui.client.get("/ui/models/iris").text
    assert '<div id="flash" class="ok">' in page
    assert ui.ctx.registry.show(ui.me, "iris").aliases == {"champion": 2}
    assert re.search(r'<tr data-alias="champion"><td>champion</td><td class="version">2</td>', page)

    r = ui.client.post("/ui/models/iris/promote", data={"csrf_token": token, "version": "1", "to": "champion",
                                                         "reason": "try"})
    page = ui.client.get(r.headers["location"]).text
    assert '<div id="flash" class="error">' in page and "accuracy &gt;= 0.85" in page and "0.8" in page
    assert ui.ctx.registry.show(ui.me, "iris").aliases == {"champion": 2}
    assert 'id="flash"' not in ui.client.get("/ui/models/iris").text  # shown once
    events = [(e.action, e.outcome, e.source) for e in ui.ctx.audit.list(ui.me, action="model.promote")]
    assert events == [("model.promote", "failure", "api"), ("model.promote", "success", "api")]
    gates = ui.client.get("/ui/models/iris").text
    assert re.search(r'<tr data-gate="accuracy &gt;= 0.85">.*?<td class="verdict">failed</td>', gates, re.S)

    r = ui.client.post("/ui/models/iris/rollback", data={"csrf_token": token, "alias": "champion"})
    assert 'class="error"' in ui.client.get(r.headers["location"]).text  # version 2 was champion's first
    history = ui.client.get("/ui/models/iris").text
    assert 'id="history"' in history and 'id="versions"' in history and 'id="gates"' in history


def test_a_thousand_versions_are_paged(ui):
    from mlhub.registry.service import register_version

    with ui.db.tenant_scope(ui.me.tenant_id) as s:
        for _ in range(60):
            register_version(s, ui.me.tenant_id, model_name="big", framework="baseline", model_format="npz",
                             artifact_id=None, artifact_sha256=None, created_by="test")
    ui.login()
    first = ui.client.get("/ui/models/big").text
    versions = [int(v) for v in re.findall(r'<tr data-version="(\d+)">', first)]
    assert versions == list(range(60, 35, -1)) and 'id="next-page"' in first
    last = ui.client.get("/ui/models/big", params={"page": 3}).text
    assert [int(v) for v in re.findall(r'<tr data-version="(\d+)">', last)] == list(range(10, 0, -1))
    assert 'id="next-page"' not in last


def test_model_compare_shows_metrics_side_by_side(ui):
    ui.version("wine", {"accuracy": 0.8})
    ui.version("wine", {"accuracy": 0.9})
    ui.login()
    page = ui.client.get("/ui/models/wine/compare", params={"refs": "1,2"})
    assert page.status_code == 200 and "wine/1" in page.text and "wine/2" in page.text
    assert re.search(r"<td>accuracy</td><td>0.8</td><td class=\"best\">0.9</td>", page.text)


# --- runs, hpo, experiments, monitors, health -----------------------------------------------------------------


def test_runs_list_run_chart_and_comparison(ui):
    from mlhub.store import runs

    ids = []
    with ui.db.tenant_scope(ui.me.tenant_id) as s:
        for lr in ("0.1", "0.01"):
            run = runs.create_run(s, ui.me.tenant_id, f"lr-{lr}", experiment="exp")
            runs.log_params(s, ui.me.tenant_id, run.id, {"lr": lr})
            runs.log_metrics(s, ui.me.tenant_id, run.id, [runs.MetricPoint("loss", 1.0 / (i + 1), i)
                                                          for i in range(5)])
            ids.append(run.id)
    ui.login()
    listed = ui.client.get("/ui/runs").text
    assert sorted(int(x) for x in re.findall(r'<tr data-run-id="(\d+)">', listed)) == ids
    shown = lambda **params: [int(x) for x in re.findall(r'<tr data-run-id="(\d+)">',  # noqa: E731
                                                         ui.client.get("/ui/runs", params=params).text)]
    assert shown(filter="params.lr < 0.05") == [ids[1]] and shown(experiment="nope") == []
    assert sorted(shown(order_by="params.lr")) == sorted(ids) and shown(status="running") == ids[::-1]
    assert ui.client.get("/ui/runs", params={"filter": "metrics.f1 >> 1"}).status_code == 422
    page = ui.client.get(f"/ui/runs/{ids[0]}").text
    assert 'id="params"' in page and '<div id="metrics-chart"' in page and "/ui/static/plotly.min.js" in page
    compare = ui.client.get("/ui/runs/compare", params={"ids": f"{ids[0]},{ids[1]}"})
    assert compare.status_code == 200 and '<div id="compare-chart"' in compare.text
    from fastapi.testclient import TestClient

    as_other = TestClient(ui.app, follow_redirects=False)
    assert as_other.post("/ui/login", data={"api_key": ui.other_key}).status_code == 303
    assert as_other.get(f"/ui/runs/{ids[0]}").status_code == 404


def test_the_other_pages_render(ui):
    from mlhub.domain.routing import VariantSpec

    ui.version("churn", {}), ui.version("churn", {})
    ui.ctx.experiments.create(ui.me, "churn-ab", "churn", [VariantSpec("control", 1), VariantSpec("treatment", 2)])
    ui.ctx.monitoring.create_monitor(ui.me, "churn-drift", "churn")
    hpo = ui.ctx.jobs.submit(ui.me, _spec())
    ui.login()
    assert 'data-experiment="churn-ab"' in ui.client.get("/ui/experiments").text
    exp = ui.client.get("/ui/experiments/churn-ab").text
    assert 'id="variants"' in exp and 'id="verdict"' in exp
    assert 'data-monitor="churn-drift"' in ui.client.get("/ui/monitors").text
    mon = ui.client.get("/ui/monitors/churn-drift").text
    assert 'id="drift-chart"' in mon and 'id="alerts"' in mon
    from mlhub.store.models import DriftReport

    monitor_id = ui.ctx.monitoring.get_monitor(ui.me, "churn-drift").id
    version_id = ui.ctx.registry.resolve(ui.me, "churn/2").id
    with ui.db.tenant_scope(ui.me.tenant_id) as s:
        for psi in (0.05, 0.4):
            s.add(DriftReport(tenant_id=ui.me.tenant_id, monitor_id=monitor_id, version_id=version_id, sample_size=100,
                              drifted=psi > 0.2, features={"<b>age</b>": {"psi": psi, "drifted": psi > 0.2}}))
    mon = ui.client.get("/ui/monitors/churn-drift").text
    data = re.search(r'<script type="application/json" id="drift-chart-data">(.*?)</script>', mon, re.S).group(1)
    assert "\\u003cb\\u003eage" in data and "0.4" in data  # one series per feature, escaped inside the JSON
    assert "&lt;b&gt;age&lt;/b&gt;" in mon  # the reports table
    trials = ui.client.get(f"/ui/hpo/{hpo.id}").text
    assert 'id="trials"' in trials and 'id="trials-chart"' in trials and 'id="params-chart"' in trials
    health = ui.client.get("/ui/health").text
    assert re.search(r'<table id="health">.*data-backend="database"', health, re.S)
    js = ui.client.get("/ui/static/plotly.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")


def test_the_rest_api_still_answers_under_api(ui):
    assert ui.client.get("/api/health").json()["ok"] is True
    doc = ui.client.get("/api/openapi.json").json()
    assert doc["servers"] == [{"url": "/api"}] and "/jobs" in doc["paths"]
    assert ui.client.get("/api/jobs").status_code == 401
    assert ui.client.get("/api/jobs", headers={"authorization": f"Bearer {ui.key}"}).json()["jobs"] == []
    assert ui.client.get("/").headers["location"] == "/ui/"


# --- mlhub ui ------------------------------------------------------------------------------------------------


def test_mlhub_ui_prints_the_console_url_and_opens_it_only_on_a_desktop(capsys, monkeypatch):
    import sys
    import webbrowser

    from mlhub.cli.main import main

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["ui"]) == 0
    url = capsys.readouterr().out.strip().splitlines()[0]
    assert re.fullmatch(r"http://[^/]+:\d+/ui/", url) and opened == []
    monkeypatch.setenv("DISPLAY", ":0")
    assert main(["ui", "--no-open"]) == 0 and opened == []
    assert main(["ui", "--json"]) == 0 and opened == []
    capsys.readouterr()
    assert main(["ui"]) == 0 and opened == [url]


def test_ten_thousand_jobs_and_a_thousand_versions_stay_fast(ui):
    """Pages read one page of rows (LIMIT/OFFSET) and aggregates: measured ~20 ms here; the bound is generous."""
    import time

    from mlhub.jobs import store
    from mlhub.jobs.service import job_row
    from mlhub.registry.service import register_version
    from mlhub.store.models import ModelVersion

    row = job_row(ui.me, _spec())
    with ui.db.tenant_scope(ui.me.tenant_id) as s:
        store.insert_jobs(s, [dict(row) for _ in range(10_000)])
        first = register_version(s, ui.me.tenant_id, model_name="big", framework="baseline", model_format="npz",
                                 artifact_id=None, artifact_sha256=None, created_by="test")
        s.add_all([ModelVersion(tenant_id=ui.me.tenant_id, model_id=first.model_id, version=n, framework="baseline",
                                model_format="npz", created_by="test", metrics={}, tags={}, stage="none",
                                status="ready") for n in range(2, 1001)])
    ui.login()
    for path in ("/ui/jobs", "/ui/jobs?page=399", "/ui/jobs?state=queued&queue=training&page=300", "/ui/models",
                 "/ui/models/big", "/ui/models/big?page=40"):
        started = time.perf_counter()
        page = ui.client.get(path)
        took = time.perf_counter() - started
        assert page.status_code == 200 and took < 2.0, (path, took)
        assert len(re.findall(r"<tr data-(?:job-id|version)=", page.text)) <= 25
    assert len(re.findall(r'<tr data-job-id="', ui.client.get("/ui/jobs?page=400").text)) == 25
    assert 'id="next-page"' not in ui.client.get("/ui/jobs?page=400").text


def test_errors_are_pages_not_json(ui):
    ui.login()
    for path, status in (("/ui/jobs/abc", 422), ("/ui/jobs/99999999", 404), ("/ui/nowhere", 404),
                         ("/ui/runs/compare?ids=1", 422)):
        r = ui.client.get(path)
        assert r.status_code == status and r.headers["content-type"].startswith("text/html"), (path, r.text)
        assert 'id="error"' in r.text and 'id="tenant"' in r.text or status == 422


def test_progress_reads_as_one_line():
    from serve_apps.ui.jobs import progress_text

    assert progress_text({"epoch": 3, "epochs": 10, "metrics": {"loss": 0.23456, "curve": [1, 2]}}) == \
        "epoch: 3, epochs: 10, loss: 0.2346"
    assert progress_text(None) == ""


def test_image_artifacts_are_served_to_their_tenant_only(ui):
    from fastapi.testclient import TestClient

    from mlhub.artifact_records import ArtifactService

    artifacts = ArtifactService(ui.db, ui.ctx.backends.artifacts)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    image = artifacts.upload(ui.me, png, media_type="image/png", name="confusion.png")
    model = artifacts.upload(ui.me, b"not an image", media_type="application/octet-stream", name="m.bin")
    ui.login()
    r = ui.client.get(f"/ui/artifacts/{image.id}")
    assert r.status_code == 200 and r.content == png and r.headers["content-type"] == "image/png"
    assert ui.client.get(f"/ui/artifacts/{model.id}").status_code == 404
    other = TestClient(ui.app, follow_redirects=False)
    other.post("/ui/login", data={"api_key": ui.other_key})
    assert other.get(f"/ui/artifacts/{image.id}").status_code == 404


def _alert(ui, monitor: str, principal=None) -> int:
    """An open alert of ``monitor`` (as the drift rule writes it), for the buttons to act on."""
    from mlhub.store.models import Alert, AlertRule
    from mlhub.store.types import utcnow

    who = principal or ui.me
    monitor_id = ui.ctx.monitoring.get_monitor(who, monitor).id
    with ui.db.tenant_scope(who.tenant_id) as s:
        rule = AlertRule(tenant_id=who.tenant_id, name=f"{monitor}-drifted", kind="drift", monitor_id=monitor_id)
        s.add(rule)
        s.flush()
        alert = Alert(tenant_id=who.tenant_id, rule_id=rule.id, dedup_key=f"drift:{monitor}", severity="critical",
                      message="age drifted", data={"monitor": monitor}, last_seen_at=utcnow())
        s.add(alert)
        s.flush()
        return alert.id


def test_alerts_are_acknowledged_and_resolved_from_the_monitor_page_through_the_audit(ui):
    from mlhub.audit import AuditLog

    ui.version("churn", {})
    ui.ctx.monitoring.create_monitor(ui.me, "churn-drift", "churn")
    alert_id = _alert(ui, "churn-drift")
    ui.login()
    page = ui.client.get("/ui/monitors/churn-drift").text
    assert f'action="/ui/alerts/{alert_id}/ack"' in page and f'action="/ui/alerts/{alert_id}/resolve"' in page
    token = ui.csrf("/ui/monitors/churn-drift")
    r = ui.client.post(f"/ui/alerts/{alert_id}/ack", data={"csrf_token": token, "monitor": "churn-drift"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/monitors/churn-drift"
    assert ui.ctx.monitoring.alerts.list_alerts(ui.me)[0].status == "acknowledged"
    page = ui.client.get("/ui/monitors/churn-drift").text
    assert "acknowledged" in page and f"/alerts/{alert_id}/ack" not in page  # only resolve is left
    ui.client.post(f"/ui/alerts/{alert_id}/resolve", data={"csrf_token": token, "monitor": "churn-drift"})
    assert ui.ctx.monitoring.alerts.list_alerts(ui.me)[0].status == "resolved"
    r = ui.client.post(f"/ui/alerts/{alert_id}/resolve", data={"csrf_token": token, "monitor": "churn-drift"})
    assert "already resolved" in ui.client.get(r.headers["location"]).text  # the refusal comes back as a flash
    actions = [e.action for e in AuditLog(ui.db).list(ui.me, action="alert.", limit=50)]
    assert "alert.ack" in actions and "alert.resolve" in actions
    # a redirect target that is not a monitor name goes to the monitors list, never elsewhere
    r = ui.client.post(f"/ui/alerts/{alert_id}/ack", data={"csrf_token": token, "monitor": "//evil.example/x"})
    assert r.headers["location"] == "/ui/monitors"


def test_another_tenants_alert_cannot_be_touched_and_writes_need_the_csrf_token(ui):
    ui.version("theirs", {}, principal=ui.other)
    ui.ctx.monitoring.create_monitor(ui.other, "their-drift", "theirs")
    alert_id = _alert(ui, "their-drift", principal=ui.other)
    ui.login()
    r = ui.client.post(f"/ui/alerts/{alert_id}/ack", data={"monitor": "their-drift"})
    assert r.status_code == 403
    r = ui.client.post(f"/ui/alerts/{alert_id}/ack", data={"csrf_token": ui.csrf(), "monitor": "their-drift"})
    assert "not found" in ui.client.get(r.headers["location"]).text
    assert ui.ctx.monitoring.alerts.list_alerts(ui.other)[0].status == "open"


def test_an_experiment_is_started_and_stopped_from_its_page(ui):
    from mlhub.domain.routing import VariantSpec

    ui.version("churn", {}), ui.version("churn", {})
    ui.ctx.experiments.create(ui.me, "churn-ab", "churn", [VariantSpec("control", 1), VariantSpec("treatment", 2)])
    ui.login()
    page = ui.client.get("/ui/experiments/churn-ab").text
    assert 'id="start-form"' in page and 'id="stop-form"' in page
    token = ui.csrf("/ui/experiments/churn-ab")
    r = ui.client.post("/ui/experiments/churn-ab/start", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/ui/experiments/churn-ab"
    assert ui.ctx.experiments.status(ui.me, "churn-ab").experiment.status == "running"
    assert "churn-ab: running" in ui.client.get(r.headers["location"]).text
    r = ui.client.post("/ui/experiments/churn-ab/start", data={"csrf_token": token})  # refused: it runs already
    assert "only a draft can start" in ui.client.get(r.headers["location"]).text
    ui.client.post("/ui/experiments/churn-ab/stop", data={"csrf_token": token})
    assert ui.ctx.experiments.status(ui.me, "churn-ab").experiment.status == "stopped"
    assert ui.client.post("/ui/experiments/churn-ab/delete", data={"csrf_token": token}).status_code == 404
