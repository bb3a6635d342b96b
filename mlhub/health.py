"""Health of every backend: ok, down or not configured, with latency. A down backend is reported, never raised."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from mlhub.config import Settings
from mlhub.errors import MlhubError, redact


class HealthStatus(StrEnum):
    OK = "ok"
    DOWN = "down"
    NOT_CONFIGURED = "not configured"


@dataclass(frozen=True)
class BackendHealth:
    name: str
    kind: str
    status: HealthStatus
    latency_ms: float | None
    detail: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


def _probe(name: str, kind: str, fn: Callable[[], str]) -> BackendHealth:
    start = time.perf_counter()
    try:
        detail = fn()
    except MlhubError as exc:
        return BackendHealth(name, kind, HealthStatus.DOWN, None, exc.message)
    except Exception as exc:  # noqa: BLE001 - a health check reports every failure, whatever its type
        return BackendHealth(name, kind, HealthStatus.DOWN, None, redact(f"{type(exc).__name__}: {exc}"))
    latency = (time.perf_counter() - start) * 1000
    return BackendHealth(name, kind, HealthStatus.OK, round(latency, 2), detail)


def _tcp_ping(host: str, port: int, timeout: float) -> None:
    with socket.create_connection((host, port), timeout=timeout):
        pass


def ray_address_file(settings: Settings):
    return settings.home / "ray" / "address"


def _ray_target(settings: Settings) -> str | None:
    if settings.ray_address:
        return settings.ray_address
    path = ray_address_file(settings)
    return path.read_text().strip() if path.exists() else None


def check_ray(settings: Settings) -> BackendHealth:
    target = _ray_target(settings)
    if not target or target == "auto":
        return BackendHealth("ray", "ray", HealthStatus.NOT_CONFIGURED, None,
                             "no cluster: `mlhub start` launches a local head")
    parts = urlsplit(target if "://" in target else f"ray://{target}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 6380

    def probe() -> str:
        _tcp_ping(host, port, settings.backend_timeout_s)
        return f"{host}:{port} reachable"

    return _probe("ray", "ray", probe)


def check_database(settings: Settings, db=None) -> BackendHealth:
    from mlhub.store.database import Database

    kind = "sqlite" if settings.is_embedded_database or settings.effective_database_url.startswith("sqlite") \
        else "postgresql"
    own = db is None
    database = db or Database.from_settings(settings)

    def probe() -> str:
        database.ping()
        rev = database.current_revision()
        return f"{database.safe_url} (schema {rev or 'not created'})"

    try:
        return _probe("database", kind, probe)
    finally:
        if own:
            database.dispose()


def check_redis(settings: Settings) -> BackendHealth:
    if settings.redis_url is None:
        return BackendHealth("redis", "redis", HealthStatus.NOT_CONFIGURED, None, "cache: in-process LRU")
    from mlhub.cache import open_cache

    def probe() -> str:
        cache = open_cache(settings)
        try:
            cache.ping()
        finally:
            cache.close()
        return redact(settings.redis_url.get_secret_value())

    return _probe("redis", "redis", probe)


def check_mongodb(settings: Settings) -> BackendHealth:
    if settings.mongodb_uri is None:
        return BackendHealth("mongodb", "mongodb", HealthStatus.NOT_CONFIGURED, None,
                             f"artifacts: filesystem at {settings.artifacts_dir}")
    from mlhub.artifacts import open_artifact_store

    def probe() -> str:
        open_artifact_store(settings).ping()
        return redact(settings.mongodb_uri.get_secret_value())

    return _probe("mongodb", "mongodb", probe)


def check_all(settings: Settings, db=None) -> list[BackendHealth]:
    """One entry per backend. Never raises for a down backend."""
    return [check_database(settings, db), check_redis(settings), check_mongodb(settings), check_ray(settings)]


def any_configured_down(report: list[BackendHealth]) -> bool:
    return any(h.status is HealthStatus.DOWN for h in report)
