"""Fixtures shared by every test layer.

Services: a test that needs PostgreSQL, Redis or MongoDB asks for it through :func:`service_url`. When the
URL variable is unset the test is skipped, unless ``MLHUB_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import socket

# Ray reads its auth mode once, at import: the whole session (in-process CLI calls, the shared cluster)
# uses token auth, as mlhub's own clients do.
os.environ.setdefault("RAY_AUTH_MODE", "token")
from urllib.parse import urlsplit

import pytest

SERVICE_VARS = {
    "postgres": "MLHUB_TEST_DATABASE_URL",
    "redis": "MLHUB_TEST_REDIS_URL",
    "mongodb": "MLHUB_TEST_MONGODB_URI",
}


def services_required() -> bool:
    return os.environ.get("MLHUB_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def service_url(name: str, *, required: bool | None = None) -> str:
    """URL of a test service, or skip (fail under MLHUB_REQUIRE_SERVICES=1) when it is not configured."""
    var = SERVICE_VARS[name]
    url = os.environ.get(var)
    must = services_required() if required is None else required
    if not url:
        if must:
            pytest.fail(f"{var} is not set but MLHUB_REQUIRE_SERVICES=1: {name} tests must run")
        pytest.skip(f"{var} not set")
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own MLHUB_HOME and none of the developer's MLHUB_* settings."""
    for key in list(os.environ):
        if key.startswith("MLHUB_") and not key.startswith("MLHUB_TEST_") and key != "MLHUB_REQUIRE_SERVICES":
            monkeypatch.delenv(key, raising=False)
    home = tmp_path_factory.mktemp("mlhub_home")
    monkeypatch.setenv("MLHUB_HOME", str(home))
    monkeypatch.chdir(home)  # so a developer's .env is never read
    yield


@pytest.fixture
def mlhub_home():
    from pathlib import Path

    return Path(os.environ["MLHUB_HOME"])


# --- PostgreSQL databases made for tests ---------------------------------------------------------------


def _pg_admin_engine(server_url: str):
    from sqlalchemy import create_engine

    return create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=__import__("sqlalchemy").pool.NullPool)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the PostgreSQL server given to tests (its database is only used to create others)."""
    url = service_url("postgres")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_pg_database(server_url: str) -> tuple[str, callable]:
    """Create an empty database on the test server; return its URL and a function that drops it."""
    import uuid

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"mlhub_t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin_engine(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture
def fresh_pg_url(pg_server_url):
    """An empty PostgreSQL database for one test, dropped afterwards."""
    url, drop = make_pg_database(pg_server_url)
    yield url
    drop()


@pytest.fixture(scope="session")
def migrated_pg_url(pg_server_url):
    """A PostgreSQL database at the head schema, shared by the session's tests (each uses its own tenants)."""
    from mlhub.store.database import Database

    url, drop = make_pg_database(pg_server_url)
    db = Database(url)
    db.upgrade()
    db.dispose()
    yield url
    drop()
