"""The in-process cache: LRU order, TTLs on a fake clock, JSON helpers, threads; and the factory."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlhub.cache import MemoryCache, RedisCache, keys, open_cache
from mlhub.config import load_settings
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_least_recently_used_entry_is_evicted_first(clock):
    cache = MemoryCache(3, None, clock=clock)
    for k in ("a", "b", "c"):
        cache.set(k, k.encode())
    assert cache.get("a") == b"a"  # "a" is now the most recent; "b" the least

    cache.set("d", b"d")
    cache.set("e", b"e")

    assert [k for k in "abcde" if cache.get(k) is not None] == ["a", "d", "e"]
    assert len(cache) == 3
    assert cache.stats["evictions"] == 2


def test_overwriting_refreshes_recency(clock):
    cache = MemoryCache(2, None, clock=clock)
    cache.set("a", b"1")
    cache.set("b", b"2")
    cache.set("a", b"3")
    cache.set("c", b"4")
    assert cache.get("a") == b"3"
    assert cache.get("b") is None


def test_entries_expire_after_their_ttl(clock):
    cache = MemoryCache(10, 30.0, clock=clock)
    cache.set("default", b"x")
    cache.set("short", b"y", ttl_s=1.5)

    clock.advance(1.49)
    assert cache.get("short") == b"y"
    clock.advance(0.01)
    assert cache.get("short") is None
    assert cache.get("default") == b"x"

    clock.advance(28.5)
    assert cache.get("default") is None
    assert len(cache) == 0
    assert cache.stats["expirations"] == 2


def test_no_default_ttl_means_entries_live_until_evicted(clock):
    cache = MemoryCache(10, None, clock=clock)
    cache.set("k", b"v")
    clock.advance(10**9)
    assert cache.get("k") == b"v"


def test_delete_removes_keys_and_ignores_missing_ones(clock):
    cache = MemoryCache(10, None, clock=clock)
    cache.set("a", b"1")
    cache.set("b", b"2")
    cache.set("c", b"3")
    cache.delete("a", "b", "never-set")
    cache.delete()
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, b"3")


def test_json_round_trip(clock):
    cache = MemoryCache(10, None, clock=clock)
    value = {"version": 3, "metrics": {"auc": 0.91}, "tags": ["prod"], "note": "é", "none": None}
    cache.set_json("k", value)
    assert cache.get_json("k") == value
    assert cache.get_json("missing") is None


def test_an_undecodable_entry_is_a_miss(clock):
    cache = MemoryCache(10, None, clock=clock)
    cache.set("k", b"\xff not json")
    assert cache.get_json("k") is None
    assert cache.get_or_load("k", lambda: {"fresh": True}) == {"fresh": True}
    assert cache.get_json("k") == {"fresh": True}


def test_get_or_load_calls_the_loader_once_then_serves_the_cache(clock):
    cache = MemoryCache(10, 30.0, clock=clock)
    calls = []

    def load():
        calls.append(1)
        return {"version": len(calls)}

    assert cache.get_or_load("k", load) == {"version": 1}
    assert cache.get_or_load("k", load) == {"version": 1}
    assert len(calls) == 1
    assert cache.stats == {"hits": 1, "misses": 1, "errors": 0, "evictions": 0, "expirations": 0}

    clock.advance(30)
    assert cache.get_or_load("k", load) == {"version": 2}  # the TTL ran out, so it loads again


def test_get_or_load_honours_its_own_ttl(clock):
    cache = MemoryCache(10, 30.0, clock=clock)
    cache.get_or_load("k", lambda: 1, ttl_s=2)
    clock.advance(2)
    assert cache.get("k") is None


def test_get_or_load_does_not_cache_none(clock):
    cache = MemoryCache(10, None, clock=clock)
    calls = []

    def load() -> None:
        calls.append(1)

    assert cache.get_or_load("k", load) is None
    assert cache.get_or_load("k", load) is None
    assert len(calls) == 2
    assert len(cache) == 0


def test_get_or_load_returns_the_same_shape_on_a_miss_and_a_hit(clock):
    cache = MemoryCache(10, None, clock=clock)
    first = cache.get_or_load("k", lambda: {"pair": (1, 2), 3: "x"})
    second = cache.get_or_load("k", lambda: pytest.fail("must be served from the cache"))
    assert first == second == {"pair": [1, 2], "3": "x"}


def test_a_failing_loader_propagates_and_caches_nothing(clock):
    cache = MemoryCache(10, None, clock=clock)

    def load():
        raise LookupError("model not found")

    with pytest.raises(LookupError):
        cache.get_or_load("k", load)
    assert cache.get("k") is None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        MemoryCache(0, None)
    with pytest.raises(ValueError):
        MemoryCache(10, 0)
    cache = MemoryCache(10, None)
    with pytest.raises(TypeError):
        cache.set("k", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cache.set("k", b"v", ttl_s=-1)
    with pytest.raises(TypeError):
        cache.get("")


def test_ping_and_close():
    cache = MemoryCache(10, None)
    cache.set("k", b"v")
    assert cache.ping() >= 0
    cache.close()
    assert cache.get("k") is None


def test_threads_hammering_the_cache_keep_it_consistent():
    cache = MemoryCache(50, None)
    n_threads, n_ops = 8, 2000
    start = threading.Barrier(n_threads)

    def worker(seed: int) -> int:
        rng = random.Random(seed)
        gets = 0
        start.wait()
        for _ in range(n_ops):
            key = f"k{rng.randrange(120)}"
            op = rng.random()
            if op < 0.5:
                value = cache.get(key)
                gets += 1
                # A value is only ever written under its own key, so a torn entry would show here.
                assert value is None or value == key.encode()
            elif op < 0.9:
                cache.set(key, key.encode())
            else:
                cache.delete(key)
        return gets

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        # .result() re-raises a worker's assertion here, in the test's thread.
        total_gets = sum(f.result() for f in [pool.submit(worker, i) for i in range(n_threads)])

    stats = cache.stats
    assert stats["hits"] + stats["misses"] == total_gets
    assert stats["hits"] > 0 and stats["misses"] > 0
    assert len(cache) <= 50


def test_factory_gives_a_memory_cache_without_redis():
    settings = load_settings(cache_ttl_s=12.5, cache_max_entries=7)
    cache = open_cache(settings)
    assert isinstance(cache, MemoryCache)
    assert cache.backend == "memory"
    assert (cache.max_entries, cache.default_ttl_s) == (7, 12.5)
    cache.set_json(keys.job_status("acme", 1), {"state": "running"})
    assert cache.get_json(keys.job_status("acme", 1)) == {"state": "running"}


def test_factory_gives_a_redis_cache_without_connecting():
    # Nothing listens on port 1; building the cache must still succeed (it connects lazily).
    settings = load_settings(redis_url="redis://:pw@127.0.0.1:1/0", backend_timeout_s=0.5, cache_ttl_s=9)
    cache = open_cache(settings)
    assert isinstance(cache, RedisCache)
    assert cache.backend == "redis"
    assert cache.default_ttl_s == 9
    assert "pw" not in cache.url
    cache.close()


def test_get_many_answers_each_key_in_order_and_counts_each(clock):
    cache = MemoryCache(10, None, clock=clock)
    cache.set("a", b"1")
    cache.set("c", b"3")
    assert cache.get_many("a", "b", "c") == [b"1", None, b"3"]
    assert (cache.stats["hits"], cache.stats["misses"]) == (2, 1)
