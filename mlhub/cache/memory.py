"""An in-process LRU cache with per-entry TTLs: the embedded default when no Redis is configured."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from mlhub.cache.base import Cache

__all__ = ["MemoryCache"]


class MemoryCache(Cache):
    """At most ``max_entries`` entries; the least recently used goes first when it is full.

    Expiry uses ``clock`` (``time.monotonic`` by default, injectable for tests), so wall-clock jumps do
    not expire or revive entries. Expired entries are dropped when touched, or evicted like any other.
    Only this process sees the entries: ``delete`` invalidates here and nowhere else.
    """

    backend = "memory"

    def __init__(
        self,
        max_entries: int,
        default_ttl_s: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(default_ttl_s)
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = clock
        # key -> (value, expires_at or None); order is recency, most recent last.
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        # One lock for the dict: OrderedDict's move_to_end/popitem are not atomic together.
        self._lock = threading.Lock()
        self._counters.update(evictions=0, expirations=0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def ping(self) -> float:
        """Always up; returns the (tiny) time to take the lock."""
        start = time.perf_counter()
        with self._lock:
            pass
        return time.perf_counter() - start

    def close(self) -> None:
        with self._lock:
            self._entries.clear()

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, expires_at = entry
            if expires_at is not None and self._clock() >= expires_at:
                del self._entries[key]
                expired = True
            else:
                self._entries.move_to_end(key)
                expired = False
        if expired:
            self._count("expirations")
            return None
        return value

    def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        expires_at = None if ttl_s is None else self._clock() + ttl_s
        evicted = 0
        with self._lock:
            self._entries[key] = (value, expires_at)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                evicted += 1
        if evicted:
            self._count("evictions", evicted)

    def _delete(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
