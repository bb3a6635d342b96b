"""The cache contract: bytes under string keys with a TTL, plus JSON helpers built on top.

Every entry is derivable from the system of record, so a cache may forget anything at any time: callers
treat ``None`` from :meth:`Cache.get` as "go and load it", never as "it does not exist". Public methods
check their arguments and count hits and misses here, then call the backend's private ``_get``/``_set``/
``_delete`` (the shape of MLflow's ``abstract_store.py``).
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Self, TypeVar

__all__ = ["Cache"]

T = TypeVar("T")

log = logging.getLogger("mlhub.cache")


class Cache(ABC):
    """A key-value cache of bytes with per-entry TTLs. Thread-safe.

    ``backend`` names the implementation (``"memory"`` or ``"redis"``); ``default_ttl_s`` is the TTL used
    when ``set`` is given none (``None`` there means entries do not expire on their own).
    """

    backend: str

    def __init__(self, default_ttl_s: float | None) -> None:
        self.default_ttl_s = _check_ttl(default_ttl_s)
        self._stats_lock = threading.Lock()
        self._counters: dict[str, int] = {"hits": 0, "misses": 0, "errors": 0}

    # --- bytes ---------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or ``None`` when absent, expired or the backend is unreachable."""
        _check_key(key)
        value = self._get(key)
        self._count("hits" if value is not None else "misses")
        return value

    def get_many(self, *keys: str) -> list[bytes | None]:
        """The bytes of each key (``None`` for a miss), in one round trip where the backend allows."""
        for key in keys:
            _check_key(key)
        values = self._get_many(keys)
        for v in values:
            self._count("hits" if v is not None else "misses")
        return values

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl_s`` seconds (``None``: the cache's default TTL).

        Best effort: a backend that cannot be reached drops the write.
        """
        _check_key(key)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"cache values are bytes, got {type(value).__name__}")
        ttl = self.default_ttl_s if ttl_s is None else _check_ttl(ttl_s)
        self._set(key, bytes(value), ttl)

    def delete(self, *keys: str) -> None:
        """Remove ``keys`` (missing ones are ignored). On Redis every process sees the removal."""
        for key in keys:
            _check_key(key)
        if keys:
            self._delete(keys)

    # --- JSON ----------------------------------------------------------------------------------------

    def get_json(self, key: str) -> Any | None:
        """The JSON value stored under ``key``, or ``None`` on a miss (an undecodable entry is a miss)."""
        raw = self.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # Entries are derivable; a corrupt one (another writer, an old format) is simply reloaded.
            log.debug("undecodable JSON cache entry %r; treating it as a miss", key)
            return None

    def set_json(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        """Store ``value`` as JSON. Raises ``TypeError`` when ``value`` is not JSON-serialisable."""
        self.set(key, _dumps(value), ttl_s)

    def get_or_load(self, key: str, loader: Callable[[], T], ttl_s: float | None = None) -> T:
        """The cached JSON value of ``key``; on a miss, ``loader()``'s result, which is then cached.

        A ``None`` result is returned but not cached (so "not found yet" is asked again next time).
        The value returned on a miss is the JSON round-trip of the loader's result, so that a hit and a
        miss look the same to the caller (tuples come back as lists, dict keys as strings). Exceptions
        from ``loader`` propagate; nothing is cached then.
        """
        cached = self.get_json(key)
        if cached is not None:
            return cached
        value = loader()
        if value is None:
            return value
        raw = _dumps(value)
        self.set(key, raw, ttl_s)
        return json.loads(raw)

    # --- health and lifecycle ------------------------------------------------------------------------

    @abstractmethod
    def ping(self) -> float:
        """Round-trip time in seconds. Raises :class:`mlhub.errors.BackendUnavailable` when down."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and memory. The cache must not be used afterwards."""

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters: ``hits``, ``misses``, ``errors`` and any the backend adds."""
        with self._stats_lock:
            return dict(self._counters)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- for backends --------------------------------------------------------------------------------

    @abstractmethod
    def _get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def _set(self, key: str, value: bytes, ttl_s: float | None) -> None: ...

    @abstractmethod
    def _delete(self, keys: tuple[str, ...]) -> None: ...

    def _get_many(self, keys: tuple[str, ...]) -> list[bytes | None]:
        return [self._get(k) for k in keys]

    def _count(self, counter: str, n: int = 1) -> None:
        with self._stats_lock:
            self._counters[counter] = self._counters.get(counter, 0) + n


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"cache keys are non-empty strings (see mlhub.cache.keys), got {key!r}")


def _check_ttl(ttl_s: float | None) -> float | None:
    if ttl_s is not None and not ttl_s > 0:  # "not >" also rejects NaN
        raise ValueError(f"ttl_s must be positive or None, got {ttl_s!r}")
    return ttl_s


def _dumps(value: Any) -> bytes:
    # Compact: Redis memory is what a big prediction cache costs.
    return json.dumps(value, separators=(",", ":")).encode()
