"""`mlhub start` on a cluster where an older mlhub deployed the API application on route prefix /api: ensure_api
sees the old prefix and redeploys it on /, so the REST API still answers under /api and the console appears
under /ui."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


def test_ensure_api_moves_an_api_app_deployed_on_the_old_prefix(serve_http, hub_settings):
    import httpx
    from ray import serve

    from serve_apps import control
    from serve_apps.api import APP_NAME, build_app

    settings = hub_settings.model_copy(update={"serve_http_port": int(serve_http.rsplit(":", 1)[1])})
    serve.run(build_app(settings.to_document()), name=APP_NAME, route_prefix="/api")  # as mlhub 0.1 did
    try:
        assert control.route_prefix(APP_NAME) == "/api"
        assert control.ensure_api(settings) == "RUNNING"
        assert control.route_prefix(APP_NAME) == "/"
        assert control.ensure_api(settings) == "RUNNING"  # idempotent now
        with httpx.Client(base_url=serve_http, timeout=30) as http:
            assert http.get("/api/health").json()["ok"] is True
            login = http.get("/ui/login")
            assert login.status_code == 200 and 'name="api_key"' in login.text
    finally:
        serve.delete(APP_NAME)  # free the cluster's CPUs for the tests that follow
