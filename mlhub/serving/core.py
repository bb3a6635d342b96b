"""What one inference replica knows and does, without Ray: the Serve deployment in
``serve_apps/inference.py`` is a thin async shell over :class:`InferenceCore`.

Per request: the bearer key -> tenant (remembered a few seconds), the model name -> the tenant's active
endpoint -> a version (``name@alias`` resolved per request through a short-lived memory that is read again
off the request path, so a promotion is served within ``MLHUB_SERVE_ALIAS_TTL_S`` plus one request, without a
redeploy, and a database blip does not fail requests; a running A/B or canary experiment on the
model picks the variant instead), the version -> a loaded :class:`~mlhub.registry.api.ReadyModel` (kept in
the replica's LRU by ``@serve.multiplexed``, keyed ``"<tenant>:<version id>"``, warmed up on load), the body
-> rows checked against the version's schema, then a batched predict and a sampled log record.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from mlhub.audit import Principal
from mlhub.backends import Backends
from mlhub.config import Settings
from mlhub.errors import BackendUnavailable, MlhubError, ModelLoadError, NotFoundError
from mlhub.registry.api import ReadyModel
from mlhub.registry.rows import DELETED, VersionInfo, aliases_of
from mlhub.registry.service import RegistryService
from mlhub.serving.auth import Authenticator
from mlhub.serving.endpoints import EndpointInfo, EndpointService
from mlhub.serving.payload import PredictRequest
from mlhub.serving.prediction_log import LoggedPrediction, PredictionLogger
from mlhub.store.models import ModelVersion, RegisteredModel

log = logging.getLogger(__name__)

__all__ = ["InferenceCore", "Target", "TtlMemo", "model_key", "warm_up_rows"]


class TtlMemo:
    """A small thread-safe memo with a time-to-live (the replica's short memory of lookups).

    With a ``refresher`` (an executor), a known key whose value is older than ``ttl_s`` is answered from memory
    while the executor reads it again (stale-while-revalidate): the request path never waits on the database
    for a key it has seen, and a database blip does not fail requests. A refresh that fails because a backend
    is unavailable keeps the old value, for at most ``stale_s`` past its time-to-live; one that fails with an
    answer (the endpoint or alias is gone: any other :class:`MlhubError`) forgets the key, so the next request
    reads it again itself and gets that answer. Without a refresher, an expired value is read again in line."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic, *,
                 refresher: Executor | None = None, stale_s: float = 60.0) -> None:
        self.ttl_s, self.max_entries, self._clock = ttl_s, max_entries, clock
        self.stale_s, self._refresher = stale_s, refresher
        self._data: dict[Any, tuple[float, Any]] = {}
        self._refreshing: set[Any] = set()
        self._lock = threading.Lock()
        self.refresh_failures = 0

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        now = self._clock()
        hit = self._data.get(key)
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            if self._refresher is not None and now < hit[0] + self.stale_s:
                self._refresh_later(key, make)
                return hit[1]
        value = make()
        self._put(key, value, now)
        return value

    def _put(self, key: Any, value: Any, now: float) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()  # rare; lookups simply repeat
            self._data[key] = (now + self.ttl_s, value)

    def _refresh_later(self, key: Any, make: Callable[[], Any]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
        try:
            self._refresher.submit(self._refresh, key, make)
        except RuntimeError:  # shut down: the old value stands until it is too old
            with self._lock:
                self._refreshing.discard(key)

    def _refresh(self, key: Any, make: Callable[[], Any]) -> None:
        try:
            self._put(key, make(), self._clock())
        except Exception as exc:  # noqa: BLE001 - the refresh thread must survive anything
            self.refresh_failures += 1
            if isinstance(exc, MlhubError) and not isinstance(exc, BackendUnavailable):
                with self._lock:  # an answer, not an outage: the next request reads it again and gets it
                    self._data.pop(key, None)
            else:  # an outage (or a driver error): the old value stands until it is too old
                log.warning("serving from memory: reading %r again failed (%s)", key, getattr(exc, "message", exc))
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


@dataclass(frozen=True)
class Target:
    """Where one request goes: the version that answers, and any experiment that chose it."""

    model_key: str
    version: VersionInfo
    endpoint: EndpointInfo
    experiment_id: int | None = None
    variant: str | None = None
    request_key: str | None = None
    shadows: tuple[tuple[str, str], ...] = ()  # (variant, model key): copies whose answers are discarded


def model_key(tenant_id: str, version_id: int) -> str:
    return f"{tenant_id}:{version_id}"


def warm_up_rows(info: VersionInfo, n: int = 2) -> np.ndarray:
    """Rows to warm a freshly loaded model with: each feature at its training mean (0 without statistics)."""
    feats = (info.input_schema or {}).get("features") or []
    stats = ((info.reference_stats or {}).get("features") or {})
    if not feats:
        return np.zeros((0, 0))
    row = []
    for f in feats:
        mean = (stats.get(f["name"]) or {}).get("mean")
        row.append(float(mean) if isinstance(mean, int | float) and np.isfinite(mean) else 0.0)
    return np.tile(np.asarray(row, dtype=np.float64), (n, 1))


class InferenceCore:
    def __init__(self, settings: Settings, *, router: Any | None = None) -> None:
        self.settings = settings
        self.backends = Backends(settings)
        self.backends.ensure_schema()
        db = self.backends.db
        self.auth = Authenticator(db, ttl_s=settings.api_key_cache_ttl_s, source="serve")
        # Redis (when configured) carries promotions across processes at once; the memo below bounds how long
        # this replica trusts an answer either way
        self.registry = RegistryService(db, cache=self.backends.cache if settings.redis_url else None,
                                        cache_ttl_s=settings.cache_ttl_s)
        self.endpoints = EndpointService(db)
        self.logger = PredictionLogger(db, sample_rate=settings.prediction_log_sample_rate)
        self.router = router if router is not None else _experiment_router(db, settings.serve_alias_ttl_s)
        _preload_model_formats()
        # known names are re-read off the request path (one thread), so a promotion shows within the TTL plus
        # one request, and the event loop never waits on the database for them
        self._refresher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlhub-serve-refresh")
        stale_s = max(60.0, 10 * settings.serve_alias_ttl_s)
        self._endpoint_memo = TtlMemo(settings.serve_alias_ttl_s, refresher=self._refresher, stale_s=stale_s)
        self._version_memo = TtlMemo(settings.serve_alias_ttl_s, refresher=self._refresher, stale_s=stale_s)
        self.loads = 0

    # --- per request -------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        return self.auth.principal(authorization)

    def endpoint(self, principal: Principal, name: str) -> EndpointInfo:
        return self._endpoint_memo.get((principal.tenant_id, name), lambda: self._endpoint_or_none(principal, name)) \
            or self._not_deployed(name)

    def target(self, principal: Principal, name: str, request_key: str | None = None) -> Target:
        ep = self.endpoint(principal, name)
        route = self.router.route(principal.tenant_id, ep.model_id, request_key) if self.router else None
        if route is not None:
            info = self.version_by_id(principal, route.version_id)
            shadows = tuple((v, model_key(principal.tenant_id, vid)) for v, vid in route.shadows)
            return Target(model_key(principal.tenant_id, info.id), info, ep, route.experiment_id, route.variant,
                          route.request_key, shadows)
        info = self._version_memo.get((principal.tenant_id, ep.ref),
                                      lambda: self.registry.resolve(principal, ep.ref))
        return Target(model_key(principal.tenant_id, info.id), info, ep, request_key=request_key)

    def version_by_id(self, principal: Principal, version_id: int) -> VersionInfo:
        def read() -> VersionInfo:
            with self.backends.db.tenant_scope(principal.tenant_id, readonly=True) as s:
                row = s.scalar(select(ModelVersion).where(ModelVersion.id == version_id,
                                                          ModelVersion.tenant_id == principal.tenant_id))
                if row is None or row.status == DELETED:
                    raise NotFoundError(f"model version {version_id} not found")
                name = s.scalar(select(RegisteredModel.name).where(RegisteredModel.id == row.model_id))
                aliases = tuple(a for a, n in aliases_of(s, row.model_id).items() if n == row.version)
                return VersionInfo.from_row(row, name, aliases)

        return self._version_memo.get(("id", principal.tenant_id, version_id), read)

    def load(self, key: str) -> ReadyModel:
        """Load the version ``key`` names (``"<tenant>:<version id>"``) and warm it up."""
        tenant_id, _, vid = key.partition(":")
        principal = Principal(tenant_id=tenant_id, actor="serve", source="serve")
        info = self.version_by_id(principal, int(vid))
        _, raw = self.registry.load(principal, info.ref, self.backends.artifacts)
        model = ReadyModel(info, raw)
        warm = warm_up_rows(info)
        if warm.size:
            try:
                model.model.predict(warm)
            except Exception as exc:  # a model that cannot score its own schema is not servable
                raise ModelLoadError(f"{info.ref} failed its warm-up prediction: {exc}") from exc
        self.loads += 1
        return model

    @staticmethod
    def rows(model: ReadyModel, request: PredictRequest) -> np.ndarray:
        """The request's rows as the float matrix the model takes (ValidationError naming bad rows)."""
        return model.validate(request.inputs)

    def record(self, principal: Principal, target: Target, x: np.ndarray | None, outputs: list | None,
               latency_ms: float, status: int, *, request_id: str | None = None, variant: str | None = None,
               model_key_used: str | None = None) -> None:
        """Log one prediction (sampled; always inside an experiment)."""
        in_experiment = target.experiment_id is not None
        if not self.logger.wanted(in_experiment=in_experiment):
            return
        version_id = int((model_key_used or target.model_key).partition(":")[2])
        self.logger.log(LoggedPrediction(
            principal.tenant_id, target.endpoint.name, version_id,
            x if x is not None else [], outputs, latency_ms, status, request_id or uuid.uuid4().hex,
            target.experiment_id, variant or target.variant))

    def metadata(self, principal: Principal, name: str) -> dict[str, Any]:
        ep = self.endpoint(principal, name)
        info = self.target(principal, name).version if ep.alias else self.registry.resolve(principal, ep.ref)
        return {"model": name, "endpoint": {"ref": ep.ref, "alias": ep.alias, "status": ep.status},
                "version": info.version, "label": info.label, "framework": info.framework,
                "aliases": list(info.aliases), "stage": info.stage, "metrics": info.metrics,
                "input_schema": info.input_schema, "output_schema": info.output_schema,
                "created_at": info.created_at.isoformat()}

    def record_outcome(self, principal: Principal, experiment_id: int, request_key: str, value: float) -> Any:
        from mlhub.experiments.service import ExperimentService

        return ExperimentService(self.backends.db).record_outcome(principal, experiment_id, request_key, value)

    # --- lifecycle ---------------------------------------------------------------------------------

    def check_health(self) -> None:
        """Raise when this replica cannot do its work and a new one would (Serve then replaces it). A database
        outage is not such a case: every replica would fail alike, so requests answer 503 instead."""
        if not self.logger.alive:
            raise RuntimeError("the prediction log writer thread died")

    def close(self) -> None:
        self._refresher.shutdown(wait=False, cancel_futures=True)
        if self.router is not None:
            self.router.close()
        self.logger.close()
        self.backends.close()

    # --- helpers -----------------------------------------------------------------------------------

    def _endpoint_or_none(self, principal: Principal, name: str) -> EndpointInfo | None:
        try:
            return self.endpoints.get(principal, name)
        except NotFoundError:
            return None  # remembered briefly too: a scan of unknown names costs no query each

    @staticmethod
    def _not_deployed(name: str) -> EndpointInfo:
        raise NotFoundError(f"model {name!r} is not deployed (mlhub deploy {name})")


def _preload_model_formats() -> None:
    """Import the model loaders now, while the replica starts: skops pulls in torch through scikit-learn's
    array-API layer (seconds here), which would otherwise stall the first request of every new replica."""
    try:
        import skops.io  # noqa: F401
    except ImportError:  # pragma: no cover - skops is a dependency
        pass


def _experiment_router(db, ttl_s: float):
    try:
        from mlhub.experiments.router import ExperimentRouter
    except ImportError:  # pragma: no cover - experiments are part of the package; tolerated while building
        return None
    return ExperimentRouter(db, ttl_s=ttl_s)
