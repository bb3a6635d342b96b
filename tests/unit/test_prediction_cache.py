"""The prediction cache's embedded store (SQLite under MLHUB_HOME) and its value encoding: entries outlive
the process that wrote them, are scoped by tenant and model version, and a broken store only costs misses."""

from __future__ import annotations

import logging
import sqlite3

import numpy as np
import pytest

from mlhub.batch.cache import PredictionCache, PredictionCacheConfig, decode_predictions, encode_predictions
from mlhub.config import load_settings
from mlhub.training.batch import row_digests


def _cache(path) -> PredictionCache:
    return PredictionCacheConfig(sqlite_path=path).open()


@pytest.mark.parametrize("values", [
    np.array([0.5, -1.25, np.inf, 0.0, 1e300]),
    np.array([0, 3, -7, 2**40], dtype=np.int64),
    np.array([True, False]),
    np.array(["setosa", "versicolor", "ünïcode", ""]),
])
def test_predictions_round_trip_compactly(values):
    encoded = encode_predictions(values)
    assert len(encoded) == len(values)
    if values.dtype.kind in "biuf":
        assert {len(e) for e in encoded} == {9}  # a tag byte and 8 bytes
    decoded = decode_predictions(encoded)
    expected = values.astype(np.int64) if values.dtype.kind == "b" else values
    np.testing.assert_array_equal(decoded, expected)
    assert decoded.dtype.kind == expected.dtype.kind


def test_an_undecodable_value_is_refused():
    with pytest.raises(ValueError, match="undecodable"):
        decode_predictions([b"x123"])


def test_entries_outlive_the_process_and_are_scoped_by_tenant_and_version(tmp_path):
    path = tmp_path / "cache" / "predictions.sqlite"
    digests = row_digests(np.arange(12.0).reshape(4, 3))
    writer = _cache(path)
    writer.set_many("acme", 7, list(zip(digests[:3], encode_predictions(np.array([1.0, 2.0, 3.0])), strict=True)))
    writer.close()

    reader = _cache(path)  # a new connection, as the next job's process opens it
    found = reader.get_many("acme", 7, digests)
    assert decode_predictions(found[:3]).tolist() == [1.0, 2.0, 3.0] and found[3] is None
    assert reader.holds_any("acme", 7) and not reader.holds_any("acme", 8) and not reader.holds_any("other", 7)
    assert reader.get_many("acme", 8, digests) == [None] * 4  # another version of the model
    assert reader.get_many("other", 7, digests) == [None] * 4  # another tenant
    assert reader.stats == {"hits": 3, "misses": 9, "writes": 0, "errors": 0, "skipped": 0}
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT count(*) FROM prediction_cache").fetchone()[0] == 3


def test_a_batch_larger_than_one_query_is_looked_up_whole(tmp_path):
    cache = _cache(tmp_path / "p.sqlite")
    digests = row_digests(np.random.default_rng(0).normal(size=(1234, 5)))
    cache.set_many("t", 1, [(d, encode_predictions(np.array([float(i)]))[0]) for i, d in enumerate(digests)])
    found = cache.get_many("t", 1, digests)
    assert decode_predictions(found).tolist() == [float(i) for i in range(1234)]
    assert cache.stats["writes"] == 1234 and cache.stats["hits"] == 1234


def test_settings_choose_sqlite_under_mlhub_home_or_redis(mlhub_home):
    embedded = PredictionCacheConfig.from_settings(load_settings())
    assert embedded.sqlite_path == mlhub_home.resolve() / "cache" / "predictions.sqlite" and embedded.redis_url is None
    redis = PredictionCacheConfig.from_settings(load_settings(redis_url="redis://:pw@127.0.0.1:6379/3",
                                                              prediction_cache_ttl_s=60))
    assert redis.redis_url == "redis://:pw@127.0.0.1:6379/3" and redis.sqlite_path is None and redis.ttl_s == 60
    assert "pw" not in redis.where


def test_a_corrupted_file_degrades_to_misses_and_logs_once(tmp_path, caplog):
    path = tmp_path / "p.sqlite"
    path.write_bytes(b"this is not a database" * 1000)
    cache = _cache(path)
    digests = row_digests(np.ones((3, 2)))
    with caplog.at_level(logging.WARNING, logger="mlhub.batch.cache"):
        assert cache.get_many("t", 1, digests) == [None] * 3
        assert cache.holds_any("t", 1) is False
        cache.set_many("t", 1, [(digests[0], b"f" + bytes(8))])
        assert cache.get_many("t", 1, digests) == [None] * 3
    assert cache.stats["errors"] == 1 and cache.stats["skipped"] == 3  # cooling down after the first failure
    assert [r.message.split(" failed")[0] for r in caplog.records] == [f"prediction cache (sqlite {path}) read"]


def test_a_place_that_cannot_hold_the_file_degrades_to_misses(tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the cache folder should be")  # mkdir fails, even for root
    cache = PredictionCache(PredictionCacheConfig(sqlite_path=blocker / "cache" / "p.sqlite"), cooldown_s=0)
    digests = row_digests(np.ones((2, 2)))
    cache.set_many("t", 1, [(digests[0], b"f" + bytes(8))])
    assert cache.get_many("t", 1, digests) == [None, None]
    assert cache.stats["errors"] == 2 and cache.stats["writes"] == 0 and cache.stats["misses"] == 2


def test_after_the_cool_down_the_store_is_tried_again(tmp_path):
    path = tmp_path / "p.sqlite"
    path.write_bytes(b"garbage" * 1000)
    cache = PredictionCache(PredictionCacheConfig(sqlite_path=path), cooldown_s=0)
    digests = row_digests(np.ones((1, 2)))
    assert cache.get_many("t", 1, digests) == [None]
    path.unlink()  # repaired: the next call opens a fresh file
    cache.set_many("t", 1, [(digests[0], encode_predictions(np.array([4.0]))[0])])
    assert decode_predictions(cache.get_many("t", 1, digests)).tolist() == [4.0]
    assert cache.stats["errors"] == 1 and cache.stats["writes"] == 1
