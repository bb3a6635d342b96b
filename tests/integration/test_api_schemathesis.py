"""Schemathesis against the REST API's own OpenAPI document, in process (ASGI, no Ray), over a real PostgreSQL
database (row-level security on) with a valid API key: valid and invalid inputs for every operation, and not one
answer may be a 5xx. The app is mounted under ``/api`` exactly as the API application's ingress mounts it.

Its own database (not the session's shared one): fuzzed job submissions must never reach an orchestrator."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

pytestmark = pytest.mark.postgres

EXAMPLES_PER_OPERATION = 40  # per operation and mode (27 operations)


def under_api(app):
    """``app`` as Ray Serve runs it, mounted at /api: every request carries ``root_path="/api"``."""

    async def mounted(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "root_path": "/api"}
        await app(scope, receive, send)

    return mounted


@pytest.fixture(scope="module")
def seeded_api(pg_server_url, tmp_path_factory):
    from mlhub.config import load_settings
    from mlhub.store.database import Database
    from tests.conftest import make_pg_database
    from tests.unit.test_api_routes import Seeded

    url, drop = make_pg_database(pg_server_url)
    db = Database(url)
    db.upgrade()
    db.dispose()
    settings_ = load_settings(home=tmp_path_factory.mktemp("api_fuzz"), database_url=url, redis_url=None,
                              mongodb_uri=None, ray_address=None)
    api = Seeded(settings_)
    # something to find: a job (cancelled, so retry works), a run with metrics, a model with two versions
    job_id = api.job()
    api.client.post(f"/api/jobs/{job_id}/cancel")
    api.run("seed", {"loss": [1.0, 0.5]}, {"lr": 0.1})
    api.version("iris", {"accuracy": 0.9})
    api.version("iris", {"accuracy": 0.95})
    yield api
    api.ctx.backends.close()
    drop()


@pytest.fixture(scope="module")
def api_schema(seeded_api):
    return schemathesis.openapi.from_asgi("/api/openapi.json", under_api(seeded_api.app))


def test_every_operation_is_in_the_document(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert len(found) == 27 and ("POST", "/jobs/{job_id}/retry") in found and ("GET", "/health") in found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_the_api_answer_5xx(api_schema, seeded_api, mode):
    """Each operation gets its own Hypothesis run (a failure shrinks to its smallest case and names it)."""
    headers = {"authorization": f"Bearer {seeded_api.key}"}
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
        def check(case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:  # nothing to break: no parameters (GET /health) or no negative value for them
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as exc:
            raise AssertionError(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}") from exc
