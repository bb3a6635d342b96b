"""The web console over PostgreSQL, where every tenant transaction runs as the non-owner app role under row-level
security: the session token's key lookup, the pages, and another tenant's model, all through the same RLS walls
as the REST API. (tests/unit/test_ui.py covers the console in depth on SQLite.)"""

from __future__ import annotations

import re
import uuid

import pytest

pytestmark = pytest.mark.postgres


@pytest.fixture
def console(migrated_pg_url, tmp_path):

    from mlhub.config import load_settings
    from mlhub.tenancy import TenantService
    from serve_apps.api import create_server_app

    settings = load_settings(home=tmp_path / "home", database_url=migrated_pg_url, redis_url=None, mongodb_uri=None,
                             ray_address=None)
    settings.home.mkdir(parents=True, exist_ok=True)
    app = create_server_app(settings)
    tenants = TenantService(app.state.mlhub.backends.db)
    keys = [tenants.create_tenant(f"ui-pg-{uuid.uuid4().hex[:8]}")[1] for _ in range(2)]
    yield app, keys
    app.state.mlhub.backends.close()


def test_login_pages_and_isolation_under_row_level_security(console):
    from fastapi.testclient import TestClient

    from mlhub.artifact_records import ArtifactService
    from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
    from mlhub.registry.service import register_version
    from mlhub.tenancy import TenantService

    app, (key, other_key) = console
    ctx = app.state.mlhub
    other = TenantService(ctx.backends.db).authenticate(other_key, source="api")
    art = ArtifactService(ctx.backends.db, ctx.backends.artifacts).upload(
        other, b"x" * 64, media_type=MODEL_MEDIA_TYPES_BY_FORMAT["npz"], name="m.npz")
    with ctx.backends.db.tenant_scope(other.tenant_id) as s:
        register_version(s, other.tenant_id, model_name="theirs", framework="baseline", model_format="npz",
                         artifact_id=art.id, artifact_sha256=art.sha256, created_by="test")

    client = TestClient(app, follow_redirects=False)
    assert client.post("/ui/login", data={"api_key": "mlh_nope1234_" + "x" * 32}).status_code == 401
    r = client.post("/ui/login", data={"api_key": key})
    assert r.status_code == 303 and key not in r.headers["set-cookie"]
    for path in ("/ui/jobs", "/ui/runs", "/ui/models", "/ui/experiments", "/ui/monitors", "/ui/health"):
        assert client.get(path).status_code == 200, path
    assert 'data-model="theirs"' not in client.get("/ui/models").text
    assert client.get("/ui/models/theirs").status_code == 404
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/jobs").text).group(1)
    assert client.post("/ui/logout", data={"csrf_token": token}).status_code == 303
