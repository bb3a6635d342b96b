"""Choose the cache backend from :class:`~mlhub.config.Settings`."""

from __future__ import annotations

from mlhub.cache.base import Cache
from mlhub.cache.memory import MemoryCache
from mlhub.cache.redis_cache import RedisCache
from mlhub.config import Settings

__all__ = ["open_cache"]


def open_cache(settings: Settings) -> Cache:
    """A :class:`RedisCache` when ``MLHUB_REDIS_URL`` is set, else an in-process :class:`MemoryCache`.

    Never connects: a Redis that is down degrades to cache misses rather than failing start-up (use
    ``ping()`` to check health). Raises :class:`~mlhub.errors.ConfigError` for a malformed Redis URL.
    """
    if settings.redis_url is not None:
        return RedisCache(
            settings.redis_url.get_secret_value(),
            default_ttl_s=settings.cache_ttl_s,
            timeout_s=settings.backend_timeout_s,
        )
    return MemoryCache(settings.cache_max_entries, settings.cache_ttl_s)
