"""The prediction cache on a real Redis (MLHUB_TEST_REDIS_URL; under MLHUB_REQUIRE_SERVICES=1 a missing Redis
fails these tests instead of skipping them), and on a Redis that is not there: a batch prediction still
succeeds, every row predicted.

Each test writes under its own random key prefix and deletes exactly those keys afterwards.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis

from mlhub.batch import (
    ModelBytes,
    PredictionCacheConfig,
    decode_predictions,
    encode_predictions,
    predict_table,
)
from mlhub.cache import keys
from mlhub.domain.specs import DatasetSpec, TrainingSpec
from mlhub.training.adapters import get_adapter
from mlhub.training.batch import row_digests
from mlhub.training.datasets import load_dataset
from tests.conftest import free_port

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def trained():
    spec = TrainingSpec(name="t", framework="baseline", model="linear", epochs=20, params={"lr": 0.1},
                        dataset=DatasetSpec(source="synthetic", task="regression", n_samples=400, n_features=5))
    data = load_dataset(spec.dataset, allowed_roots=[])
    t = get_adapter("baseline").train(spec, data, lambda r: None)
    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(3000, 5)), columns=data.feature_names)
    return ModelBytes("baseline", "npz", t.payload), t.input_schema, frame


def test_entries_are_stored_under_the_tenant_keys_with_a_ttl_in_batches(redis_url, prefix, monkeypatch):
    cache = PredictionCacheConfig(redis_url=redis_url, ttl_s=3600, namespace_prefix=prefix).open()
    digests = row_digests(np.random.default_rng(0).normal(size=(1200, 4)))
    values = encode_predictions(np.arange(1200, dtype=np.float64))
    calls = {"mget": 0}
    cache.set_many("acme", 9, list(zip(digests, values, strict=True)))
    client = cache._open()._client
    real_mget = client.mget

    def counting_mget(*args, **kwargs):
        calls["mget"] += 1
        return real_mget(*args, **kwargs)

    monkeypatch.setattr(client, "mget", counting_mget)
    found = cache.get_many("acme", 9, digests)
    assert decode_predictions(found).tolist() == list(range(1200))
    assert calls["mget"] == 3  # 1,200 keys in chunks of 500, not a round trip per row
    assert cache.get_many("acme", 10, digests[:5]) == [None] * 5 and cache.get_many("other", 9, digests[:5]) == [None] * 5
    raw = redis.Redis.from_url(redis_url)
    key = prefix + keys.prediction("acme", 9, digests[0].hex())
    assert raw.get(key) == values[0] and 3500 < raw.ttl(key) <= 3600
    # the entries and one marker saying that this version has entries at all
    assert len(list(raw.scan_iter(match=prefix + keys.tenant_prefix("acme") + "*", count=1000))) == 1201
    raw.close()
    assert cache.holds_any("acme", 9) and not cache.holds_any("acme", 10) and not cache.holds_any("other", 9)
    assert cache.stats == {"hits": 1200, "misses": 10, "writes": 1200, "errors": 0, "skipped": 0}


def test_a_rerun_is_served_from_redis(redis_url, prefix, trained):
    model, schema, frame = trained
    cfg = PredictionCacheConfig(redis_url=redis_url, ttl_s=600, namespace_prefix=prefix)
    first = predict_table(frame, schema, model, tenant_id="t", version_id=1, cache=cfg)
    again = predict_table(frame, schema, model, tenant_id="t", version_id=1, cache=cfg)
    assert (first.cached_rows, again.cached_rows) == (0, 3000) and again.cache["errors"] == 0
    pd.testing.assert_frame_equal(again.frame, first.frame)
    np.testing.assert_allclose(first.frame["prediction"], model.load().predict(frame.to_numpy()))


def test_a_redis_that_is_not_there_never_fails_the_job(trained):
    model, schema, frame = trained
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    out = predict_table(frame, schema, model, tenant_id="t", version_id=1, batch_size=500,
                        cache=PredictionCacheConfig(redis_url=closed, timeout_s=0.5))
    assert out.cached_rows == 0 and out.cache["errors"] >= 1 and out.cache["writes"] == 0
    np.testing.assert_allclose(out.frame["prediction"], model.load().predict(frame.to_numpy()))
