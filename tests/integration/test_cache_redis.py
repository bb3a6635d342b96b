"""The Redis cache against a real server, and against a Redis that is down or too slow to answer.

Each test writes under its own random key prefix and deletes exactly those keys afterwards.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from mlhub.cache import RedisCache, keys, open_cache
from mlhub.config import load_settings
from mlhub.errors import BackendUnavailable
from tests.conftest import free_port
from tests.support.clock import FakeClock

pytestmark = pytest.mark.redis




class ConnectionSpy:
    """Counts how often the cache asks its pool for a connection, i.e. really tries to talk to Redis."""

    def __init__(self, cache: RedisCache, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        pool = cache._client.connection_pool
        real = pool.get_connection

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(pool, "get_connection", counting)


@pytest.fixture
def make_cache(redis_url, prefix) -> Iterator:
    made: list[RedisCache] = []

    def make(**kwargs) -> RedisCache:
        options = {"default_ttl_s": 30.0, "timeout_s": 2.0, "namespace_prefix": prefix} | kwargs
        cache = RedisCache(redis_url, **options)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def raw(redis_url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- a Redis that is up ------------------------------------------------------------------------------


def test_set_get_delete(make_cache):
    cache = make_cache()
    key = keys.registry_alias("acme", "churn", "prod")
    cache.set(key, b"\x00binary\xff")
    assert cache.get(key) == b"\x00binary\xff"
    cache.delete(key, keys.registry_alias("acme", "churn", "never-set"))
    assert cache.get(key) is None
    assert cache.stats == {"hits": 1, "misses": 1, "errors": 0, "skipped": 0}


def test_entries_carry_the_default_or_given_ttl(make_cache, raw, prefix):
    cache = make_cache(default_ttl_s=30.0)
    cache.set("default", b"v")
    cache.set("short", b"v", ttl_s=0.25)
    assert 29_000 < raw.pttl(prefix + "default") <= 30_000
    assert 0 < raw.pttl(prefix + "short") <= 250


def test_an_entry_expires_after_its_ttl(make_cache):
    cache = make_cache()
    cache.set_json("k", {"v": 1}, ttl_s=1)
    assert cache.get_json("k") == {"v": 1}
    time.sleep(1.1)
    assert cache.get_json("k") is None


def test_get_or_load_caches_and_skips_none(make_cache):
    cache = make_cache()
    calls = []

    def load():
        calls.append(1)
        return {"version": 4}

    assert cache.get_or_load("alias", load) == {"version": 4}
    assert cache.get_or_load("alias", load) == {"version": 4}
    assert len(calls) == 1

    assert cache.get_or_load("absent", lambda: None) is None
    assert cache.get("absent") is None


def test_invalidation_is_seen_by_another_client(make_cache):
    api, inference = make_cache(), make_cache()  # two processes' worth of clients
    key = keys.registry_alias("acme", "churn", "prod")
    assert inference.get_or_load(key, lambda: {"version": 1}) == {"version": 1}

    api.delete(key)  # the registry moved the alias

    assert inference.get_or_load(key, lambda: {"version": 2}) == {"version": 2}
    assert api.get_json(key) == {"version": 2}


def test_namespace_prefixes_keep_deployments_apart(make_cache, prefix):
    ours, theirs = make_cache(), make_cache(namespace_prefix=prefix + "other:")
    ours.set("k", b"ours")
    assert theirs.get("k") is None


def test_ping_measures_a_round_trip(make_cache):
    assert make_cache().ping() >= 0


def test_factory_uses_redis_when_configured(redis_url, raw):
    cache = open_cache(load_settings(redis_url=redis_url, cache_ttl_s=20))
    key = keys.job_status(f"t{uuid.uuid4().hex[:12]}", 7)
    try:
        assert cache.backend == "redis"
        cache.set_json(key, {"state": "queued"})
        assert raw.get(key) == b'{"state":"queued"}'
        assert 0 < raw.pttl(key) <= 20_000
    finally:
        raw.delete(key)
        cache.close()


def test_the_breaker_closes_again_when_redis_comes_back(make_cache, monkeypatch, caplog):
    clock = FakeClock()
    cache = make_cache(cooldown_s=5.0, clock=clock)
    cache.set("k", b"v")
    real_get = cache._client.get

    def broken(*args, **kwargs):
        raise redis.ConnectionError("connection reset by peer")

    monkeypatch.setattr(cache._client, "get", broken)
    with caplog.at_level(logging.INFO, logger="mlhub.cache"):
        assert cache.get("k") is None  # the outage starts
        monkeypatch.setattr(cache._client, "get", real_get)
        assert cache.get("k") is None  # still cooling down: Redis is not asked
        clock.advance(5.0)
        assert cache.get("k") == b"v"  # the probe succeeds, the breaker closes
        assert cache.get("k") == b"v"

    assert cache.stats == {"hits": 2, "misses": 2, "errors": 1, "skipped": 1}
    levels = [r.levelname for r in caplog.records if r.name == "mlhub.cache"]
    assert levels == ["WARNING", "INFO"]


# --- a Redis that is down or slow --------------------------------------------------------------------


def test_a_down_redis_degrades_to_misses_and_skips_it_during_the_cool_down(monkeypatch, caplog):
    clock = FakeClock()
    url = f"redis://:s3cretpw@127.0.0.1:{free_port()}/0"  # nothing listens there
    cache = RedisCache(url, default_ttl_s=30, timeout_s=1.0, cooldown_s=5.0, clock=clock)
    spy = ConnectionSpy(cache, monkeypatch)
    loads = []

    def load():
        loads.append(1)
        return {"version": 3}

    with caplog.at_level(logging.DEBUG, logger="mlhub.cache"):
        assert cache.get("k") is None  # first attempt fails and opens the breaker
        assert spy.calls == 1

        for _ in range(20):  # during the cool-down nothing tries to connect
            cache.set("k", b"v")
            cache.delete("k")
            assert cache.get("k") is None
            assert cache.get_or_load("k", load) == {"version": 3}
        assert spy.calls == 1
        assert len(loads) == 20

        clock.advance(5.0)  # cool-down over: exactly one probe, which fails and re-opens the breaker
        assert cache.get_or_load("k", load) == {"version": 3}
        assert spy.calls == 2
        assert cache.get("k") is None
        assert spy.calls == 2

    stats = cache.stats
    assert stats["errors"] == 2
    assert stats["skipped"] == 20 * 5 + 2  # set, delete, get, get_or_load (get+set); the probe's set, get
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning for the whole outage, not one per call
    assert "127.0.0.1" in caplog.text
    assert "s3cretpw" not in caplog.text
    cache.close()


def test_ping_on_a_down_redis_raises_without_the_password(caplog):
    port = free_port()
    cache = RedisCache(f"redis://:s3cretpw@127.0.0.1:{port}/0", default_ttl_s=30, timeout_s=1.0)
    with caplog.at_level(logging.DEBUG, logger="mlhub.cache"), pytest.raises(BackendUnavailable) as info:
        cache.ping()
    err = info.value
    assert "s3cretpw" not in str(err)
    assert "s3cretpw" not in repr(err.to_dict())
    assert f"127.0.0.1:{port}" in str(err)
    assert err.http_status == 503
    assert "s3cretpw" not in caplog.text
    cache.close()


def test_ping_is_tried_even_while_the_breaker_is_open():
    clock = FakeClock()
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", default_ttl_s=30, timeout_s=1.0, clock=clock)
    assert cache.get("k") is None  # opens the breaker
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            cache.ping()
    assert cache.stats["errors"] == 3
    cache.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a hung Redis."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel completes handshakes from the backlog; nobody ever reads
        yield server.getsockname()[1]


def test_a_slow_redis_times_out_into_a_miss(silent_server, monkeypatch):
    cache = RedisCache(f"redis://127.0.0.1:{silent_server}/0", default_ttl_s=30, timeout_s=0.2)
    spy = ConnectionSpy(cache, monkeypatch)

    assert cache.get_or_load("k", lambda: [1, 2]) == [1, 2]
    cache.set("k", b"v")
    assert cache.get("k") is None

    assert spy.calls == 1  # only the first call waited for the timeout; the others were skipped
    assert cache.stats["errors"] == 1
    assert cache.stats["skipped"] == 3  # get_or_load's set, set, get
    cache.close()


def test_get_many_is_one_round_trip_and_a_down_redis_answers_misses(make_cache, monkeypatch):
    cache = make_cache()
    cache.set("a", b"1")
    cache.set("c", b"3")
    calls = []
    real = cache._client.mget
    monkeypatch.setattr(cache._client, "mget", lambda ks: calls.append(ks) or real(ks))
    assert cache.get_many("a", "b", "c") == [b"1", None, b"3"] and len(calls) == 1
    down = RedisCache(f"redis://127.0.0.1:{free_port()}/0", default_ttl_s=30, timeout_s=1.0)
    try:
        assert down.get_many("a", "b") == [None, None] and down.stats["errors"] == 1
    finally:
        down.close()
