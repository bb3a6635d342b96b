"""The inference application: one Ray Serve app serving every deployed model of every tenant.

Routes (route prefix ``/v1``; every route needs ``Authorization: Bearer <api key>``):

- ``POST /v1/models/{name}/predict``  ``{"inputs": rows | columns, "key": "...", "proba": false}`` ->
  ``{"model", "version", "predictions", "request_id", "variant"?, "experiment_id"?}``
- ``GET  /v1/models/{name}``          the endpoint and the version it serves now, with its schema
- ``WS   /v1/models/{name}/stream``   one JSON predict document per message in, one answer per message out
- ``POST /v1/experiments/{id}/outcomes``  ``{"key": ..., "value": ...}`` or ``{"outcomes": [...]}``

Everything that can be decided without Ray lives in :mod:`mlhub.serving` (``InferenceCore``); this module is
the async shell: ``@serve.multiplexed`` keeps loaded versions in an LRU per replica, ``@serve.batch`` scores
the rows of concurrent requests in one call per model, errors become JSON with a 4xx/5xx status (never a
traceback), and overload is refused by Serve itself (``max_queued_requests`` -> 503) instead of queueing
without bound.

Deploy with ``mlhub deploy`` / ``mlhub start``, or ``serve run cluster/serve.yaml`` (``build_app`` is the
application builder both use).
"""


import asyncio
import gc
import itertools
import logging
import os
import time
from collections import OrderedDict
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from ray import serve

from mlhub.config import load_settings
from mlhub.errors import AuthenticationError, MlhubError, ModelLoadError, ValidationError
from mlhub.serving.payload import PayloadError, dumps_json, json_safe, parse_predict_body

log = logging.getLogger("mlhub.serve.inference")

APP_NAME = "mlhub-inference"
ROUTE_PREFIX = "/v1"
DEPLOYMENT_NAME = "InferenceServer"


class _RequestIds:
    """Request ids for requests that bring none: 32 hex characters like a uuid4's, a random prefix per replica and
    a counter (a uuid4 reads the OS's random source on every request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def serve_lru(obj: Any) -> OrderedDict | None:
    """The LRU of loaded models that ``@serve.multiplexed`` keeps on ``obj`` (Ray 2.60 keeps it as ``models`` of a
    wrapper it sets on the instance at the first call); None when this Ray keeps it elsewhere."""
    models = getattr(getattr(obj, "__serve_multiplex_wrapper", None), "models", None)
    return models if isinstance(models, OrderedDict) else None


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer encoded by orjson (Starlette's JSONResponse builds a new standard encoder per answer)."""
    return Response(dumps_json(doc), status_code=status, headers=headers, media_type="application/json")


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for an error on an inference route."""
    if isinstance(exc, ModelLoadError):  # the server's problem, not the caller's
        return 503, {"error": {"code": exc.code, "message": exc.message}}
    if isinstance(exc, MlhubError):
        details = exc.details if isinstance(exc, ValidationError | PayloadError) else {}
        return exc.http_status, {"error": {"code": exc.code, "message": exc.message, "details": details}}
    log.exception("unexpected error on an inference route", exc_info=exc)
    return 500, {"error": {"code": "internal", "message": "internal error (logged on the server)"}}


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it passes ``limit`` bytes, whatever Content-Length claimed."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadError(f"request body of {int(declared):,} bytes is over the limit of {limit:,}", status=413)
    if declared and declared.isdigit():  # the common case: Starlette reads exactly that many bytes
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(f"request body is over the limit of {limit:,} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _server_class(max_models: int):
    """The deployment class; built per application because ``@serve.multiplexed`` takes its LRU size at
    decoration time."""
    app = FastAPI(title="mlhub inference", version="1", docs_url="/docs", openapi_url="/openapi.json")

    @serve.ingress(app)
    class InferenceServer:
        def __init__(self, settings_doc: dict[str, Any]) -> None:
            from mlhub.serving.core import InferenceCore

            self.settings = load_settings(**settings_doc)
            self.core = InferenceCore(self.settings)
            self._score.set_max_batch_size(self.settings.serve_max_batch_size)
            self._score.set_batch_wait_timeout_s(self.settings.serve_batch_wait_timeout_s)
            self._background: set[asyncio.Task] = set()
            self._request_ids = _RequestIds()
            self._lru: OrderedDict | None = None  # Serve's model LRU, once the first load created it
            self.cache_hits = 0
            # everything imported and built so far lives as long as the replica: keep it out of every
            # garbage collection (a full pass over torch's objects, which skops imports, costs milliseconds)
            gc.collect()
            gc.freeze()

        # --- model LRU and batching ------------------------------------------------------------------

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def model(self, key: str):
            return await asyncio.to_thread(self.core.load, key)

        async def loaded(self, key: str):
            """The model version ``key``. One already loaded is read straight from the LRU ``@serve.multiplexed``
            keeps, and marked most recently used as it would (its per-call wrapper and metric cost ~3% of a light
            model's throughput); the rest go through it: load, warm-up, eviction, the controller told."""
            lru = self._lru
            if lru is not None:
                found = lru.get(key)
                if found is not None:
                    lru.move_to_end(key)
                    self.cache_hits += 1
                    return found
            found = await self.model(key)
            if lru is None:
                self._lru = serve_lru(self)
            return found

        def cache_info(self) -> dict[str, Any]:
            """What this replica holds (through a Serve handle: ``handle.cache_info.remote()``)."""
            return {"models": list(self._lru) if self._lru is not None else None, "hits": self.cache_hits,
                    "loads": self.core.loads, "fast_path": self._lru is not None}

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
        async def _score(self, items: list[tuple[Any, np.ndarray, bool]]) -> list[Any]:
            """Score the rows of many requests with one call per (model, proba). On the event loop: a worker
            thread was measured slower here (GIL hand-offs cost more than the overlap gains on 2 cores)."""
            return _score_batch(items)

        async def _predict(self, principal, name: str, request, request_id: str) -> dict[str, Any]:
            started = time.perf_counter()
            target = self.core.target(principal, name, request.key)
            model = await self.loaded(target.model_key)
            if request.proba and not hasattr(model.model, "predict_proba"):
                raise ValidationError(f"{model.info.ref} ({model.info.framework}) gives no probabilities")
            x = self.core.rows(model, request)
            y = await self._score((model, x, request.proba))
            if isinstance(y, BaseException):
                self.core.record(principal, target, x, None, (time.perf_counter() - started) * 1e3, 500,
                                 request_id=request_id)
                raise y
            predictions = y.tolist() if y.dtype.kind in "biu" else json_safe(y)  # integers: nothing to clean
            self.core.record(principal, target, x, predictions, (time.perf_counter() - started) * 1e3, 200,
                             request_id=request_id)
            for variant, key in target.shadows:
                task = asyncio.create_task(self._shadow(principal, target, variant, key, request, request_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            body: dict[str, Any] = {"model": name, "version": target.version.version, "predictions": predictions,
                                    "request_id": request_id}
            if target.experiment_id is not None:
                body.update(experiment_id=target.experiment_id, variant=target.variant, key=target.request_key)
            return body

        async def _shadow(self, principal, target, variant: str, key: str, request, request_id: str) -> None:
            """A shadow variant scores a copy of the request; its answer is logged, never returned."""
            started = time.perf_counter()
            x = None
            try:
                model = await self.loaded(key)
                x = self.core.rows(model, request)
                y = await self._score((model, x, request.proba))
                ok = not isinstance(y, BaseException)
                self.core.record(principal, target, x, json_safe(y) if ok else None,
                                 (time.perf_counter() - started) * 1e3, 200 if ok else 500,
                                 request_id=request_id, variant=variant, model_key_used=key)
            except Exception as exc:  # noqa: BLE001 - a shadow never affects the caller
                log.warning("shadow variant %s failed: %s", variant, exc)
                self.core.record(principal, target, x, None, (time.perf_counter() - started) * 1e3, 500,
                                 request_id=request_id, variant=variant, model_key_used=key)

        # --- routes -----------------------------------------------------------------------------------

        @app.post("/models/{name}/predict")
        async def predict(self, request: Request) -> Response:
            # the name comes from the matched path directly: no per-request parameter validation on the hot path
            name = request.path_params["name"]
            request_id = request.headers.get("x-request-id") or self._request_ids.next()
            try:
                principal = self.core.authenticate(request.headers.get("authorization"))
                raw = await _read_body(request, self.settings.serve_max_body_bytes)
                parsed = parse_predict_body(raw, max_bytes=self.settings.serve_max_body_bytes,
                                            max_rows=self.settings.serve_max_rows)
                body = await self._predict(principal, name, parsed, request_id)
                return _json(body, headers={"x-mlhub-version": str(body["version"])})
            except BaseException as exc:  # noqa: BLE001 - every failure becomes a JSON answer
                if isinstance(exc, asyncio.CancelledError):
                    raise
                status, doc = error_body(exc)
                doc["request_id"] = request_id
                headers = {"www-authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
                return _json(doc, status, headers)

        @app.get("/models/{name}")
        async def describe(self, name: str, request: Request) -> JSONResponse:
            try:
                principal = self.core.authenticate(request.headers.get("authorization"))
                return JSONResponse(json_safe(await asyncio.to_thread(self.core.metadata, principal, name)))
            except Exception as exc:  # noqa: BLE001
                status, doc = error_body(exc)
                return JSONResponse(doc, status_code=status)

        @app.websocket("/models/{name}/stream")
        async def stream(self, websocket: WebSocket, name: str) -> None:
            try:
                principal = self.core.authenticate(websocket.headers.get("authorization"))
                self.core.endpoint(principal, name)
            except Exception as exc:  # noqa: BLE001
                status, doc = error_body(exc)
                await websocket.close(code=1008, reason=doc["error"]["message"][:120])
                return
            await websocket.accept()
            try:
                while True:
                    message = await websocket.receive_text()
                    request_id = self._request_ids.next()
                    try:
                        if len(message) > self.settings.serve_max_body_bytes:
                            raise PayloadError("message over the body size limit", status=413)
                        parsed = parse_predict_body(message.encode(), max_bytes=self.settings.serve_max_body_bytes,
                                                    max_rows=self.settings.serve_max_rows)
                        await websocket.send_json(await self._predict(principal, name, parsed, request_id))
                    except Exception as exc:  # noqa: BLE001 - a bad message is answered, the stream goes on
                        status, doc = error_body(exc)
                        await websocket.send_json({**doc, "status": status, "request_id": request_id})
            except WebSocketDisconnect:
                return

        @app.post("/experiments/{experiment_id}/outcomes")
        async def outcomes(self, experiment_id: int, request: Request) -> JSONResponse:
            try:
                principal = self.core.authenticate(request.headers.get("authorization"))
                raw = await _read_body(request, self.settings.serve_max_body_bytes)
                items = _outcome_items(raw)
                for key, value in items:
                    await asyncio.to_thread(self.core.record_outcome, principal, experiment_id, key, value)
                return JSONResponse({"recorded": len(items)})
            except Exception as exc:  # noqa: BLE001
                status, doc = error_body(exc)
                return JSONResponse(doc, status_code=status)

        # --- lifecycle --------------------------------------------------------------------------------

        def check_health(self) -> None:
            self.core.check_health()

        def __del__(self) -> None:
            try:
                self.core.close()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass

    return InferenceServer


def _score_batch(items: list[tuple[Any, np.ndarray, bool]]) -> list[Any]:
    """Predictions (or the error) per item; items of one model and kind are scored in one call."""
    out: list[Any] = [None] * len(items)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, (model, _, proba) in enumerate(items):
        groups.setdefault((id(model), proba), []).append(i)
    for (_, proba), idx in groups.items():
        model = items[idx[0]][0]
        try:
            xs = [items[i][1] for i in idx]
            x = xs[0] if len(xs) == 1 else np.vstack(xs)
            y = model.model.predict_proba(x) if proba else model.model.predict(x)
            y = np.asarray(y)
            start = 0
            for i, xi in zip(idx, xs, strict=True):
                out[i] = y[start:start + len(xi)]
                start += len(xi)
        except Exception as exc:  # noqa: BLE001 - each request gets the error, the batch goes on
            for i in idx:
                out[i] = exc
    return out


def _outcome_items(raw: bytes) -> list[tuple[str, float]]:
    import json
    import math

    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from None
    items = doc.get("outcomes") if isinstance(doc, dict) and "outcomes" in doc else [doc]
    if not isinstance(items, list) or not items or len(items) > 10_000:
        raise PayloadError('send {"key": ..., "value": ...} or {"outcomes": [{"key": ..., "value": ...}, ...]} '
                           "(at most 10,000)", status=422)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"key", "value"}:
            raise PayloadError(f"outcome {i} must be an object with exactly key and value", status=422)
        key, value = item["key"], item["value"]
        if not isinstance(key, str | int) or isinstance(key, bool) or not str(key) or len(str(key)) > 128:
            raise PayloadError(f"outcome {i}: key must be a string of 1-128 characters", status=422)
        if not isinstance(value, int | float) or not math.isfinite(value):  # true/false count as 1/0
            raise PayloadError(f"outcome {i}: value must be a finite number (or true/false)", status=422)
        out.append((str(key), float(value)))
    return out


def deployment_options(settings) -> dict[str, Any]:
    return {"name": DEPLOYMENT_NAME, "max_ongoing_requests": settings.serve_max_ongoing_requests,
            "max_queued_requests": settings.serve_max_queued_requests,
            "ray_actor_options": {"num_cpus": settings.serve_replica_cpus,
                                  "runtime_env": {"env_vars": {"TF_USE_LEGACY_KERAS": "1"}}},
            "health_check_period_s": 5.0, "health_check_timeout_s": 15.0, "graceful_shutdown_timeout_s": 5.0}


def build_app(args: dict[str, Any] | None = None, *, scaling: dict[str, Any] | None = None):
    """The Serve application. ``args`` is the settings document (``Settings.to_document()``) or, from
    ``serve run``/``serve deploy`` YAML, any ``MLHUB_*`` settings as plain keys (the rest from the environment)."""
    settings = load_settings(**(args or {}))
    options = {**deployment_options(settings), **(scaling or {"num_replicas": 1})}
    cls = _server_class(settings.serve_max_models_per_replica)
    return serve.deployment(cls).options(**options).bind(settings.to_document())
