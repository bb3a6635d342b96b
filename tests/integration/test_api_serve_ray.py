"""The REST API deployed as mlhub start deploys it: a Ray Serve application on route prefix / that answers under /api
(and serves the web console under /ui), over HTTP through Serve's proxy on the shared test cluster. Health without a
key, 401 without one elsewhere, a tenant's own job, 404 for another tenant's, and the console's login page."""

from __future__ import annotations

import uuid

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


@pytest.fixture(scope="module")
def api_url(serve_http, hub_settings):
    from ray import serve

    from serve_apps.api import APP_NAME, REST_PREFIX, ROUTE_PREFIX, build_app

    serve.run(build_app(hub_settings.to_document()), name=APP_NAME, route_prefix=ROUTE_PREFIX)
    yield serve_http + REST_PREFIX
    serve.delete(APP_NAME)  # free the cluster's CPUs for the tests that follow


def test_the_api_on_serve_authenticates_and_isolates_tenants(api_url, hub_settings):
    import httpx

    from mlhub.store.database import Database
    from mlhub.tenancy import TenantService

    db = Database(hub_settings.effective_database_url)
    tenants = TenantService(db)
    key = tenants.create_tenant(f"api-{uuid.uuid4().hex[:8]}")[1]
    other_key = tenants.create_tenant(f"api-{uuid.uuid4().hex[:8]}")[1]
    db.dispose()
    mine, theirs = ({"authorization": f"Bearer {k}"} for k in (key, other_key))

    with httpx.Client(base_url=api_url, timeout=30) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["ok"] is True
        assert {b["name"]: b["kind"] for b in health.json()["backends"]}["database"] == "postgresql"

        r = http.get("/jobs")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"

        spec = {"kind": "training", "name": "api-serve", "framework": "sklearn", "model": "random_forest",
                "dataset": {"source": "sklearn", "name": "iris"}}
        r = http.post("/jobs", json=spec, headers=mine)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        # cancelled at once: a queued job never reaches the orchestrator that other tests run on this database
        assert http.post(f"/jobs/{job_id}/cancel", headers=mine).json()["state"] in {"cancelled", "running"}

        r = http.get(f"/jobs/{job_id}", headers=mine)
        assert r.status_code == 200 and r.json()["name"] == "api-serve"
        r = http.get(f"/jobs/{job_id}", headers=theirs)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert http.get("/jobs", headers=theirs).json()["jobs"] == []

        doc = http.get("/openapi.json").json()
        assert doc["servers"] == [{"url": "/api"}] and "/jobs/{job_id}/retry" in doc["paths"]
        assert http.get("/docs").status_code == 200

    console = httpx.get(api_url.removesuffix("/api") + "/ui/login", timeout=30)  # same application, beside /api
    assert console.status_code == 200 and 'name="api_key"' in console.text
