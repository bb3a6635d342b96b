"""Caches of derivable state (registry lookups, job status, predictions): in-process or Redis.

Build one with :func:`open_cache`; make every key with :mod:`mlhub.cache.keys`.
"""

from mlhub.cache import keys
from mlhub.cache.base import Cache
from mlhub.cache.factory import open_cache
from mlhub.cache.memory import MemoryCache
from mlhub.cache.redis_cache import RedisCache

__all__ = ["Cache", "MemoryCache", "RedisCache", "keys", "open_cache"]
