"""One Ray cluster for the whole integration session (started on first use), and one orchestrator on a
PostgreSQL database shared by the Ray tests; each test works as its own fresh tenant."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port

ORCHESTRATOR = "mlhub-orchestrator-test"


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    temp = tempfile.mkdtemp(prefix="mlhub-ray-")  # short: Ray's socket paths are length-limited
    metrics_port = free_port()
    # the dashboard serves Ray's state API, which Ray Train's placement-group cleaner needs to notice that a
    # cancelled or preempted training job's controller is gone (as on a real `mlhub start` head)
    ray.init(num_cpus=2, include_dashboard=True, dashboard_port=free_port(), namespace="mlhub", log_to_driver=False,
             _temp_dir=temp, _metrics_export_port=metrics_port, logging_level="WARNING")
    yield {"metrics_port": metrics_port, "temp_dir": temp}
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_http(ray_cluster):
    """Ray Serve on the shared cluster, HTTP on a free port: yields the base URL (Serve's default proxy)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def hub_settings(ray_cluster, migrated_pg_url, tmp_path_factory):
    """Settings of the shared test deployment: PostgreSQL, filesystem artifacts, a data root."""
    from mlhub.config import load_settings

    home = tmp_path_factory.mktemp("hub_home")
    data = home / "data"
    data.mkdir()
    # training is preemptible (opt-in per queue): tests/integration/test_torch_ray.py preempts a job
    return load_settings(home=home, database_url=migrated_pg_url, max_concurrent_jobs=4, redis_url=None,
                         mongodb_uri=None, ray_address=None, api_key=None, preemptible_queues=["training"],
                         preempt_after_s=2.0)


@pytest.fixture(scope="session")
def orchestrator(hub_settings):
    import ray

    from actors import orchestrator as orch

    actor = orch.start(hub_settings.to_document(), name=ORCHESTRATOR)
    ray.get(actor.ping.remote(), timeout=120)
    yield actor
    try:
        ray.get(actor.shutdown.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - best effort at session end
        pass
    ray.kill(actor, no_restart=True)


@pytest.fixture
def hub(hub_settings, orchestrator):
    """A Hub acting as a brand-new tenant of the shared deployment."""
    from mlhub.client import Hub
    from mlhub.store.database import Database
    from mlhub.tenancy import TenantService

    db = Database(hub_settings.effective_database_url)
    _, key = TenantService(db).create_tenant(f"it-{uuid.uuid4().hex[:10]}")
    db.dispose()
    h = Hub(hub_settings, api_key=key)
    h.api_key = key  # for tests that drive the CLI as this tenant
    yield h
    h.close()


@pytest.fixture
def data_dir(hub_settings) -> Path:
    path = hub_settings.home / "data" / uuid.uuid4().hex[:8]
    path.mkdir()
    return path


def wait_until_gone(pid: int, what: str, timeout: float = 15) -> None:
    """Fail the test unless process ``pid`` has exited within ``timeout`` seconds."""
    import os
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"{what} {pid} still alive after cancellation")


def pid_of(hub, job_id: int, timeout: float = 60.0) -> int:
    """The worker pid a job's attempt printed when it started (its first log line)."""
    import re
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"started \(pid (\d+)\)", hub.job(job_id).logs())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never started")


__all__ = ["ORCHESTRATOR", "os", "pid_of"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path):
    """A fresh, migrated database of each kind (a test module may override it)."""
    from mlhub.store.database import Database

    url = f"sqlite:///{tmp_path / 'd.db'}" if request.param == "sqlite" else request.getfixturevalue("fresh_pg_url")
    database = Database(url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def redis_url() -> str:
    from tests.conftest import service_url

    return service_url("redis")


@pytest.fixture
def prefix(redis_url):
    """A per-test Redis key namespace; every key under it is deleted afterwards."""
    import redis

    ns = f"mlhub-test:{uuid.uuid4().hex}:"
    yield ns
    raw = redis.Redis.from_url(redis_url)
    try:
        stale = list(raw.scan_iter(match=ns + "*"))
        if stale:
            raw.delete(*stale)
    finally:
        raw.close()
