"""The inference application on the shared Ray cluster, driven over HTTP as a client would: `mlhub deploy`,
predictions with the version that served them, a promotion picked up without a redeploy, 4xx JSON for bad
bodies (never 500), tenant isolation, the WebSocket stream, overload refused with 503, a killed replica
replaced."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from mlhub.artifact_records import ArtifactService
from mlhub.cli.main import main
from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
from mlhub.registry.service import register_version

pytestmark = pytest.mark.ray


def _train(model: str = "logistic_regression", **params):
    from mlhub.domain.specs import parse_spec
    from mlhub.training import get_adapter, load_dataset

    spec = parse_spec({"kind": "training", "name": "iris", "framework": "sklearn", "model": model,
                       "params": params, "dataset": {"source": "sklearn", "name": "iris"}})
    data = load_dataset(spec.dataset, allowed_roots=[])
    return get_adapter("sklearn").train(spec, data, lambda r: None), data


def _register(hub, name: str, trained) -> int:
    art = ArtifactService(hub.backends.db, hub.backends.artifacts).upload(
        hub.principal, trained.payload, media_type=MODEL_MEDIA_TYPES_BY_FORMAT[trained.model_format], name="m")
    with hub.backends.db.tenant_scope(hub.principal.tenant_id) as s:
        return register_version(s, hub.principal.tenant_id, model_name=name, framework="sklearn",
                                model_format=trained.model_format, artifact_id=art.id, artifact_sha256=art.sha256,
                                created_by="test", metrics=trained.metrics, input_schema=trained.input_schema,
                                reference_stats=trained.reference_stats).version


@pytest.fixture(scope="module")
def iris():
    return _train()


@pytest.fixture(scope="module", autouse=True)
def _inference_app_removed_after_the_module(serve_http):
    """The shared cluster has 2 CPUs: a replica left running would starve the training tests that follow."""
    yield
    from ray import serve

    from serve_apps.inference import APP_NAME

    serve.delete(APP_NAME)


@pytest.fixture
def served(hub, hub_settings, serve_http, iris, monkeypatch):
    """A fresh tenant with iris v1 (champion) and v2 deployed through `mlhub deploy`."""
    trained, data = iris
    _register(hub, "iris", trained), _register(hub, "iris", trained)
    hub.models.promote("iris", 1, to="champion")
    for key, value in {"MLHUB_HOME": str(hub_settings.home), "MLHUB_DATABASE_URL": hub_settings.effective_database_url,
                       "MLHUB_API_KEY": hub.api_key, "MLHUB_SERVE_ALIAS_TTL_S": "1"}.items():
        monkeypatch.setenv(key, value)
    assert main(["deploy", "iris", "--json"]) == 0
    return {"url": f"{serve_http}/v1/models/iris", "headers": {"Authorization": f"Bearer {hub.api_key}"},
            "data": data, "hub": hub}


def _post(served, body, *, raw: bytes | None = None, headers=None, name: str = "iris"):
    url = served["url"].rsplit("/", 1)[0] + f"/{name}/predict"
    return requests.post(url, data=raw if raw is not None else json.dumps(body),
                         headers=headers if headers is not None else served["headers"], timeout=60)


def test_predictions_name_the_version_and_a_promotion_is_served_without_a_redeploy(served):
    x = np.asarray(served["data"].x_test[:4])
    r = _post(served, {"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1 and len(body["predictions"]) == 4 and r.headers["x-mlhub-version"] == "1"
    names = [f["name"] for f in served["hub"].models.get("iris@champion").input_schema["features"]]
    cols = {n: x[:, i].tolist() for i, n in enumerate(names)}
    assert _post(served, {"inputs": cols}).json()["predictions"] == body["predictions"]
    proba = _post(served, {"inputs": x[0].tolist(), "proba": True}).json()["predictions"]
    assert len(proba) == 1 and abs(sum(proba[0]) - 1) < 1e-6

    served["hub"].models.promote("iris", 2, to="champion")
    deadline = time.monotonic() + 30
    while _post(served, {"inputs": x.tolist()}).json()["version"] != 2:
        assert time.monotonic() < deadline, "the promotion was not served within 30 s"
        time.sleep(0.3)
    meta = requests.get(served["url"], headers=served["headers"], timeout=30).json()
    assert meta["version"] == 2 and meta["endpoint"]["ref"] == "iris@champion"

    # both versions sit in the replica's LRU, and requests after the first load of each read it directly
    from ray import serve

    from serve_apps.inference import APP_NAME

    info = serve.get_app_handle(APP_NAME).cache_info.remote().result(timeout_s=60)
    hub = served["hub"]
    keys = {f"{hub.principal.tenant_id}:{hub.models.get(f'iris/{v}').id}" for v in (1, 2)}
    assert info["fast_path"] is True and keys <= set(info["models"]) and info["hits"] >= 2, info


@pytest.mark.parametrize("raw, status", [
    (b"{not json", 400),
    (b"[" * 5000, 400),
    (b'{"inputs": [[1.0, 2.0]]}', 422),                      # wrong width
    (b'{"inputs": {"x": [1.0]}}', 422),                      # wrong columns
    (b'{"inputs": [[NaN, 1.0, 1.0, 1.0]]}', 422),            # NaN in a feature that may not be missing
    (b'{"inputs": [[Infinity, 1.0, 1.0, 1.0]]}', 422),
    (b'{"inputs": [["a", 1.0, 1.0, 1.0]]}', 422),
    (b'{"inputs": [[[1.0], 1.0, 1.0, 1.0]]}', 422),          # nested
    (b'{"inputs": [[1.0, 1.0, 1.0, 1.0]], "extra": 1}', 422),
    (b'{"inputs": [' + b"[1.0, 1.0, 1.0, 1.0]," * 200_000 + b"[1.0, 1.0, 1.0, 1.0]]}", 413),
])
def test_bad_bodies_answer_4xx_json_never_500(served, raw, status):
    r = _post(served, None, raw=raw)
    assert r.status_code == status, r.text[:300]
    assert r.json()["error"]["code"] in ("bad_payload", "validation_failed")


def test_keys_decide_the_tenant(served, hub_settings):
    from mlhub.store.database import Database
    from mlhub.tenancy import TenantService

    x = served["data"].x_test[:1].tolist()
    assert _post(served, {"inputs": x}, headers={}).status_code == 401
    assert _post(served, {"inputs": x}, headers={"Authorization": "Bearer mlh_AAAAAAAA_" + "B" * 32}).status_code == 401
    db = Database(hub_settings.effective_database_url)
    _, other_key = TenantService(db).create_tenant(f"it-{uuid.uuid4().hex[:10]}")
    db.dispose()
    r = _post(served, {"inputs": x}, headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 404 and "not deployed" in r.json()["error"]["message"]
    assert _post(served, {"inputs": x}, name="nope").status_code == 404


def test_the_websocket_stream_answers_each_message_and_survives_bad_ones(served):
    import websockets

    url = served["url"].replace("http://", "ws://") + "/stream"
    x = served["data"].x_test[:2].tolist()

    async def talk():
        async with websockets.connect(url, additional_headers=served["headers"]) as ws:
            answers = []
            for message in (json.dumps({"inputs": x}), "{bad", json.dumps({"inputs": x[:1]})):
                await ws.send(message)
                answers.append(json.loads(await ws.recv()))
            return answers

    ok, bad, ok2 = asyncio.run(talk())
    assert ok["version"] == 1 and len(ok["predictions"]) == 2
    assert bad["status"] == 400 and bad["error"]["code"] == "bad_payload"
    assert len(ok2["predictions"]) == 1

    async def refused():
        async with websockets.connect(url) as ws:
            await ws.recv()

    with pytest.raises(Exception):  # noqa: B017 - closed (1008) or refused at the handshake without a key
        asyncio.run(refused())


def test_overload_is_refused_with_503_and_a_killed_replica_is_replaced(served, hub_settings):
    """A second copy of the app with room for one request and one waiting: a burst gets 503s, not a queue."""
    import ray
    from ray import serve

    from serve_apps.inference import build_app

    slow, data = _train("random_forest", n_estimators=300)
    hub = served["hub"]
    _register(hub, "slow", slow)
    hub.models.promote("slow", 1, to="champion")
    assert main(["deploy", "slow", "--no-serve"]) == 0
    doc = {**hub_settings.to_document(), "serve_max_ongoing_requests": 1, "serve_max_queued_requests": 1,
           "serve_max_batch_size": 1}
    serve.run(build_app(doc), name="overload-test", route_prefix="/ov", blocking=False)
    from serve_apps.control import wait_running

    wait_running("overload-test", 120)
    base = served["url"].split("/v1/")[0]
    rows = np.repeat(np.asarray(data.x_test), 60, axis=0).tolist()  # ~2,700 rows through 300 trees per request

    def call(_):
        return requests.post(f"{base}/ov/models/slow/predict", json={"inputs": rows}, headers=served["headers"],
                             timeout=120).status_code

    try:
        assert call(0) == 200  # loads the model
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(call, range(12)))
        assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1, codes

        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if "overload-test" in a["name"] and "InferenceServer" in a["name"]]
        assert replicas
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                if call(0) == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "no replica answered after the kill"
            time.sleep(1)
    finally:
        serve.delete("overload-test")


def test_an_experiment_routes_sticky_shadows_a_copy_and_takes_outcomes_over_http(served):
    from sqlalchemy import select

    from mlhub.domain.routing import VariantSpec
    from mlhub.experiments.service import ExperimentService
    from mlhub.store.models import PredictionLog

    hub = served["hub"]
    svc = ExperimentService(hub.backends.db)
    info = svc.create(hub.principal, "iris-ab", "iris", [VariantSpec("control", 1, 0.5), VariantSpec("treatment", 2, 0.5),
                                                          VariantSpec("shadowed", 1, shadow=True)])
    svc.start(hub.principal, info.id)
    x = served["data"].x_test[:1].tolist()
    deadline = time.monotonic() + 30
    while "variant" not in (body := _post(served, {"inputs": x, "key": "user-1"}).json()):
        assert time.monotonic() < deadline, "the running experiment was not picked up"
        time.sleep(0.3)
    seen = {_post(served, {"inputs": x, "key": f"user-{i}"}).json()["variant"] for i in range(40)}
    assert seen == {"control", "treatment"}  # the shadow never answers
    again = [_post(served, {"inputs": x, "key": "user-1"}).json() for _ in range(3)]
    assert {a["variant"] for a in again} == {body["variant"]}
    assert {a["version"] for a in again} == {1 if body["variant"] == "control" else 2}

    base = served["url"].split("/v1/")[0]
    r = requests.post(f"{base}/v1/experiments/{info.id}/outcomes", json={"key": "user-1", "value": 1},
                      headers=served["headers"], timeout=30)
    assert r.status_code == 200 and r.json() == {"recorded": 1}
    bad = requests.post(f"{base}/v1/experiments/{info.id}/outcomes", json={"key": "user-1"},
                        headers=served["headers"], timeout=30)
    assert bad.status_code == 422
    deadline = time.monotonic() + 30  # prediction logs are written in the background, every 2 s
    while True:
        with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
            variants = set(s.scalars(select(PredictionLog.variant).where(PredictionLog.experiment_id == info.id)))
        if {"control", "treatment", "shadowed"} <= variants:
            break
        assert time.monotonic() < deadline, variants
        time.sleep(0.5)
    svc.stop(hub.principal, info.id)

